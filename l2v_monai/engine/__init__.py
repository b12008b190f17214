"""The training engine: the learning-to-vote trainer, checkpoints and resume, progress logging, and a
trained run's outputs over a split."""
