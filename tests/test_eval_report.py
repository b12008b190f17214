"""``l2v-evaluate``'s report and ``l2v-compare`` on a small generated hand-labelled set (no images, no network)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from l2v_monai.bundle_scripts.decisions import load_calibration, load_thresholds
from l2v_monai.cli import compare as compare_cli
from l2v_monai.cli import evaluate as evaluate_cli
from l2v_monai.evaluation.hand_set import read_predictions

FINDINGS = ["Atelectasis", "Edema", "Fracture"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def hand_set(folder: Path, n: int = 120, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A datalist with ``n`` hand-labelled test items (3 per patient, views and sexes) and a tuning split."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 3)) < [0.4, 0.3, 0.0]).astype(float)  # Fracture: no positives at all
    document = {"findings": FINDINGS, "label_sets": [], "training": [], "validation": []}
    document["test"] = [{"image": f"img/{k}.png", "subject_id": str(k // 3), "view": "PA" if k % 4 else "AP",
                         "sex": "F" if k % 2 else "M", "label": labels[k].tolist()} for k in range(n)]
    document["tune"] = [{"image": f"img/t{k}.png", "subject_id": f"t{k}", "label": [float(k % 2), float(k % 3 == 0), 0.0]}
                        for k in range(40)]
    path = folder / "hand.json"
    path.write_text(json.dumps(document))
    return path, labels


def write_predictions(path: Path, folder: Path, labels: np.ndarray, noise: float, seed: int, images: list[str] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    probs = 1 / (1 + np.exp(-(3 * (labels - 0.5) + rng.normal(0, noise, labels.shape))))
    images = images or [f"img/{k}.png" for k in range(len(labels))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        for image, row in zip(images, probs):
            writer.writerow([str(folder / image), *[f"{v:.6f}" for v in row]])
    return path


def test_evaluate_writes_the_report_and_saves_thresholds_and_calibration(tmp_path: Path, capsys) -> None:
    datalist, labels = hand_set(tmp_path)
    predictions = write_predictions(tmp_path / "run" / "eval" / "predictions.csv", tmp_path, labels, 1.0, 1)
    out = tmp_path / "report"
    code = evaluate_cli.main(["--predictions", str(predictions), "--datalist", str(datalist), "--out", str(out),
                              "--resamples", "200", "--operating-point", "sensitivity=0.9", "--recalibrate", "platt",
                              "--save-thresholds", str(tmp_path / "models" / "thresholds.json"),
                              "--save-calibration", str(tmp_path / "models" / "calibration.json")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "'Fracture' not estimable: only negatives" in captured.err  # warned, named, not an error
    text = (out / "report.md").read_text()
    for section in ("## Discrimination", "## Calibration", "## Operating points", "## Subgroups"):
        assert section in text
    assert "200 resamples of whole patients (40 patients, id `subject_id`)" in text
    assert "| Fracture | 0 / 120 | not estimable: only negatives |" in text
    assert "nan" not in text.lower() and "[all findings](roc/roc_all.png)" in text
    report = json.loads((out / "report.json").read_text())
    edema = report["discrimination"]["per_finding"]["Edema"]
    assert edema["auc_low"] < edema["auc"] < edema["auc_high"] and 0 < edema["ap"] <= 1
    assert set(report["subgroups"]) == {"view", "sex"} and report["subgroups"]["view"]["AP"]["n_items"] == 30
    thresholds = load_thresholds(tmp_path / "models" / "thresholds.json", FINDINGS)
    assert thresholds["rule"] == "sensitivity" and thresholds["thresholds"]["Fracture"] is None
    assert 0 < thresholds["thresholds"]["Edema"] < 1
    assert load_calibration(tmp_path / "models" / "calibration.json", FINDINGS)["maps"]["Edema"]["a"] > 0
    pngs = list((out / "reliability").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)


def test_evaluate_with_a_tuning_split(tmp_path: Path) -> None:
    datalist, labels = hand_set(tmp_path)
    tune_labels = np.array([[float(k % 2), float(k % 3 == 0), 0.0] for k in range(40)])
    predictions = write_predictions(tmp_path / "p.csv", tmp_path, np.vstack([labels, tune_labels]), 1.0, 2,
                                    [f"img/{k}.png" for k in range(120)] + [f"img/t{k}.png" for k in range(40)])
    out = tmp_path / "report"
    assert evaluate_cli.main(["--predictions", str(predictions), "--datalist", str(datalist), "--out", str(out),
                              "--resamples", "100", "--operating-point", "youden", "--tuning-split", "tune"]) == 0
    points = json.loads((out / "report.json").read_text())["operating_points"]
    assert points["scheme"] == {"kind": "tuning split", "n_tuning": 40, "n_measured": 120}


def test_bad_inputs_name_the_file_and_items(tmp_path: Path, capsys) -> None:
    datalist, labels = hand_set(tmp_path)
    good = write_predictions(tmp_path / "a.csv", tmp_path, labels, 1.0, 1)
    base = ["--datalist", str(datalist), "--out", str(tmp_path / "o"), "--resamples", "50"]
    # Predictions for other items than the datalist's.
    other = write_predictions(tmp_path / "b.csv", tmp_path, labels, 1.0, 1, [f"img/{k}.png" for k in range(1, 121)])
    assert evaluate_cli.main(["--predictions", str(other), *base]) == 2
    err = capsys.readouterr().err
    assert "b.csv does not match" in err and "1 labelled images without a prediction" in err and "img/0.png" in err
    assert "1 predictions for images not in the datalist" in err and "img/120.png" in err
    # A finding that must be scored but has no positives.
    assert evaluate_cli.main(["--predictions", str(good), *base, "--require", "Fracture"]) == 2
    assert "hand.json [test]: 'Fracture' has 0 positive(s) and 120 negative(s)" in capsys.readouterr().err
    # Metadata with an unexpected value.
    document = json.loads(datalist.read_text())
    document["test"][5]["sex"] = "female"
    datalist.write_text(json.dumps(document))
    assert evaluate_cli.main(["--predictions", str(good), *base]) == 2
    assert "hand.json [test]: item 5 (" in (err := capsys.readouterr().err) and "sex = 'female'" in err


def test_compare_two_runs_writes_forest_plot_and_finds_the_better_one(tmp_path: Path, capsys) -> None:
    datalist, labels = hand_set(tmp_path, n=300)
    weak = write_predictions(tmp_path / "weak" / "eval" / "predictions.csv", tmp_path, labels, 3.0, 3)
    write_predictions(tmp_path / "strong" / "eval" / "predictions.csv", tmp_path, labels, 0.5, 4)
    out = tmp_path / "cmp"
    code = compare_cli.main(["--datalist", str(datalist), str(weak), str(tmp_path / "strong"), "--out", str(out),
                             "--resamples", "300"])
    assert code == 0, capsys.readouterr().err
    assert "strong vs weak: macro ΔAUC +" in capsys.readouterr().out
    result = json.loads((out / "compare.json").read_text())
    pair = result["pairs"][0]
    assert pair["run_a"] == "weak" and pair["run_b"] == "strong"
    assert pair["per_finding"]["Edema"]["p_holm"] < 0.05 and pair["macro"]["low"] > 0
    assert pair["per_finding"]["Fracture"]["estimable"] is False
    assert (out / "forest_strong_vs_weak.png").read_bytes()[:8] == PNG_MAGIC
    assert "DeLong paired test" in (out / "compare.md").read_text()


def test_compare_refuses_a_run_missing_items(tmp_path: Path, capsys) -> None:
    datalist, labels = hand_set(tmp_path)
    a = write_predictions(tmp_path / "a.csv", tmp_path, labels, 1.0, 1)
    b = write_predictions(tmp_path / "b.csv", tmp_path, labels[:-2], 1.0, 2, [f"img/{k}.png" for k in range(118)])
    assert compare_cli.main(["--datalist", str(datalist), str(a), str(b), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "b.csv does not match" in err and "2 labelled images without a prediction" in err
    assert "img/118.png" in err and "img/119.png" in err


def test_predictions_with_calls_are_read_by_their_probabilities(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(f"{tmp_path / 'x.png'},0.1,0.7,0.2,0,1,0\n")
    assert read_predictions(path, 3)[str((tmp_path / "x.png").resolve())].tolist() == [0.1, 0.7, 0.2]
    path.write_text(f"{tmp_path / 'x.png'},0.1,0.7\n")
    with pytest.raises(ValueError, match="p.csv, line 1: expected an image path and 3 probabilities"):
        read_predictions(path, 3)


def test_inference_names_datalist_images_by_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """predictions.csv is matched to the datalist by path from any folder: inference writes absolute paths."""
    from l2v_monai.bundle_scripts.inputs import datalist_images

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hand.json").write_text(json.dumps({"test": [{"image": "img/0.png"}]}))
    (tmp_path / "bundle").mkdir()
    monkeypatch.chdir(tmp_path / "bundle")
    assert datalist_images("../data/hand.json") == [{"image": str(tmp_path / "data" / "img" / "0.png")}]
