"""Saved thresholds and calibration at inference: inference.json's post-processing, predictions.csv rows, findings.json."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from l2v_monai.apps.monai_deploy import default_thresholds_file, findings_with_calls
from l2v_monai.bundle_scripts.decisions import DecisionFileError, save_calibration, save_thresholds
from l2v_monai.bundle_scripts.postprocessing import readable_preds

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = json.loads((ROOT / "bundle" / "configs" / "inference.json").read_text())["findings"]


def postprocessing(bundle_root: Path):
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundle" / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_root)
    return parser.get_parsed_content("postprocessing")


@pytest.fixture()
def bundle_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A bundle root holding ``scripts/``; the configs import ``scripts.*`` from it, as a bundle run does."""
    shutil.copytree(ROOT / "bundle" / "scripts", tmp_path / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "models").mkdir()
    # pytest puts the repository root on sys.path, whose scripts/ folder would shadow the bundle's.
    saved = {name: module for name, module in sys.modules.items() if name == "scripts" or name.startswith("scripts.")}
    for name in saved:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n == "scripts" or n.startswith("scripts.")]:
        del sys.modules[name]


def test_without_saved_files_inference_postprocessing_is_the_sigmoid_alone(bundle_root: Path) -> None:
    logits = MetaTensor(torch.linspace(-3, 3, 14))
    out = postprocessing(bundle_root)({"pred": logits})
    assert "calls" not in out
    torch.testing.assert_close(out["pred"].as_tensor(), torch.sigmoid(logits.as_tensor()))


def test_saved_calibration_and_thresholds_give_calibrated_probabilities_and_calls(bundle_root: Path) -> None:
    # Temperature 2 halves each logit; thresholds 0.5 everywhere except Fracture (none: -1).
    save_calibration(bundle_root / "models" / "calibration.json", FINDINGS, "temperature",
                     {f: {"temperature": 2.0} for f in FINDINGS})
    save_thresholds(bundle_root / "models" / "thresholds.json", FINDINGS,
                    {f: (None if f == "Fracture" else 0.5) for f in FINDINGS}, rule="youden")
    logits = MetaTensor(torch.linspace(-3, 3, 14), meta={"filename_or_obj": "x.png"})
    out = postprocessing(bundle_root)({"pred": logits})
    torch.testing.assert_close(out["pred"].as_tensor().float(), torch.sigmoid(logits.as_tensor() / 2), atol=1e-5, rtol=1e-5)
    expected = (torch.sigmoid(logits.as_tensor() / 2) >= 0.5).float()
    expected[FINDINGS.index("Fracture")] = -1
    assert out["calls"].tolist() == expected.tolist()
    # predictions.csv rows: the 14 probabilities, then the 14 calls.
    (row,) = readable_preds([{"pred": out["pred"], "calls": out["calls"], "image": logits}])
    assert row.shape == (28,) and row[14:].tolist() == expected.tolist()


def test_thresholds_for_other_findings_stop_inference_naming_the_file(bundle_root: Path) -> None:
    save_thresholds(bundle_root / "models" / "thresholds.json", FINDINGS[:3], {f: 0.5 for f in FINDINGS[:3]})
    with pytest.raises(RuntimeError, match="ThresholdCallsd") as raised:
        postprocessing(bundle_root)
    # MONAI wraps it; the cause (shown last by the bundle's show_cause_last) names the file and both finding lists.
    assert "thresholds.json: saved for findings ['Atelectasis', 'Cardiomegaly', 'Consolidation']" in str(raised.value.__cause__)


def test_deploy_findings_json_carries_a_call_beside_each_probability(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    assert default_thresholds_file(tmp_path) is None
    path = save_thresholds(tmp_path / "models" / "thresholds.json", ["A", "B"], {"A": 0.3, "B": None})
    assert default_thresholds_file(tmp_path) == path
    assert findings_with_calls({"A": 0.4, "B": 0.9}, path) == {
        "A": {"probability": 0.4, "call": 1, "threshold": 0.3},
        "B": {"probability": 0.9, "call": -1, "threshold": None},
    }
    with pytest.raises(DecisionFileError, match="but this model predicts"):
        findings_with_calls({"B": 0.4, "A": 0.9}, path)
