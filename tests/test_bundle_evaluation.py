"""The hospital-side evaluation end to end: two tiny bundle runs (different label strategies), the evaluate
step with thresholds and a recalibration saved into one run's models/, inference writing calls beside the
probabilities, then ``l2v-compare`` of the two runs on the same hand-labelled items.

Reuses test_bundle's generated MIMIC-style tree and its command helpers; one epoch at 64 × 64.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_runs import CONFIGS, ROOT, SMALL, bundle, configs, output_root

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(mimic: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    """Two runs trained the same way except for ``label_strategy``."""
    out = {}
    for strategy in ("majority", "mean"):
        root = output_root(tmp_path_factory.mktemp(strategy))
        bundle("run", "training", "--config_file", str(CONFIGS / "train.json"), "--dataset_dir", str(mimic["root"]),
               "--bundle_root", str(root), "--label_strategy", strategy, *SMALL)
        out[strategy] = root
    return out


def test_evaluate_save_decisions_infer_with_calls_and_compare(mimic: dict, runs: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    hand = mimic["root"] / "hand_labelled.json"
    n_test = len(json.loads(hand.read_text())["test"])
    a, b = runs["majority"], runs["mean"]
    # The evaluate step: run a also chooses thresholds (Youden, cross-fitted) and fits a Platt recalibration.
    bundle("run", "--config_file", configs("train.json", "evaluate.json"), "--dataset_dir", str(mimic["root"]),
           "--bundle_root", str(a), "--eval_resamples", "200", "--operating_point", "youden", "--recalibrate", "platt", *SMALL)
    bundle("run", "--config_file", configs("train.json", "evaluate.json"), "--dataset_dir", str(mimic["root"]),
           "--bundle_root", str(b), "--eval_resamples", "200", *SMALL)
    text = (a / "eval" / "test" / "report.md").read_text()
    assert "## Discrimination" in text and "## Operating points" in text and "whole patients" in text
    assert "nan" not in text.lower()
    report = json.loads((a / "eval" / "test" / "report.json").read_text())
    assert report["calibration"]["method"] == "platt" and report["n_items"] == n_test
    assert "view" in report.get("subgroups", {})  # the hand-labelled items carry their view
    thresholds = json.loads((a / "models" / "thresholds.json").read_text())
    assert thresholds["rule"] == "youden" and len(thresholds["thresholds"]) == 14
    assert (a / "models" / "calibration.json").is_file()
    assert not (b / "models" / "thresholds.json").exists()  # nothing asked, nothing saved

    # Inference: run a writes 14 calibrated probabilities then 14 calls per image; run b only probabilities.
    for root in (a, b):
        bundle("run", "--config_file", str(CONFIGS / "inference.json"), "--datalist", str(hand),
               "--bundle_root", str(root), "--image_size", "64", "--num_workers", "0")
    rows_a = list(csv.reader(open(a / "eval" / "predictions.csv")))
    rows_b = list(csv.reader(open(b / "eval" / "predictions.csv")))
    assert len(rows_a) == len(rows_b) == n_test
    assert all(len(r) == 1 + 28 for r in rows_a) and all(len(r) == 1 + 14 for r in rows_b)
    for row in rows_a:
        probs, calls = [float(x) for x in row[1:15]], [float(x) for x in row[15:]]
        for finding, p, call in zip(thresholds["findings"], probs, calls):
            t = thresholds["thresholds"][finding]
            assert call == (-1.0 if t is None else float(p >= t - 1e-6)) or abs(p - t) < 1e-5

    # l2v-compare takes the run folders; the report names both and draws the forest plot.
    out = tmp_path / "compare"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), "--datalist", str(hand), str(a), str(b),
                           "--resamples", "200", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "macro ΔAUC" in proc.stdout
    result = json.loads((out / "compare.json").read_text())
    assert result["runs"] == [a.name, b.name] and result["bootstrap"]["unit"] == "patient"
    forests = list(out.glob("forest_*.png"))
    assert len(forests) == 1 and forests[0].read_bytes()[:8] == PNG_MAGIC
