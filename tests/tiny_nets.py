"""Tiny networks with the project's network API, seeded label sets and a short training loop, for fast core tests (not a test module)."""

from __future__ import annotations

from typing import Any

import numpy as np
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


class CountingNet(TinyNet):
    """TinyNet that counts its feature passes (the virtual step's cost is M extra ones)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.passes = 0

    def features(self, image, report_embedding=None):
        self.passes += 1
        return super().features(image, report_embedding)


def report_like_sets(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two findings, four sets like two report labelers × uncertain → 0/1: the labelers miss
    positives (sensitivity 0.8 / 0.6) far more often than they invent them (false-positive rate 0.02)."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, 2)) < 0.3).astype(np.float32)

    def labeler(sens: float) -> np.ndarray:
        return np.where(truth == 1, rng.random(truth.shape) < sens, rng.random(truth.shape) < 0.02).astype(np.float32)

    a, b = labeler(0.8), labeler(0.6)
    # u0/u1 pairs: an uncertain mention (10 % of positives) becomes 0 in u0 and 1 in u1.
    unsure_a, unsure_b = (rng.random(truth.shape) < 0.1) & (truth == 1), (rng.random(truth.shape) < 0.1) & (truth == 1)
    sets = np.stack([np.where(unsure_a, 0, a), np.where(unsure_a, 1, a), np.where(unsure_b, 0, b), np.where(unsure_b, 1, b)], 1)
    return sets.astype(np.float32), truth


def train_steps(strategy: Any, net: TinyNet, image: torch.Tensor, sets: torch.Tensor, anchor: torch.Tensor):
    """300 Adam steps on random batches of 64; returns the strategy's output on every sample."""
    opt = torch.optim.Adam(strategy.param_groups(net, 1e-2))
    for _ in range(300):
        idx = torch.randperm(len(image))[:64]
        features = net.features(image[idx])
        out = strategy({"image": image[idx], "labels": sets[idx], "target": anchor[idx]}, net.head(features), features, net)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    features = net.features(image)
    return strategy({"image": image, "labels": sets, "target": anchor}, net.head(features), features, net)
