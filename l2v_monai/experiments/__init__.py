"""What supports our evidence, not users' training.

The simulated annotators and proof-of-concept data (the paper's CIFAR-10 experiment, run here on
Fashion-MNIST or digits), the proof of concept's results table, and the two label-set testbeds
(synthetic multi-label images; real OpenI report text). The reproduction scripts in ``scripts/``
and ``bundle/configs/cifar10.json`` import them; the chest X-ray bundle never does.
"""
