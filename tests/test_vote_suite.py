"""The robustness suite's pieces: the image-regime generator's couplings, the paired intervals, the rule."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from l2v_monai.experiments.image_regime import finding_patterns, make_image_regime, strengths
from l2v_monai.experiments import vote_suite as vs
from l2v_monai.experiments.vote_suite import drop_labels, paired_interval, rule_outcome, summarize
from l2v_monai.strategies import consensus_targets

FINDINGS = ["A", "B", "No Finding"]


def _world(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, 3)) < 0.4).astype(np.float32)
    truth[rng.random(truth.shape) < 0.05] = np.nan
    sets = np.repeat(np.nan_to_num(truth)[:, None], 4, axis=1)
    flip = rng.random(sets.shape) < 0.15
    sets[flip] = 1 - sets[flip]
    return sets.astype(np.float32), truth


def test_pictures_come_from_the_truth_alone_under_the_independent_coupling() -> None:
    sets, truth = _world()
    a = make_image_regime(sets, truth, FINDINGS, "independent", seed=3)
    other = np.random.default_rng(9).permutation(sets.reshape(-1)).reshape(sets.shape)  # any other label sets
    b = make_image_regime(other, truth, FINDINGS, "independent", seed=3)
    assert np.array_equal(a["images"], b["images"])  # the labels do not reach the picture
    assert a["images"].shape == (400, 1, 24, 24) and a["images"].min() >= 0 and a["images"].max() <= 1
    present = np.nan_to_num(truth) == 1
    assert (a["strength"][~present] == 0).all() and (a["strength"][present] > 0).all()
    # "No Finding" has no pattern; every other finding has one, each at its own place.
    pats = finding_patterns(3, 24, skip=(2,))
    assert pats[2].sum() == 0 and pats[0].sum() > 0 and np.abs(pats[0] - pats[1]).sum() > 1


def test_disputed_entries_are_fainter_under_the_hedged_coupling() -> None:
    sets, truth = _world()
    s = strengths(truth, sets, "hedged", np.random.default_rng(0))
    present = np.nan_to_num(truth) == 1
    disputed = (sets == 1).any(axis=1) & (sets == 0).any(axis=1)
    assert s[present & disputed].mean() < 0.5 * s[present & ~disputed].mean()
    ind = strengths(truth, sets, "independent", np.random.default_rng(0))
    assert abs(ind[present & disputed].mean() - ind[present & ~disputed].mean()) < 0.05
    with pytest.raises(ValueError, match="coupling"):
        strengths(truth, sets, "other", np.random.default_rng(0))


def test_paired_interval_is_seeded_and_covers_the_mean_difference() -> None:
    rng = np.random.default_rng(0)
    a = {(s, f): 0.8 + 0.01 * rng.standard_normal() for s in range(2) for f in range(5)}
    b = {u: x - 0.02 for u, x in a.items()}
    ci = paired_interval(a, b)
    assert ci == paired_interval(a, b)  # seeded
    assert ci["units"] == 10 and ci["low"] <= ci["mean"] <= ci["high"] and ci["mean"] == pytest.approx(0.02)
    assert ci["low"] == pytest.approx(0.02) and ci["high"] == pytest.approx(0.02)  # a constant difference
    assert paired_interval(a, {}) is None


def test_rule_outcome() -> None:
    assert rule_outcome(0.796, 0.80, 0.79, image_regime=False)[0]  # 0.4 point below the better one
    ok, why = rule_outcome(0.79, 0.80, 0.70, image_regime=False)
    assert not ok and "1.0 points below" in why
    assert not rule_outcome(0.80, 0.80, 0.79, image_regime=True)[0]  # a tie is not "above both"
    assert rule_outcome(0.81, 0.80, 0.79, image_regime=True)[0]


def test_summary_pairs_strategies_on_shared_units() -> None:
    runs = [{"cell": "img_hedged", "strategy": name, "seed": 100, "fold": f, "score": score + 0.001 * f, "seconds": 1.0}
            for f in range(3) for name, score in (("mv", 0.80), ("dawid_skene", 0.79), ("l2v_default", 0.82))]
    out = summarize(runs)["img_hedged"]
    assert out["l2v_default"]["vs_mv"]["mean"] == pytest.approx(0.02) and out["l2v_default"]["rule"][0]
    assert out["mv"]["vs_mv"] is None and "rule" not in out["dawid_skene"]  # references only, on image cells


def test_dropped_labels_keep_one_set_per_sample() -> None:
    labels = np.eye(3, dtype=np.float32)[np.zeros((50, 4), dtype=int)]
    out = drop_labels(labels, 0.9, np.random.default_rng(0))
    present = ~np.isnan(out).any(axis=2)
    assert present.any(axis=1).all() and 0.6 < 1 - present.mean() < 0.75


def test_confident_dawid_skene_else_majority_labels_every_entry() -> None:
    sets, _ = _world(200)
    ds = consensus_targets(sets, "dawid_skene", 0.999, False)
    both = consensus_targets(sets, "dawid_skene_else_majority", 0.999, False)
    assert not np.isnan(both).any()
    assert np.array_equal(both[~np.isnan(ds)], ds[~np.isnan(ds)])
    ties = np.isclose(sets.mean(axis=1), 0.5) & np.isnan(ds)
    assert (both[ties] == 0.5).all()


def test_overrule_keeps_majority_vote_until_warm_and_on_unanimous_entries() -> None:
    import torch

    from l2v_monai.strategies import build_strategy

    s = build_strategy("overrule", num_sets=4, num_outputs=2, feature_dim=4, options={"overrule": {"ties": "positive", "warmup": 1}})
    labels = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])  # finding 0 tied, finding 1 contested 3:1
    sure_negative = torch.tensor([[-6.0, -6.0]])
    first = s({"labels": labels}, sure_negative, None, None)
    assert first.target.tolist() == [[1.0, 1.0]]  # warm-up: majority vote, ties → 1
    second = s({"labels": labels}, sure_negative, None, None)
    assert second.target.tolist() == [[0.0, 0.0]]  # contested entries: the confident model decides
    unanimous = torch.ones(1, 4, 2)
    assert s({"labels": unanimous}, sure_negative, None, None).target.tolist() == [[1.0, 1.0]]
    unsure = s({"labels": labels}, torch.zeros(1, 2), None, None)
    assert unsure.target.tolist() == [[1.0, 1.0]]  # not confident: majority vote


def test_overrule_picks_only_a_class_some_set_gave_for_one_hot_sets() -> None:
    import torch

    from l2v_monai.strategies import build_strategy

    s = build_strategy("overrule", num_sets=3, num_outputs=3, feature_dim=4, multiclass=True,
                       options={"overrule": {"warmup": 0}})
    eye = torch.eye(3)
    labels = torch.stack([eye[0], eye[0], eye[1]])[None]  # contested: 0, 0, 1
    to_class1 = s({"labels": labels}, torch.tensor([[-9.0, 9.0, -9.0]]), None, None)
    assert to_class1.target.argmax(1).tolist() == [1]
    to_class2 = s({"labels": labels}, torch.tensor([[-9.0, -9.0, 9.0]]), None, None)
    assert to_class2.target.argmax(1).tolist() == [0]  # nobody said 2: majority vote stays


def test_summary_refuses_runs_of_one_cell_trained_for_different_epochs() -> None:
    runs = [{"cell": "poc_n05_4", "strategy": s, "seed": 0, "fold": 0, "score": 0.9, "epochs": e}
            for s, e in (("mv", 8), ("dawid_skene", 8), ("posterior_vote", 6))]
    with pytest.raises(SystemExit, match=r"different epochs.*poc_n05_4"):
        vs.summarize(runs)


def test_six_annotators_add_an_independent_second_draw() -> None:
    args = argparse.Namespace(poc_dataset="digits", poc_max_train=400, epochs=None)
    data = vs._poc_data(vs.CELLS["poc_n05_6ad"][1], 7, args)
    labels = data["labels"]
    assert labels.shape[1] == 6 and data["set_names"] == ["HS", "SF", "OC", "AD", "AVG", "HS_2"]
    hs, hs2 = labels[:, 0].argmax(1), labels[:, 5].argmax(1)
    truth = data["truth"].argmax(1)
    # Same annotator type (about 50 % right at noise 0.5), drawn independently: they disagree often.
    assert 0.35 < (hs == truth).mean() < 0.65 and 0.35 < (hs2 == truth).mean() < 0.65
    assert (hs != hs2).mean() > 0.3
