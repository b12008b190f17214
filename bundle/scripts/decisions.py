"""Turning probabilities into what a reader acts on: a local recalibration and a 0/1 call per finding.

Both are fitted on a hospital's own hand labels (``l2v-evaluate --recalibrate ... --thresholds ...``)
and saved inside the bundle as ``models/calibration.json`` and ``models/thresholds.json``. At
inference, ``inference.json``'s post-processing applies them when the files are there:

* ``CalibrateProbabilitiesd`` maps each finding's probability through the saved map (Platt,
  temperature or isotonic) before anything is written, so ``predictions.csv`` and MONAI Deploy's
  ``findings.json`` carry calibrated probabilities;
* ``ThresholdCallsd`` adds ``calls`` (1 where probability ≥ the finding's threshold), which
  ``predictions.csv`` gets after the probabilities and ``findings.json`` beside each probability.

Without the files inference is unchanged. A file saved for other findings than the network's is an
error naming the file. Needs only numpy and the standard library (the bundle stands alone).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

THRESHOLDS_FORMAT = "l2v-thresholds/1"
CALIBRATION_FORMAT = "l2v-calibration/1"
CALIBRATION_METHODS = ("platt", "temperature", "isotonic")
_EPS = 1e-7


class DecisionFileError(ValueError):
    """A thresholds or calibration file that does not fit this network; names the file."""


def _read(path: str | Path, expected_format: str) -> dict[str, Any]:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DecisionFileError(f"{path}: cannot be read as JSON ({error})") from error
    if not isinstance(document, dict) or document.get("format") != expected_format:
        raise DecisionFileError(f"{path}: not a {expected_format} file (its 'format' is {document.get('format')!r})"
                                if isinstance(document, dict) else f"{path}: not a JSON object")
    return document


def _check_findings(path: str | Path, document: Mapping[str, Any], findings: Sequence[str] | None) -> list[str]:
    saved = [str(f) for f in document.get("findings", [])]
    if findings is not None and saved != [str(f) for f in findings]:
        raise DecisionFileError(
            f"{path}: saved for findings {saved}, but this model predicts {list(findings)}; "
            "choose them again on this model's predictions"
        )
    return saved


def load_thresholds(path: str | Path, findings: Sequence[str] | None = None) -> dict[str, Any]:
    """A saved thresholds file; ``findings`` (the model's outputs, in order) must match its findings.

    ``document["thresholds"]`` maps each finding to its threshold or ``None`` (not estimable: no call).
    """
    document = _read(path, THRESHOLDS_FORMAT)
    saved = _check_findings(path, document, findings)
    thresholds = document.get("thresholds")
    if not isinstance(thresholds, dict) or sorted(thresholds) != sorted(saved):
        raise DecisionFileError(f"{path}: 'thresholds' must name every finding of 'findings' once")
    for finding, value in thresholds.items():
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise DecisionFileError(f"{path}: threshold of {finding!r} is {value!r}, not a number or null")
    return document


def save_thresholds(path: str | Path, findings: Sequence[str], thresholds: Mapping[str, float | None], **details: Any) -> Path:
    """Write a thresholds file (``details``: the rule, target, what chose them, ...)."""
    document = {"format": THRESHOLDS_FORMAT, "findings": list(findings),
                "thresholds": {f: thresholds.get(f) for f in findings}, **details}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def threshold_vector(document: Mapping[str, Any]) -> np.ndarray:
    """The thresholds in the file's finding order; NaN where a finding has none (it never gets a call of 1)."""
    return np.array([math.nan if document["thresholds"][f] is None else float(document["thresholds"][f])
                     for f in document["findings"]], dtype=np.float64)


def calls(probabilities: Any, thresholds: np.ndarray) -> np.ndarray:
    """0/1 calls: 1 where ``probability >= threshold``; a finding without a threshold gets -1 ("no call")."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out = (p >= thresholds).astype(np.int64)
    return np.where(np.isnan(thresholds), -1, out)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply_map(method: str, parameters: Mapping[str, Any] | None, p: np.ndarray) -> np.ndarray:
    """One finding's calibration map applied to probabilities ``p`` (``None`` parameters: unchanged)."""
    if parameters is None:
        return p
    if method == "platt":
        return 1.0 / (1.0 + np.exp(-(parameters["a"] * logit(p) + parameters["b"])))
    if method == "temperature":
        return 1.0 / (1.0 + np.exp(-logit(p) / parameters["temperature"]))
    if method == "isotonic":
        # Isotonic regression predicts by linear interpolation between its fitted steps, clipped at the ends.
        return np.interp(p, np.asarray(parameters["x"], dtype=np.float64), np.asarray(parameters["y"], dtype=np.float64))
    raise ValueError(f"unknown calibration method {method!r} (known: {CALIBRATION_METHODS})")


def load_calibration(path: str | Path, findings: Sequence[str] | None = None) -> dict[str, Any]:
    """A saved calibration file; ``findings`` must match its findings."""
    document = _read(path, CALIBRATION_FORMAT)
    saved = _check_findings(path, document, findings)
    if document.get("method") not in CALIBRATION_METHODS:
        raise DecisionFileError(f"{path}: method {document.get('method')!r} is not one of {CALIBRATION_METHODS}")
    maps = document.get("maps")
    if not isinstance(maps, dict) or sorted(maps) != sorted(saved):
        raise DecisionFileError(f"{path}: 'maps' must name every finding of 'findings' once")
    return document


def save_calibration(path: str | Path, findings: Sequence[str], method: str, maps: Mapping[str, Any], **details: Any) -> Path:
    """Write a calibration file: one map's parameters per finding (``None``: left as it is)."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r} (known: {CALIBRATION_METHODS})")
    document = {"format": CALIBRATION_FORMAT, "method": method, "findings": list(findings),
                "maps": {f: maps.get(f) for f in findings}, **details}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


def calibrate(document: Mapping[str, Any], probabilities: Any) -> np.ndarray:
    """Apply a calibration document to ``... × N`` probabilities (last axis: the file's findings)."""
    p = np.array(probabilities, dtype=np.float64)
    for k, finding in enumerate(document["findings"]):
        p[..., k] = apply_map(document["method"], document["maps"][finding], p[..., k])
    return p


def _optional(path: str | Path | None, what: str) -> Path | None:
    """The file to use, or ``None``: no path, or the default path with nothing saved there yet."""
    if path in (None, ""):
        return None
    path = Path(path)
    if not path.is_file():
        logger.info("no %s at %s: probabilities are written as the network gives them", what, path)
        return None
    return path


class CalibrateProbabilitiesd:
    """Post-processing: map ``pred`` (probabilities, last axis the findings) through a saved calibration, if any."""

    def __init__(self, keys: str = "pred", calibration_file: str | Path | None = None,
                 findings: Sequence[str] | None = None) -> None:
        self.key = keys
        path = _optional(calibration_file, "calibration file")
        self.document = load_calibration(path, findings) if path else None
        if self.document:
            logger.info("calibrating probabilities with %s (%s)", path, self.document["method"])

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(data)
        if self.document is None:
            return out
        pred = out[self.key]
        calibrated = calibrate(self.document, _to_numpy(pred))
        out[self.key] = _like(pred, calibrated)
        return out


class ThresholdCallsd:
    """Post-processing: add ``calls`` (0/1 per finding, -1 without a threshold) from a saved thresholds file, if any."""

    def __init__(self, keys: str = "pred", thresholds_file: str | Path | None = None,
                 findings: Sequence[str] | None = None, calls_key: str = "calls") -> None:
        self.key, self.calls_key = keys, calls_key
        path = _optional(thresholds_file, "thresholds file")
        self.thresholds = threshold_vector(load_thresholds(path, findings)) if path else None
        if path:
            logger.info("0/1 calls from the thresholds in %s", path)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(data)
        if self.thresholds is not None:
            pred = out[self.key]
            out[self.calls_key] = _like(pred, calls(_to_numpy(pred), self.thresholds).astype(np.float32))
        return out


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _like(reference: Any, values: np.ndarray) -> Any:
    """``values`` in ``reference``'s array type: a (Meta)Tensor stays one, on its device, with its metadata."""
    if hasattr(reference, "detach"):
        import torch

        out = reference.detach().clone()
        if not out.is_floating_point():
            out = out.float()
        out.copy_(torch.as_tensor(values, dtype=out.dtype, device=out.device))
        return out
    return values


__all__ = [
    "THRESHOLDS_FORMAT",
    "CALIBRATION_FORMAT",
    "CALIBRATION_METHODS",
    "DecisionFileError",
    "load_thresholds",
    "save_thresholds",
    "threshold_vector",
    "calls",
    "apply_map",
    "load_calibration",
    "save_calibration",
    "calibrate",
    "CalibrateProbabilitiesd",
    "ThresholdCallsd",
]
