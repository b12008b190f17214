"""A real-noise, image-regime testbed: real report-labeler label sets, MeSH truth, pictures drawn from the truth.

On the report testbed the network reads the very text the labelers read, so a labeler's error is a
function of the input. On images it is not: that is the regime the paper's claim is about. This
testbed keeps the label noise real and makes the input an image:

* **labels**: the project's report labelers' label sets on the OpenI reports (``S × M × N``);
* **truth**: the reports' MeSH tags (``S × N``, NaN = not tagged either way, left out of scoring);
* **input**: a seeded single-channel ``size × size`` radiograph-like picture *drawn from the truth
  alone* by :func:`render`: a chest-like background (two darker lung fields, a brighter
  mediastinum, smooth low-frequency variation and pixel noise); every finding present in the truth
  adds its own pattern (a blob with a finding-specific texture, at a finding-specific place in or
  near the lung fields) at a per-entry *strength*. "No Finding" has no pattern of its own: a normal
  picture is one with no pattern.

Two couplings decide the strength of a present finding (:func:`strengths`):

* ``"independent"``: uniform in ``[low, high]``, independent of the label sets given the truth, so
  the labelers' errors carry no information about the picture;
* ``"hedged"``: where the label sets disagree on that entry (a hedged mention, read 0 by one
  mapping and 1 by the other, or the two labelers disagreeing), the strength is scaled by
  ``faint`` (0.35 by default): hedged or disputed reports go with fainter findings.

Nothing here prints or stores report text. This is a testbed of our own design; it imitates no
public generator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["COUPLINGS", "finding_patterns", "make_image_regime", "render", "strengths"]

COUPLINGS = ("independent", "hedged")
#: Findings that get no pattern of their own (their evidence is the absence of the others).
PATTERNLESS = ("No Finding",)


def _chest_background(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``n`` radiograph-like backgrounds: lung fields darker than the mediastinum, smooth variation, pixel noise."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    lungs = np.zeros((size, size))
    for cx in (0.3, 0.7):
        lungs += np.exp(-(((xx - cx) / 0.17) ** 2 + ((yy - 0.52) / 0.3) ** 2) ** 2)
    base = 0.62 - 0.32 * np.clip(lungs, 0, 1)
    # Per-image exposure and a smooth gradient (patient size, positioning).
    exposure = rng.normal(0.0, 0.04, size=(n, 1, 1))
    tilt = rng.normal(0.0, 0.05, size=(n, 2))
    smooth = tilt[:, 0, None, None] * (xx - 0.5) + tilt[:, 1, None, None] * (yy - 0.5)
    noise = rng.normal(0.0, 0.05, size=(n, size, size))
    return (base[None] + exposure + smooth + noise).astype(np.float32)


def finding_patterns(num_findings: int, size: int, skip: tuple[int, ...] = ()) -> np.ndarray:
    """One fixed pattern per finding (zeros for ``skip``): a blob with its own texture at its own place.

    Places sit on a ring through both lung fields; textures alternate between stripes of a
    finding-specific orientation and frequency and a ring (cavity-like) profile, so that two
    findings differ in place and look.
    """
    rng = np.random.default_rng(2024)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = np.zeros((num_findings, size, size), dtype=np.float32)
    drawn = [j for j in range(num_findings) if j not in skip]
    for k, j in enumerate(drawn):
        angle = 2 * np.pi * k / max(len(drawn), 1)
        cx, cy = 0.5 + 0.28 * np.cos(angle), 0.52 + 0.26 * np.sin(angle)
        r2 = (xx - cx) ** 2 + (yy - cy) ** 2
        width = 0.09 + 0.03 * (k % 3)
        blob = np.exp(-r2 / (2 * width**2))
        if k % 2 == 0:
            theta = rng.uniform(0, np.pi)
            texture = 0.55 + 0.45 * np.cos(2 * np.pi * (3 + k % 4) * (np.cos(theta) * xx + np.sin(theta) * yy))
        else:
            texture = 0.3 + 0.7 * np.exp(-((np.sqrt(r2) - width) ** 2) / (2 * (0.35 * width) ** 2))
        out[j] = (blob * texture).astype(np.float32)
    return out


def strengths(
    truth: np.ndarray,
    label_sets: np.ndarray,
    coupling: str,
    rng: np.random.Generator,
    low: float = 0.25,
    high: float = 0.9,
    faint: float = 0.35,
) -> np.ndarray:
    """Per-entry pattern strength ``S × N``: 0 where the finding is absent (or untagged), else drawn by ``coupling``."""
    if coupling not in COUPLINGS:
        raise ValueError(f"unknown coupling {coupling!r}; choose one of {COUPLINGS}")
    present = np.nan_to_num(truth) == 1
    s = np.where(present, rng.uniform(low, high, size=truth.shape), 0.0)
    if coupling == "hedged":
        values = np.nan_to_num(label_sets, nan=-1.0)
        known = ~np.isnan(label_sets)
        some_pos = ((values == 1) & known).any(axis=1)
        some_neg = ((values == 0) & known).any(axis=1)
        s = np.where(some_pos & some_neg, faint * s, s)
    return s.astype(np.float32)


def render(strength: np.ndarray, patterns: np.ndarray, seed: int, size: int) -> np.ndarray:
    """Pictures ``S × 1 × size × size`` in [0, 1]: background plus each finding's pattern at its strength."""
    rng = np.random.default_rng(seed)
    images = _chest_background(rng, len(strength), size) + np.einsum("sn,nhw->shw", strength, patterns)
    return np.clip(images, 0.0, 1.0)[:, None].astype(np.float32)


def make_image_regime(
    label_sets: np.ndarray,
    truth: np.ndarray,
    findings: list[str],
    coupling: str,
    seed: int = 0,
    size: int = 24,
    contrast: float = 1.0,
) -> dict[str, Any]:
    """Images for every report (seeded by ``seed``) from ``truth`` under ``coupling``, with the label sets unchanged.

    ``contrast`` scales every pattern (lower: harder pictures, where label noise costs more).
    Returns ``images`` (``S × 1 × size × size`` float32), ``strength`` (``S × N``) and ``patterns``.
    The label sets and the truth are the caller's (e.g. :func:`l2v_monai.labelers.openi_corpus.load_openi_corpus`).
    """
    label_sets = np.asarray(label_sets, dtype=np.float32)
    truth = np.asarray(truth, dtype=np.float32)
    if label_sets.ndim != 3 or label_sets.shape[0] != truth.shape[0] or label_sets.shape[2] != truth.shape[1]:
        raise ValueError(f"label sets {label_sets.shape} and truth {truth.shape} must be S × M × N and S × N")
    skip = tuple(j for j, f in enumerate(findings) if f in PATTERNLESS)
    patterns = finding_patterns(truth.shape[1], size, skip)
    strength_rng, image_seed = np.random.default_rng([seed, 1]), int(np.random.default_rng([seed, 2]).integers(2**31))
    strength = strengths(truth, label_sets, coupling, strength_rng)
    return {"images": render(contrast * strength, patterns, image_seed, size), "strength": strength, "patterns": patterns}
