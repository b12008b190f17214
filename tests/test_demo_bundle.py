"""``make demo-bundle``: the bundle's whole workflow runs from a copy and every output lands where it says."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_bundle_runs_the_workflow_and_reports_every_output(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_bundle.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    bundle = out / "bundle"
    auc = list(csv.reader(open(bundle / "eval" / "test" / "auc.csv")))
    assert auc[0][0] == "finding" and auc[-1][0] == "Average" and len(auc) == 16
    assert any(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in (bundle / "eval" / "test" / "roc").glob("*.png"))
    rows = list(csv.reader(open(bundle / "eval" / "predictions.csv")))
    # Four test JPEGs and one DICOM, 14 probabilities each.
    assert len(rows) == 5 and all(len(r) == 15 for r in rows)
    assert any(r[0].endswith("synthetic.dcm") for r in rows)
    assert (bundle / "models" / "model.ts").stat().st_size > 1_000_000
    for line in ("checkpoints", "evaluation", "predictions", "TorchScript", "mean nothing"):
        assert line in proc.stdout
