"""NaN-safe per-finding AUC, the MONAI metric/handler, tables and ROC plots."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine
from monai.handlers import from_engine
from sklearn.metrics import roc_auc_score

from l2v_monai.evaluation import (
    AVERAGE_ROW,
    MacroAUC,
    MacroAUCHandler,
    auc_table,
    evaluate_predictions,
    format_markdown_table,
    label_set_auc,
    per_finding_auc,
    plot_roc_curves,
    safe_file_stem,
    write_auc_tables,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def random_case(seed: int = 0, rows: int = 40, findings: int = 3, missing: float = 0.2):
    """Seeded hand labels with NaN holes and scores correlated with them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=(rows, findings)).astype(float)
    score = y + rng.normal(0.0, 0.8, size=y.shape)
    y[rng.random(y.shape) < missing] = np.nan
    return y, score


# ----------------------------------------------------------------------------------------------
# per_finding_auc
# ----------------------------------------------------------------------------------------------
def test_known_aucs_perfect_inverted_and_by_hand():
    y = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=float)
    score = np.array(
        [
            [0.1, 0.9, 0.1, 0.5],
            [0.2, 0.8, 0.3, 0.5],
            [0.8, 0.2, 0.35, 0.2],
            [0.9, 0.1, 0.8, 0.9],
        ]
    )
    result = per_finding_auc(y, score, ["perfect", "inverted", "by_hand", "tie"])
    aucs = {f: v["auc"] for f, v in result["per_finding"].items()}
    assert aucs["perfect"] == 1.0
    assert aucs["inverted"] == 0.0
    # labels [0, 1, 0, 1], scores [0.1, 0.3, 0.35, 0.8]: only the pair (0.3 | 0.35) is mis-ranked -> 3/4.
    assert aucs["by_hand"] == pytest.approx(0.75)
    # labels [0, 1, 0, 1], scores [0.5, 0.5, 0.2, 0.9]: pairs (0.5|0.5)=1/2, (0.5|0.2)=1, (0.9|*)=2 -> 3.5/4.
    assert aucs["tie"] == pytest.approx(0.875)
    assert result["per_finding"]["tie"] | {"auc": 0} == {"auc": 0, "n": 4, "positives": 2, "negatives": 2, "skipped": None}
    assert result["macro_auc"] == pytest.approx((1.0 + 0.0 + 0.75 + 0.875) / 4)
    assert result["skipped"] == {}


def test_known_auc_three_of_four_pairs():
    # labels [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8]: 0.35 < 0.4 is the only mis-ranked pair -> 3/4.
    result = per_finding_auc([[0], [0], [1], [1]], [[0.1], [0.4], [0.35], [0.8]], ["Edema"])
    assert result["per_finding"]["Edema"]["auc"] == pytest.approx(0.75)


def test_nan_rows_give_the_auc_of_the_filtered_rows():
    y, score = random_case(seed=1, rows=60, findings=4, missing=0.3)
    result = per_finding_auc(y, score, list("abcd"))
    for col, finding in enumerate("abcd"):
        keep = ~np.isnan(y[:, col])
        expected = roc_auc_score(y[keep, col], score[keep, col])
        assert result["per_finding"][finding]["auc"] == pytest.approx(expected)
        assert result["per_finding"][finding]["n"] == int(keep.sum())
        assert result["per_finding"][finding]["positives"] == int((y[keep, col] == 1).sum())


def test_single_class_and_unlabelled_findings_are_skipped_not_raised():
    nan = math.nan
    y = np.array([[1, 0, nan, 0], [1, 0, nan, 1], [1, 0, nan, nan]], dtype=float)
    score = np.array([[0.2, 0.3, 0.1, 0.1], [0.7, 0.4, 0.2, 0.9], [0.1, 0.5, 0.3, 0.5]])
    result = per_finding_auc(y, score, ["pos", "neg", "none", "ok"])
    assert result["skipped"] == {"pos": "only positives", "neg": "only negatives", "none": "no labels"}
    for finding in ("pos", "neg", "none"):
        assert math.isnan(result["per_finding"][finding]["auc"])
    assert result["per_finding"]["none"]["n"] == 0
    # the macro is over the one finding with a defined AUC
    assert result["macro_auc"] == 1.0
    assert result["n_scored"] == 1


def test_macro_is_nan_when_every_finding_is_skipped():
    result = per_finding_auc([[1.0, math.nan]], [[0.3, 0.2]], ["a", "b"])
    assert math.isnan(result["macro_auc"]) and result["n_scored"] == 0


def test_torch_and_json_null_inputs_are_accepted():
    y = torch.tensor([[0.0], [1.0], [float("nan")]])
    from_torch = per_finding_auc(y, torch.tensor([[0.1], [0.9], [0.5]]), ["x"])
    from_json = per_finding_auc([[0], [1], [None]], [[0.1], [0.9], [0.5]], ["x"])
    assert from_torch["per_finding"]["x"]["auc"] == from_json["per_finding"]["x"]["auc"] == 1.0
    assert from_json["per_finding"]["x"]["n"] == 2


@pytest.mark.parametrize(
    ("y", "score", "message"),
    [
        ([[0, 1], [0.5, 0]], [[0.1, 0.2], [0.3, 0.4]], r"y_true\[row 1, 'a'\] = 0.5"),
        ([[0, -1], [1, 0]], [[0.1, 0.2], [0.3, 0.4]], r"y_true\[row 0, 'b'\] = -1"),
        ([[0, 1], [1, 0]], [[0.1, math.nan], [0.3, 0.4]], r"y_score\[row 0, 'b'\].*finite"),
        ([[0, 1], [1, 0]], [[0.1, 0.2]], r"shape"),
        ([[0, 1, 0]], [[0.1, 0.2, 0.3]], r"3 findings .* 2 finding names"),
        ([0, 1], [0.1, 0.2], r"B x N"),
    ],
)
def test_bad_input_raises_a_clear_error(y, score, message):
    with pytest.raises(ValueError, match=message):
        per_finding_auc(y, score, ["a", "b"])


def test_duplicate_finding_names_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        per_finding_auc([[0, 1]], [[0.1, 0.2]], ["Edema", "Edema"])


def test_bfloat16_scores_from_amp_are_accepted():
    y = torch.tensor([[0.0], [1.0], [0.0], [1.0]])
    score = torch.tensor([[0.1], [0.3], [0.35], [0.8]], dtype=torch.bfloat16)
    assert per_finding_auc(y, score, ["x"])["per_finding"]["x"]["auc"] == pytest.approx(0.75)


# ----------------------------------------------------------------------------------------------
# label_set_auc
# ----------------------------------------------------------------------------------------------
def test_label_set_auc_known_answers_and_missing_rows():
    nan = math.nan
    hand = np.array([[1], [1], [0], [0], [1], [nan]], dtype=float)
    # B x M x N with M = 3: a copy of the hand labels, their inverse, and a labeler that finds
    # one of two positives (TPR 1/2, FPR 0 -> AUC (1/2 + 1)/2 = 0.75) and misses a row.
    sets = np.array(
        [
            [[1], [0], [1]],
            [[1], [0], [0]],
            [[0], [1], [0]],
            [[0], [1], [0]],
            [[1], [0], [nan]],
            [[0], [1], [1]],
        ],
        dtype=float,
    )
    result = label_set_auc(sets, ["copy", "inverse", "half"], hand, findings=["Edema"])
    assert result["copy"]["per_finding"]["Edema"]["auc"] == 1.0
    assert result["inverse"]["per_finding"]["Edema"]["auc"] == 0.0
    assert result["half"]["per_finding"]["Edema"]["auc"] == pytest.approx(0.75)
    # rows missing in the hand labels (row 5) or in the label set (row 4) are left out
    assert result["copy"]["per_finding"]["Edema"]["n"] == 5
    assert result["half"]["per_finding"]["Edema"]["n"] == 4
    assert result["half"]["macro_auc"] == pytest.approx(0.75)


def test_label_set_auc_defaults_to_the_14_findings_and_checks_values():
    from l2v_monai.findings import CHEXPERT_FINDINGS

    rng = np.random.default_rng(3)
    hand = rng.integers(0, 2, size=(10, 14)).astype(float)
    sets = np.stack([hand, 1 - hand], axis=1)
    result = label_set_auc(sets, ["neg_u1", "neg_u0"], hand)
    assert list(result["neg_u1"]["per_finding"]) == list(CHEXPERT_FINDINGS)
    sets[2, 1, 5] = -1  # an unmapped "uncertain"
    with pytest.raises(ValueError, match=r"labels\['neg_u0'\]\[row 2, 'Fracture'\] = -1"):
        label_set_auc(sets, ["neg_u1", "neg_u0"], hand)
    with pytest.raises(ValueError, match="2 label sets but 1 label set names"):
        label_set_auc(sets, ["neg_u1"], hand)


# ----------------------------------------------------------------------------------------------
# MONAI metric and Ignite handler
# ----------------------------------------------------------------------------------------------
def test_macro_auc_metric_over_two_batches_equals_direct_computation():
    y, score = random_case(seed=4, rows=50, findings=3)
    y[:, 2] = np.where(np.isnan(y[:, 2]), np.nan, 1.0)  # one finding has only positives
    metric = MacroAUC(findings=["a", "b", "c"])
    metric(torch.as_tensor(score[:20]), torch.as_tensor(y[:20]))
    metric(torch.as_tensor(score[20:]), torch.as_tensor(y[20:]))
    direct = per_finding_auc(y, score, ["a", "b", "c"])
    assert metric.aggregate() == pytest.approx(direct["macro_auc"])
    assert metric.skipped == {"c": "only positives"}
    assert metric.per_finding["a"] == pytest.approx(direct["per_finding"]["a"]["auc"])
    metric.reset()
    with pytest.raises(ValueError, match="before any"):
        metric.aggregate()


def test_macro_auc_metric_accepts_decollated_lists_and_thresholds_soft_labels():
    y, score = random_case(seed=5, rows=12, findings=2, missing=0.0)
    soft = y * 0.75  # e.g. the mean of four label sets with three positive votes
    metric = MacroAUC()
    metric(list(torch.as_tensor(score)), list(torch.as_tensor(soft)))
    with pytest.raises(ValueError, match=r"MacroAUC labels y\[row \d+, '\d'\] = 0.75"):
        metric.aggregate()
    metric = MacroAUC(label_threshold=0.5)
    metric(list(torch.as_tensor(score)), list(torch.as_tensor(soft)))
    assert metric.aggregate() == pytest.approx(per_finding_auc(y, score, ["0", "1"])["macro_auc"])


def test_handler_on_an_ignite_engine_reports_the_direct_macro_auc(caplog):
    y, score = random_case(seed=6, rows=30, findings=3)
    y[:, 1] = np.nan  # a finding nobody labelled in validation
    batches = [
        {"pred": torch.as_tensor(score[i : i + 8]), "label": torch.as_tensor(y[i : i + 8])} for i in range(0, 30, 8)
    ]
    engine = Engine(lambda _engine, batch: batch)
    handler = MacroAUCHandler(findings=["Atelectasis", "Edema", "Fracture"], output_transform=from_engine(["pred", "label"]))
    handler.attach(engine, "val_macro_auc")
    with caplog.at_level(logging.INFO, logger="l2v_monai.evaluation"):
        engine.run(batches, max_epochs=2)
    expected = per_finding_auc(y, score, ["Atelectasis", "Edema", "Fracture"])["macro_auc"]
    assert engine.state.metrics["val_macro_auc"] == pytest.approx(expected)
    assert handler.skipped == {"Edema": "no labels"}
    skip_lines = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skip_lines) == 2  # once per epoch
    assert all(r.levelno == logging.INFO and "Edema" in r.getMessage() for r in skip_lines)


DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np, torch, torch.distributed as dist, torch.multiprocessing as mp

    def worker(rank, folder):
        dist.init_process_group("gloo", init_method="file://" + os.path.join(folder, "init"), rank=rank, world_size=2)
        from l2v_monai.evaluation import MacroAUC, per_finding_auc
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, size=(21, 3)).astype(float)
        score = y + rng.normal(0.0, 0.8, y.shape)
        y[rng.random(y.shape) < 0.3] = np.nan
        part = slice(0, 12) if rank == 0 else slice(12, 21)  # uneven shards: MONAI pads and trims
        metric = MacroAUC(findings=["a", "b", "c"])
        metric(torch.as_tensor(score[part]), torch.as_tensor(y[part]))
        gathered = metric.aggregate()
        direct = per_finding_auc(y, score, ["a", "b", "c"])["macro_auc"]
        np.save(os.path.join(folder, f"rank{rank}.npy"), np.array([gathered, direct]))
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(worker, args=(sys.argv[1],), nprocs=2)
    """
)


@pytest.mark.slow
def test_macro_auc_gathers_nan_labels_across_two_ddp_ranks(tmp_path: Path):
    script = tmp_path / "ddp_macro_auc.py"
    script.write_text(DDP_SCRIPT)
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, env=env, timeout=300)
    for rank in (0, 1):
        gathered, direct = np.load(tmp_path / f"rank{rank}.npy")
        assert gathered == pytest.approx(direct)


# ----------------------------------------------------------------------------------------------
# tables and files
# ----------------------------------------------------------------------------------------------
def test_auc_table_rows_columns_and_average():
    y, score = random_case(seed=7, rows=40, findings=3)
    model = per_finding_auc(y, score, ["a", "b", "c"])
    table = auc_table({"neg_u1": {"a": 0.9, "b": math.nan, "c": 0.7}, "Ours": model}, ["a", "b", "c"])
    assert list(table.columns) == ["neg_u1", "Ours"]
    assert list(table.index) == ["a", "b", "c", AVERAGE_ROW]
    assert table.loc[AVERAGE_ROW, "neg_u1"] == pytest.approx(0.8)
    assert table.loc[AVERAGE_ROW, "Ours"] == pytest.approx(model["macro_auc"])
    assert math.isnan(table.loc["b", "neg_u1"])
    with pytest.raises(ValueError, match=r"results\['x'\] has findings not in the table: \['z'\]"):
        auc_table({"x": {"z": 0.5}}, ["a"])


def test_written_tables_have_the_right_rows_and_columns(tmp_path: Path):
    table = auc_table({"R50": {"a": 0.75, "b": math.nan}, "Ours": {"a": 0.8125, "b": 0.5}}, ["a", "b"])
    paths = write_auc_tables(table, tmp_path, stem="auc")
    assert {p.name for p in paths.values()} == {"auc.md", "auc.csv", "auc.json"}

    md = paths["md"].read_text().splitlines()
    assert md[0] == "| finding | R50 | Ours |"
    assert len(md) == 2 + 3  # header, separator, a, b, Average
    assert md[2] == "| a | 0.750 | 0.812 |" or md[2] == "| a | 0.750 | 0.813 |"
    assert md[3] == "| b | - | 0.500 |"

    csv = pd.read_csv(paths["csv"], index_col="finding")
    assert list(csv.columns) == ["R50", "Ours"] and list(csv.index) == ["a", "b", AVERAGE_ROW]
    assert csv.loc["a", "Ours"] == pytest.approx(0.8125) and math.isnan(csv.loc["b", "R50"])

    data = json.loads(paths["json"].read_text())
    assert data["rows"] == ["a", "b", AVERAGE_ROW]
    assert data["columns"]["R50"] == {"a": 0.75, "b": None, AVERAGE_ROW: 0.75}


def test_markdown_escapes_pipes():
    table = pd.DataFrame({"a|b": [0.5]}, index=pd.Index(["x"], name="finding"))
    assert "a\\|b" in format_markdown_table(table)


# ----------------------------------------------------------------------------------------------
# ROC plots and the whole evaluation
# ----------------------------------------------------------------------------------------------
def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, f"{path} is suspiciously small ({len(data)} bytes)"


def test_plot_roc_curves_writes_one_png_per_scored_finding(tmp_path: Path):
    y, score = random_case(seed=8, rows=40, findings=3)
    y[:, 2] = np.where(np.isnan(y[:, 2]), np.nan, 0.0)  # only negatives: no PNG
    findings = ["Enlarged Cardiomediastinum", "Lung/Opacity", "Fracture"]
    paths = plot_roc_curves(y, score, findings, tmp_path)
    assert [p.name for p in paths] == ["roc_enlarged_cardiomediastinum.png", "roc_lung_opacity.png", "roc_all.png"]
    for path in paths:
        assert_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    assert plot_roc_curves(y, score, findings, tmp_path / "nogrid", grid=False)[-1].name == "roc_lung_opacity.png"


def test_safe_file_stem():
    assert safe_file_stem("Enlarged Cardiomediastinum") == "enlarged_cardiomediastinum"
    assert safe_file_stem("../Pleural Other") == "pleural_other"
    assert safe_file_stem("***") == "finding"


def test_evaluate_predictions_writes_everything(tmp_path: Path):
    from l2v_monai.findings import CHEXPERT_FINDINGS

    findings = list(CHEXPERT_FINDINGS)
    y, score = random_case(seed=9, rows=48, findings=14)
    y[:, findings.index("Pleural Other")] = np.nan
    rng = np.random.default_rng(10)
    flips = rng.random((48, 2, 14)) < 0.15
    sets = np.where(flips, 1 - np.nan_to_num(y)[:, None, :], np.nan_to_num(y)[:, None, :])
    summary = evaluate_predictions(
        y, score, findings, tmp_path, label_sets=sets, label_set_names=["neg_u1", "che_u1"], model_name="Ours"
    )

    table = pd.read_csv(tmp_path / "auc.csv", index_col="finding")
    assert list(table.columns) == ["neg_u1", "che_u1", "Ours"]
    assert list(table.index) == findings + [AVERAGE_ROW]
    assert summary["skipped"] == {"Pleural Other": "no labels"}
    assert summary["per_finding"]["Pleural Other"]["auc"] is None
    assert summary["macro_auc"] == pytest.approx(per_finding_auc(y, score, findings)["macro_auc"])
    assert summary["label_sets"]["neg_u1"]["macro_auc"] == pytest.approx(table.loc[AVERAGE_ROW, "neg_u1"])
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    pngs = sorted((tmp_path / "roc").glob("*.png"))
    assert len(pngs) == 13 + 1  # 13 scored findings and the grid
    assert_png(tmp_path / "roc" / "roc_all.png")
    with pytest.raises(ValueError, match="without label_set_names"):
        evaluate_predictions(y, score, findings, tmp_path, label_sets=sets)
