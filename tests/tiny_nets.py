"""A tiny network with the project's network API, for fast core tests (not a test module)."""

from __future__ import annotations

import torch
import torch.nn as nn


class TinyNet(nn.Module):
    """conv → BN → ReLU → GAP → linear head: small, but with BatchNorm buffers like the real networks."""

    def __init__(self, in_channels: int = 1, num_outputs: int = 3, width: int = 6, report_dim: int | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.report = nn.Linear(report_dim, 4) if report_dim else None
        self.num_features = width + (4 if report_dim else 0)
        self.num_outputs = num_outputs
        self.head = nn.Linear(self.num_features, num_outputs)

    def features(self, image: torch.Tensor, report_embedding: torch.Tensor | None = None) -> torch.Tensor:
        f = self.body(image).mean(dim=(2, 3))
        if self.report is not None:
            f = torch.cat([f, torch.relu(self.report(report_embedding))], dim=1)
        return f

    def forward(self, image: torch.Tensor, report_embedding: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(image, report_embedding))
