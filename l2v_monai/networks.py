"""Classification networks with one API: ``features`` → ``head`` → logits.

Every network here is an ``nn.Module`` with

* ``features(image, report_embedding=None) -> B × num_features``: the global-average-pooled image
  feature ``F``, concatenated with the report branch output when the network has one (the paper's
  ``F_m`` for the vote is this concatenated feature, §3.3);
* ``head``: an ``nn.Linear`` from ``num_features`` to ``num_outputs`` logits (the trainer taps the
  features at its input with a forward hook, so it must stay a module);
* ``forward(image, report_embedding=None) = head(features(...))``.

``features`` is a pure function of parameters, buffers and inputs, so the learning-to-vote meta step
can call it through ``torch.func.functional_call`` with stepped weights, in train mode with BatchNorm.

The networks script with ``torch.jit.script`` (what MONAI's ``ckpt_export`` uses by default):
``report_embedding`` is typed ``Optional[torch.Tensor]`` for that reason.

``ResNet50Classifier`` (and its local ImageNet weight loader) lives in the bundle's own
``scripts/networks.py``, so that inference needs only the bundle folder; it is re-exported here.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from l2v_monai.bundle_scripts import networks as _bundle_networks
from l2v_monai.bundle_scripts.networks import (  # noqa: F401  re-exported: the bundle's network
    IMAGENET,
    RESNET50_FEATURES,
    ResNet50Classifier,
    adapt_first_conv,
    find_cached_imagenet_resnet50,
    load_resnet50_trunk_weights,
    report_branch,
)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Four 3×3 conv + BN + ReLU layers, two 2×2 max-pools, global average pooling, one linear head.

    For the CPU proof of concept: 8×8 digits, 28×28 Fashion-MNIST, 32×32 CIFAR-10. The pools use
    ``ceil_mode`` so odd sizes (7×7 after one pool of 14) never shrink to zero; 8×8 ends at 2×2.
    ``num_features`` is ``2 * width``. There is no report branch.
    """

    def __init__(self, num_outputs: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        if num_outputs < 1 or in_channels < 1 or width < 1:
            raise ValueError(f"num_outputs, in_channels and width must be positive, got {num_outputs}, {in_channels}, {width}")
        self.encoder = nn.Sequential(
            _conv_block(in_channels, width),
            _conv_block(width, width),
            nn.MaxPool2d(2, ceil_mode=True),
            _conv_block(width, 2 * width),
            _conv_block(2 * width, 2 * width),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.in_channels = in_channels
        self.num_features = 2 * width
        self.num_outputs = num_outputs
        self.head = nn.Linear(self.num_features, num_outputs)

    def features(self, image: torch.Tensor, report_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``B × C × H × W`` → ``B × 2·width``; a report embedding is an error (no report branch)."""
        if report_embedding is not None:
            raise ValueError("SmallCNN has no report branch but was given a report_embedding")
        return torch.flatten(self.pool(self.encoder(image)), 1)

    def forward(self, image: torch.Tensor, report_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``B × num_outputs``."""
        return self.head(self.features(image, report_embedding))


__all__ = ["SmallCNN", *_bundle_networks.__all__]
