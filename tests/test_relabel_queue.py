"""The relabeling queue: ranking scores, export, the hand-label template round trip, bad template input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from l2v_monai.data.datalist import DatalistSourceError
from l2v_monai.quality.hand_labels import hand_label_matrix, import_hand_labels, read_hand_labels
from l2v_monai.experiments.relabel_scores import ALL_METHODS, activelab_scores, binary_entropy
from l2v_monai.quality.relabel_queue import (
    QueueEvidence,
    disagreement_scores,
    finding_scores,
    image_scores,
    queue_scores,
    top_n,
    write_queue,
)

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ["Atelectasis", "Edema", "Pneumonia"]
SETS = ["a_u0", "a_u1", "b_u0", "b_u1"]


def contested_case(n: int = 200, contested: int = 12, seed: int = 0):
    """Seeded sets (S × 4 × 3) that agree everywhere but on ``contested`` items, where u0 and u1 split.

    The model is confident on the unanimous items and unsure on the contested ones, as it is when
    the contested entries are the faint positives and the look-alikes; the vote's ȳ is 0.5 there.
    """
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, len(FINDINGS))) < 0.3).astype(float)
    labels = np.repeat(truth[:, None, :], len(SETS), axis=1)
    chosen = rng.choice(n, contested, replace=False)
    for i in chosen:
        j = rng.integers(len(FINDINGS))
        labels[i, [0, 2], j], labels[i, [1, 3], j] = 0.0, 1.0  # uncertain → 0 / → 1
    model = np.clip(truth * 0.96 + 0.02 + rng.normal(0, 0.01, truth.shape), 0.01, 0.99)
    vote = labels.mean(1)
    for i in chosen:
        split = labels[i].max(0) != labels[i].min(0)
        model[i, split] = rng.uniform(0.3, 0.7, split.sum())
    return labels, truth, model, vote, np.sort(chosen)


# --- scores -----------------------------------------------------------------------------------------
def test_queue_top_items_are_exactly_the_contested_ones() -> None:
    labels, _, model, vote, chosen = contested_case()
    ev = QueueEvidence.from_labels(labels, model=model, vote=vote)
    per_image, per_finding = queue_scores(ev)
    top = top_n(per_image, len(chosen))
    assert sorted(top.tolist()) == chosen.tolist()
    # Every unanimous entry scores 0 under the queue's combination, every contested one above 0.
    contested = disagreement_scores(labels) > 0
    assert (per_finding[~contested] == 0).all() and (per_finding[contested] > 0).all()
    # Disagreement alone ranks them first too; model uncertainty alone does not need to.
    assert sorted(top_n(image_scores(finding_scores("disagreement", ev)), len(chosen)).tolist()) == chosen.tolist()


def test_score_definitions_on_hand_computed_entries() -> None:
    labels = np.array([[[1.0], [1.0], [0.0], [np.nan]], [[1.0], [1.0], [1.0], [1.0]], [[0.0], [np.nan], [np.nan], [np.nan]]])
    # 2 of 3 say 1: 1 - |2·2/3 - 1| = 2/3; unanimous: 0; one set only: 0.
    assert disagreement_scores(labels)[:, 0] == pytest.approx([2 / 3, 0.0, 0.0])
    assert binary_entropy(np.array([0.0, 0.5, 1.0, np.nan]))[:3] == pytest.approx([0.0, 1.0, 0.0])
    assert np.isnan(binary_entropy(np.array([np.nan])))[0]
    ev = QueueEvidence(labels, ds_posterior=np.array([[0.6], [0.99], [0.1]]), vote=np.array([[0.7], [1.0], [0.0]]),
                       model=np.array([[0.2], [0.9], [0.1]]))
    # expected_error: target = vote ≥ 0.5; q = mean(ds, vote, model).
    q = np.array([(0.6 + 0.7 + 0.2) / 3, (0.99 + 1.0 + 0.9) / 3, (0.1 + 0.0 + 0.1) / 3])
    assert finding_scores("expected_error", ev, ALL_METHODS)[:, 0] == pytest.approx([1 - q[0], 1 - q[1], q[2]])
    assert finding_scores("contested_expected_error", ev)[:, 0] == pytest.approx([1 - q[0], 0.0, 0.0])
    assert finding_scores("model_vs_vote", ev, ALL_METHODS)[:, 0] == pytest.approx([0.5, 0.1, 0.1])
    # Hand-labelled entries score 0; a fully hand-labelled image drops out of the queue.
    hand = np.array([[1.0], [np.nan], [np.nan]])
    per_image, _ = queue_scores(QueueEvidence(labels, ev.ds_posterior, ev.vote, ev.model, hand), "contested_expected_error")
    assert per_image[0] == -np.inf and 0 not in top_n(per_image, 3).tolist()


def test_image_aggregates_and_stable_ties() -> None:
    scores = np.array([[0.2, 0.3], [0.5, np.nan], [np.nan, np.nan], [0.5, 0.0]])
    assert image_scores(scores, "sum") == pytest.approx([0.5, 0.5, 0.0, 0.5])
    assert image_scores(scores, "max") == pytest.approx([0.3, 0.5, 0.0, 0.5])
    assert image_scores(scores, "mean") == pytest.approx([0.25, 0.5, 0.0, 0.25])
    assert top_n(image_scores(scores, "sum"), 3).tolist() == [0, 1, 3]  # ties keep item order
    with pytest.raises(ValueError, match="unknown aggregate"):
        image_scores(scores, "median")
    with pytest.raises(ValueError, match="unknown relabel score"):
        finding_scores("entropy", QueueEvidence(np.zeros((1, 2, 1))))
    with pytest.raises(ValueError, match="needs the model"):
        finding_scores("model_entropy", QueueEvidence(np.zeros((1, 2, 1))), ALL_METHODS)


def test_activelab_scores_prefer_contested_uncertain_items() -> None:
    labels, _, model, _, chosen = contested_case(n=300, contested=20, seed=1)
    scores = activelab_scores(labels, model)
    assert scores.shape == (300, 3) and np.isfinite(scores).all()
    per_image = image_scores(scores, "max")
    # ActiveLab also puts most contested items near the top on this easy case.
    assert len(set(top_n(per_image, 40).tolist()) & set(chosen.tolist())) >= 15


# --- export -----------------------------------------------------------------------------------------
def test_write_queue_csv_template_and_contact_sheet(tmp_path: Path) -> None:
    labels, _, model, vote, chosen = contested_case(n=40, contested=5)
    rng = np.random.default_rng(0)
    items = [{"image": rng.random((1, 32, 32)).astype(np.float32), "study_id": f"s{i}", "dicom_id": f"d{i}"} for i in range(40)]
    ev = QueueEvidence.from_labels(labels, model=model, vote=vote)
    per_image, _ = queue_scores(ev)
    order = top_n(per_image, 5)
    paths = write_queue(tmp_path, items, order, FINDINGS, SETS, ev, per_image)
    rows = list(csv.DictReader(open(paths["queue"])))
    assert [r["id"] for r in rows] == [f"d{i}" for i in order]
    assert rows[0]["rank"] == "1" and rows[0]["study"] == f"s{order[0]}" and rows[0]["disagreeing"]
    first = order[0]
    assert [float(rows[0][f"{s}:{f}"]) for s in SETS for f in FINDINGS] == labels[first].ravel().tolist()
    assert float(rows[0]["vote:Edema"]) == pytest.approx(vote[first, 1], abs=1e-3)
    template = list(csv.reader(open(paths["template"])))
    assert template[0] == ["id", "rank", *FINDINGS]
    assert [r[0] for r in template[1:]] == [f"d{i}" for i in order] and all(set(r[2:]) == {""} for r in template[1:])
    assert paths["contact_sheet"].stat().st_size > 1000


# --- the template round trip and bad input ----------------------------------------------------------
def _datalist(tmp_path: Path, n: int = 6) -> Path:
    items = [{"image": f"img/{i}.jpg", "dicom_id": f"d{i}", "labels": [[0.0, 1.0, None]] * 4} for i in range(n)]
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"findings": FINDINGS, "label_sets": SETS, "training": items,
                                "validation": [{"image": "img/v.jpg", "labels": [[0.0, 1.0, 0.0]] * 4}]}))
    (tmp_path / "datalist.exclusions.json").write_text(json.dumps({"counts": {"lateral": 2}, "total": 2, "excluded": []}))
    return path


def _template(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or ["id", "rank", *FINDINGS])
        writer.writerows(rows)
    return path


def test_import_round_trip_adds_label_to_every_training_item(tmp_path: Path) -> None:
    source = _datalist(tmp_path)
    filled = _template(tmp_path / "hand.csv", [["d2", "1", "1", "0", ""], ["d4", "2", "", "", ""], ["d0", "3", "0", "0", "1"]])
    summary = import_hand_labels(source, filled, tmp_path / "out.json")
    document = json.loads((tmp_path / "out.json").read_text())
    labels = [item["label"] for item in document["training"]]
    assert labels[2] == [1.0, 0.0, None] and labels[0] == [0.0, 0.0, 1.0]
    assert labels[4] == [None, None, None] and labels[1] == [None, None, None]  # blank row: nothing to add
    assert all("label" not in item for item in document["validation"])
    assert document["training"][2]["image"] == "img/2.jpg"  # paths stay as written
    assert summary["items_hand_labelled"] == 2 and summary["entries"] == 5 and summary["entries_changed"] == 0
    assert json.loads((tmp_path / "out.exclusions.json").read_text())["total"] == 2
    # A second round: blanks keep the earlier value, a new value replaces it.
    again = _template(tmp_path / "hand2.csv", [["d2", "1", "", "1", ""]])
    summary = import_hand_labels(tmp_path / "out.json", again, tmp_path / "out2.json")
    assert json.loads((tmp_path / "out2.json").read_text())["training"][2]["label"] == [1.0, 1.0, None]
    assert summary["entries_changed"] == 1 and summary["entries_new"] == 0
    matrix = hand_label_matrix(json.loads((tmp_path / "out2.json").read_text())["training"], 3)
    assert matrix.shape == (6, 3) and np.isnan(matrix[1]).all() and matrix[2, 1] == 1.0


@pytest.mark.parametrize(
    ("rows", "header", "message", "line"),
    [
        ([["d1", "1", "1", "0", "0"], ["x9", "2", "1", "0", "0"]], None, "id 'x9' is not an item", 3),
        ([["d1", "1", "1", "yes", "0"]], None, "id 'd1', column 'Edema': label value 'yes' is not one of 1, 0 or blank", 2),
        ([["d1", "1", "1", "0", "0"], ["d3", "2", "-1", "0", "0"]], None, "column 'Atelectasis': label value '-1'", 3),
        ([["d1", "1", "1", "0", "0"], ["d1", "2", "1", "0", "0"]], None, "id 'd1' is given twice \\(first on line 2\\)", 3),
        ([["", "1", "1", "0", "0"]], None, "the id is blank", 2),
        ([["d1", "1", "0"]], ["id", "rank", "Atelectasis", "Edema"], "missing required column\\(s\\) \\['Pneumonia'\\]", 1),
        ([["d1", "1", "1", "0", "0", "x"]], ["id", "rank", *FINDINGS, "Edemma"], "unknown column\\(s\\) \\['Edemma'\\]", 1),
    ],
)
def test_bad_template_input_names_the_row(tmp_path: Path, rows, header, message, line) -> None:
    source = _datalist(tmp_path)
    bad = _template(tmp_path / "bad.csv", rows, header)
    with pytest.raises(DatalistSourceError, match=message) as caught:
        import_hand_labels(source, bad, tmp_path / "out.json")
    assert caught.value.lines == (line,) and f"line {line}" in str(caught.value) and str(bad) in str(caught.value)
    assert not (tmp_path / "out.json").exists()


def test_every_bad_row_is_named_at_once(tmp_path: Path) -> None:
    bad = _template(tmp_path / "bad.csv", [["d1", "1", "1", "0", "0"], ["zz", "2", "1", "0", "0"], ["d2", "3", "2", "0", "0"]])
    with pytest.raises(DatalistSourceError, match="2 bad row") as caught:
        read_hand_labels(bad, FINDINGS, ["d0", "d1", "d2"])
    assert caught.value.lines == (3, 4)


# --- the command line -------------------------------------------------------------------------------
def _script():
    from l2v_monai.cli import relabel_queue

    return relabel_queue


def test_script_exports_without_a_run_and_imports_back(tmp_path: Path, capsys) -> None:
    labels, _, _, _, chosen = contested_case(n=30, contested=4, seed=2)
    from PIL import Image

    (tmp_path / "img").mkdir()
    items = []
    for i in range(30):
        Image.fromarray((np.random.default_rng(i).random((24, 24)) * 255).astype(np.uint8)).save(tmp_path / "img" / f"{i}.png")
        items.append({"image": f"img/{i}.png", "study_id": f"s{i}", "labels": labels[i].tolist()})
    source = tmp_path / "datalist.json"
    source.write_text(json.dumps({"findings": FINDINGS, "label_sets": SETS, "training": items}))
    script = _script()
    assert script.main(["--datalist", str(source), "--score", "disagreement", "--n", "4", "--out", str(tmp_path / "q")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "q" / "queue.csv")))
    assert sorted(r["id"] for r in rows) == sorted(f"img/{i}.png" for i in chosen)
    assert (tmp_path / "q" / "contact_sheet.png").is_file()
    assert json.loads((tmp_path / "q" / "queue.json").read_text())["with_disagreement"] == 4
    # Fill the template with the truth of the first row and import it.
    template = list(csv.reader(open(tmp_path / "q" / "hand_labels.csv")))
    template[1][2:] = ["1", "0", ""]
    with open(tmp_path / "q" / "filled.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(template)
    assert script.main(["--datalist", str(source), "--import", str(tmp_path / "q" / "filled.csv"),
                        "--out-datalist", str(tmp_path / "hand.json")]) == 0
    assert "1 template rows with labels" in capsys.readouterr().out
    document = json.loads((tmp_path / "hand.json").read_text())
    labelled = [it for it in document["training"] if it["label"] != [None, None, None]]
    assert len(labelled) == 1 and labelled[0]["image"] == template[1][0] and labelled[0]["label"] == [1.0, 0.0, None]
    # A score calibrated on an audit, on a datalist with no hand labels yet, is a clear error.
    with pytest.raises(SystemExit):
        script.main(["--datalist", str(source), "--score", "calibrated_error", "--n", "4", "--out", str(tmp_path / "q2")])
    assert "needs the hand" in capsys.readouterr().err
    # Research scores are not the queue's to offer.
    with pytest.raises(SystemExit):
        script.main(["--datalist", str(source), "--score", "model_entropy", "--n", "4", "--out", str(tmp_path / "q3")])
    assert "invalid choice: 'model_entropy'" in capsys.readouterr().err


# --- template → datalist → strategies: every strategy trusts the hand labels ---------------------------
STRATEGY_OPTIONS = {
    "single": {"label_set": 0},
    "majority": {"ties": "random"},
    "mean": {},
    "dawid_skene": {},
    "consensus": {"consensus": "majority", "min_confidence": 1.0},
    "cm": {"lr": 0.01},
    "l2v": {},  # the default vote (anchored, probe objective)
    "l2v_paper": {"variant": "paper"},
}


def _imported_items(tmp_path: Path, n: int = 24):
    """A datalist with contested label sets, a filled template that contradicts the sets on some entries, imported."""
    labels, _, _, _, chosen = contested_case(n=n, contested=6, seed=3)
    labels[0, 1, :] = np.nan  # a set with no label on one item
    items = [{"image": f"img/{i}.png", "dicom_id": f"d{i}",
              "labels": [[None if np.isnan(x) else float(x) for x in row] for row in labels[i]]} for i in range(n)]
    source = tmp_path / "datalist.json"
    source.write_text(json.dumps({"findings": FINDINGS, "label_sets": SETS, "training": items}))
    first, second = int(chosen[0]), int(chosen[1])
    rows = [[f"d{first}", "1", *("0" if x >= 0.5 else "1" for x in labels[first, 1])],  # every finding against set a_u1
            [f"d{second}", "2", "1", "", "0"], ["d0", "3", "1", "1", "1"]]
    import_hand_labels(source, _template(tmp_path / "hand.csv", rows), tmp_path / "hand.json")
    from l2v_monai.data.datalist import read_datalist

    read = read_datalist(tmp_path / "hand.json")["training"]
    # In-memory items as a data loader would see them: the image an array, the label sets float.
    rng = np.random.default_rng(0)
    memory = [{"image": rng.random((1, 8, 8)).astype(np.float32), "labels": labels[i].astype(np.float32), "label": it["label"]}
              for i, it in enumerate(read)]
    return memory, labels


def test_round_trip_every_strategy_trusts_the_hand_labels(tmp_path: Path) -> None:
    import torch
    from torch.utils.data import default_collate

    from l2v_monai.strategies import attach_targets, build_strategy, hand_labels
    from tiny_nets import TinyNet

    items, labels = _imported_items(tmp_path)
    hand = hand_labels(items, 3)
    known = ~np.isnan(hand)
    assert known.sum() == 3 + 2 + 3 and known.any(1).sum() == 3
    for name, options in STRATEGY_OPTIONS.items():
        key = "l2v" if name.startswith("l2v") else name
        torch.manual_seed(0)
        net = TinyNet(num_outputs=3)
        strategy = build_strategy(key, num_sets=4, num_outputs=3, feature_dim=net.num_features, label_sets=SETS,
                                  options={key: options})
        attached = attach_targets(items, strategy)
        assert all(np.array_equal(it["label"], h, equal_nan=True) for it, h in zip(attached, hand))
        if "target" in attached[0]:
            # Dawid–Skene's targets, the consensus and the vote's anchors: the hand label wherever one exists.
            targets = np.stack([it["target"] for it in attached])
            assert np.array_equal(targets[known], hand[known]), name
        batch = default_collate(attached)
        images = batch["image"]
        features = net.features(images)
        out = strategy(dict(batch), net.head(features), features, net)
        assert np.array_equal(out.target.detach().numpy()[known], hand[known]), name
        assert torch.isfinite(out.loss) and out.loss.requires_grad, name
        # Without the hand labels the same batch trains toward something else on at least one of those entries.
        plain = {k: x for k, x in batch.items() if k != "label"}
        if "target" in attached[0]:
            plain["target"] = default_collate(attach_targets([{k: x for k, x in it.items() if k != "label"} for it in items],
                                                             strategy))["target"]
        before = strategy(plain, net.head(features), features, net).target.detach().numpy()
        assert not np.array_equal(np.nan_to_num(before[known], nan=-1), hand[known]), name


def test_without_hand_labels_attach_targets_is_unchanged() -> None:
    from l2v_monai.strategies import attach_targets, build_strategy, hand_labels

    labels, *_ = contested_case(n=30, seed=4)
    items = [{"image": np.zeros((1, 4, 4), np.float32), "labels": labels[i]} for i in range(30)]
    blank = [{**it, "label": [None, None, None]} for it in items]
    assert hand_labels(items) is None and hand_labels(blank, 3) is None
    for name in ("majority", "dawid_skene", "l2v"):
        strategy = build_strategy(name, num_sets=4, num_outputs=3, feature_dim=6, label_sets=SETS)
        plain = attach_targets(items, strategy)
        assert all(set(it) == set(items[0]) | ({"target"} if name != "majority" else set()) for it in plain)


def test_a_bad_hand_label_in_the_items_names_the_item() -> None:
    from l2v_monai.labels import LabelValueError
    from l2v_monai.strategies import attach_targets, build_strategy

    labels, *_ = contested_case(n=5, contested=2, seed=5)
    items = [{"image": f"img/{i}.png", "labels": labels[i]} for i in range(5)]
    items[3]["label"] = [1.0, 2.0, None]
    with pytest.raises(LabelValueError, match=r"training\[3\] \(image img/3.png\): 'label' value 2 at \[1\] is outside"):
        attach_targets(items, build_strategy("majority", num_sets=4, num_outputs=3, feature_dim=6))


def test_calibrated_error_sees_an_error_every_set_makes_once_an_audit_met_it() -> None:
    from l2v_monai.quality.relabel_queue import calibrated_error

    rng = np.random.default_rng(6)
    n = 400
    truth = (rng.random((n, 2)) < 0.4).astype(float)
    labels = np.repeat(truth[:, None, :], 4, axis=1)
    # Finding 0: every set calls 40 % of the true negatives positive (a definition the labelers share).
    shared = (truth[:, 0] == 0) & (rng.random(n) < 0.4)
    labels[shared, :, 0] = 1.0
    # Finding 1: a few contested entries, split 2 : 2.
    contested = rng.choice(n, 30, replace=False)
    labels[contested, :2, 1], labels[contested, 2:, 1] = 0.0, 1.0
    vote = labels.mean(1)
    model = np.clip(vote + rng.normal(0, 0.02, vote.shape), 0.01, 0.99)
    ev = QueueEvidence.from_labels(labels, vote=vote, model=model)
    # Without hand labels no score sees the shared error: the unanimous entries score ~0.
    assert finding_scores("contested_expected_error", ev)[shared, 0].max() == 0
    with pytest.raises(ValueError, match="needs the hand"):
        calibrated_error(ev)
    audit = rng.choice(n, 60, replace=False)
    hand = np.full_like(truth, np.nan)
    hand[audit] = truth[audit]
    scores = calibrated_error(QueueEvidence(labels, ev.ds_posterior, vote, model, hand))
    said_one = (labels[:, 0, 0] == 1) & ~np.isin(np.arange(n), audit)
    measured = (shared[audit]).sum() / (labels[audit, 0, 0] == 1).sum()
    # The unanimous "1" stratum of finding 0 gets (about) its measured error rate, far above the clean strata.
    assert scores[said_one, 0].min() > 0.5 * measured
    assert scores[said_one, 0].min() > scores[labels[:, 0, 0] == 0, 0].max()


# --- the simulated rounds' bookkeeping (the training itself runs in experiments/relabel_rounds.py) ----------
def _rounds_script():
    from l2v_monai.experiments import relabel_rounds

    return relabel_rounds


def test_rounds_orders_and_the_collected_table(tmp_path: Path) -> None:
    rounds = _rounds_script()
    assert rounds.mixed_order(np.arange(6), np.arange(6)[::-1], 0.5).tolist() == [0, 5, 1, 4, 2, 3]
    labels, truth, model, vote, _ = contested_case(n=60, contested=8, seed=7)
    ev = QueueEvidence.from_labels(labels, model=model, vote=vote)
    order = rounds.ranking("audit:calibrated_error:0.5", ("audit:calibrated_error", "sum"), ev, 0, 20, truth)
    audit = rounds.ranking("random", ("random", ""), ev, 0)[:10]
    assert order[:10].tolist() == audit.tolist() and len(set(order.tolist())) == 60
    assert rounds.ranking("placebo", ("placebo", ""), ev, 0).tolist() == rounds.ranking("random", ("random", ""), ev, 0).tolist()
    runs = [{"testbed": "t", "seed": s, "method": m, "score": m, "n": n, "auc": 0.9 + g, "gain": g, "revealed": 5 * n,
             "vote_wrong_revealed": 1, "contested_revealed": 2, "seconds": 1.0, "settings": {}}
            for s in (0, 1) for m, n, g in [("none", 0, 0.0), ("random", 200, 0.01), ("activelab", 200, 0.015),
                                            ("queue", 200, 0.025), ("random", 400, 0.02), ("queue", 400, 0.01)]]
    (tmp_path / "runs.json").write_text(json.dumps({"runs": runs + runs[:3]}))  # a repeated cell is kept once
    assert rounds.main(["--collect", str(tmp_path / "runs.json"), "--choose", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out.json").read_text())["summary"]["t"]
    assert summary["targets_n200"]["ratio_to_random"] == pytest.approx(2.5)
    assert summary["targets_n200"]["two_x_random"] and summary["targets_n200"]["beats_activelab"]
    text = (tmp_path / "out.md").read_text()
    assert "| queue | `queue` | 0.9250 (+0.0250) | 0.9100 (+0.0100) |" in text and "Chosen: **queue** (mean 1.50" in text
    assert (tmp_path / "out.png").stat().st_size > 1000


def test_iterated_rounds_rerank_after_each_step_and_never_repick(monkeypatch) -> None:
    """Step 1 takes the contested images the round-0 evidence ranks first; every step retrains with all
    hand labels so far and re-ranks with the new vote; no image is picked twice; rows at the budgets."""
    from types import SimpleNamespace

    from l2v_monai.engine.run_outputs import RunOutputs

    rounds = _rounds_script()
    labels, truth, model, vote, contested_items = contested_case(n=60, contested=8, seed=7)
    ev = QueueEvidence.from_labels(labels, model=model, vote=vote)
    trained_with: list[np.ndarray] = []

    def fake_train(bed, hand):
        trained_with.append(hand.copy())
        return "net", "strategy", [], 1.0

    # The retrained vote agrees with the truth wherever hand labels exist, and stays as it was elsewhere.
    monkeypatch.setattr(rounds, "train", fake_train)
    monkeypatch.setattr(rounds, "vote_outputs", lambda strategy, net, batches: RunOutputs(
        np.where(np.isnan(trained_with[-1]), vote, trained_with[-1]), model))
    bed = SimpleNamespace(name="t", seed=0, truth=truth, labels=labels, settings={},
                          test_auc=lambda net: (0.9 + 0.001 * len(trained_with), {}))
    decided = (vote >= 0.5).astype(np.float32)
    wrong = decided != truth
    disagree = np.nanmax(labels, 1) != np.nanmin(labels, 1)
    runs = rounds.iterated_rounds(bed, "iterate:contested_expected_error:4", ("iterate:contested_expected_error", "sum"),
                                  ev, {"auc": 0.9}, [4, 12], wrong, disagree)
    assert [r["n"] for r in runs] == [4, 12] and len(trained_with) == 3  # steps at 4, 8, 12
    first = set(np.flatnonzero(~np.isnan(trained_with[0]).all(1)))
    assert first <= set(contested_items.tolist()) and len(first) == 4
    picked = [set(np.flatnonzero(~np.isnan(h).all(1))) for h in trained_with]
    assert picked[0] < picked[1] < picked[2] and len(picked[2]) == 12
    # The 8 contested images come first; once they are hand-labelled nothing contested is left to rank.
    assert set(contested_items.tolist()) <= picked[1]
    assert runs[1]["gain"] == pytest.approx(0.003) and runs[1]["revealed"] == int((~np.isnan(trained_with[2])).sum())
    with pytest.raises(ValueError, match="multiple of 4"):
        rounds.iterated_rounds(bed, "iterate:contested_expected_error:4", ("iterate:contested_expected_error", "sum"),
                               ev, {"auc": 0.9}, [6], wrong, disagree)


def test_script_random_sample_is_seeded_and_skips_hand_labelled_images(tmp_path: Path) -> None:
    labels, *_ = contested_case(n=20, contested=3, seed=8)
    items = [{"image": f"img/{i}.png", "dicom_id": f"d{i}", "labels": labels[i].tolist(),
              "label": [1.0, 0.0, 0.0] if i < 5 else [None, None, None]} for i in range(20)]
    source = tmp_path / "datalist.json"
    source.write_text(json.dumps({"findings": FINDINGS, "label_sets": SETS, "training": items}))
    script = _script()
    runs = []
    for out in ("a", "b"):
        assert script.main(["--datalist", str(source), "--score", "random", "--seed", "3", "--n", "8", "--no-sheet",
                            "--out", str(tmp_path / out)]) == 0
        runs.append([r["id"] for r in csv.DictReader(open(tmp_path / out / "queue.csv"))])
    assert runs[0] == runs[1] and len(set(runs[0])) == 8 and not set(runs[0]) & {f"d{i}" for i in range(5)}
