"""What the chest X-ray bundle's inference needs beyond MONAI: the network, the reader, post-processing.

This folder travels with the bundle: MONAI puts the bundle root on ``sys.path``, so the configs
name these as ``scripts.<module>.<name>``. Inside the folder, imports are relative, so that the
same files also install as ``l2v_monai.bundle_scripts`` for training and for the library's tests.
It needs only ``monai``, ``torch``, ``torchvision``, ``pydicom`` and ``pillow``.
"""
