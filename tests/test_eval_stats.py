"""Intervals, paired comparisons, operating points, calibration and subgroups, against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import bootstrap as scipy_bootstrap
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from l2v_monai.bundle_scripts.decisions import (
    DecisionFileError,
    ThresholdCallsd,
    calibrate,
    calls,
    load_calibration,
    load_thresholds,
    save_calibration,
    save_thresholds,
    threshold_vector,
)
from l2v_monai.evaluation.bootstrap import bootstrap_aucs, resample_plan, weighted_auc
from l2v_monai.evaluation.calibration import calibration_summary, expected_calibration_error, fit_calibration
from l2v_monai.evaluation.compare import bootstrap_p_value, compare_runs, holm
from l2v_monai.evaluation.delong import delong_interval, delong_paired_test, structural_components
from l2v_monai.evaluation.intervals import auc_intervals
from l2v_monai.evaluation.operating_points import choose_threshold, operating_points, parse_rule, wilson_interval
from l2v_monai.evaluation.subgroups import check_metadata, subgroup_aucs


def scored(n: int, noise: float, seed: int, prevalence: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(float)
    return y, y + rng.normal(0, noise, n)


# ---------------------------------------------------------------------------------------------- AUC on resamples
def test_weighted_auc_with_unit_weights_is_sklearns_auc_ties_included() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60).astype(float)
    s = np.round(y + rng.normal(0, 1, 60), 1)  # rounded: many ties
    assert weighted_auc(y, s, np.ones((1, 60), dtype=np.int32))[0] == pytest.approx(roc_auc_score(y, s))


def test_each_resample_auc_is_the_auc_of_the_drawn_items() -> None:
    y, s = scored(40, 1.0, 2)
    plan = resample_plan(40, n_resamples=30, seed=3)
    counts = next(plan.blocks())
    got = bootstrap_aucs(y[:, None], [s[:, None]], plan, [0])[0, 0]
    for b in range(30):
        drawn = np.repeat(np.arange(40), counts[b])
        assert got[b] == pytest.approx(roc_auc_score(y[drawn], s[drawn]))


def test_bootstrap_interval_agrees_with_scipy_bootstrap() -> None:
    y, s = scored(300, 1.0, 4)
    ours = auc_intervals(y[:, None], s[:, None], ["F"], n_resamples=2000, seed=0)["per_finding"]["F"]
    ref = scipy_bootstrap((y, s), lambda a, b: roc_auc_score(a, b), paired=True, vectorized=False, n_resamples=2000,
                          method="percentile", random_state=0).confidence_interval
    assert ours["auc_low"] == pytest.approx(ref.low, abs=0.01)
    assert ours["auc_high"] == pytest.approx(ref.high, abs=0.01)
    # DeLong's interval is the cross-check: close to the bootstrap's on 300 items.
    assert ours["delong_low"] == pytest.approx(ours["auc_low"], abs=0.015)
    assert ours["delong_high"] == pytest.approx(ours["auc_high"], abs=0.015)


def test_patient_resampling_draws_whole_patients() -> None:
    patients = ["p1", "p1", "p1", "p2", "p3", "p3", "p4"]
    plan = resample_plan(7, groups=patients, n_resamples=200, seed=0)
    counts = next(plan.blocks())
    assert plan.unit == "patient" and plan.n_groups == 4
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 1] == counts[:, 2]).all() and (counts[:, 4] == counts[:, 5]).all()
    # Four patients drawn per resample: the item counts add up to the drawn patients' studies.
    assert not (counts[:, 0] == counts[:, 3]).all()
    per_patient = counts[:, [0, 3, 4, 6]]
    assert (per_patient.sum(axis=1) == 4).all()
    # Five identical studies per patient are one patient's evidence: the grouped interval is wider.
    y, s = scored(60, 1.0, 5)
    y5, s5 = np.repeat(y, 5)[:, None], np.repeat(s, 5)[:, None]
    ids = np.repeat(np.arange(60), 5).tolist()
    grouped = auc_intervals(y5, s5, ["F"], groups=ids, n_resamples=500)["per_finding"]["F"]
    flat = auc_intervals(y5, s5, ["F"], n_resamples=500)["per_finding"]["F"]
    assert grouped["auc_high"] - grouped["auc_low"] > 1.8 * (flat["auc_high"] - flat["auc_low"])


def test_missing_patient_id_is_an_error_naming_the_items() -> None:
    with pytest.raises(ValueError, match=r"items \[1\] have no patient id"):
        resample_plan(3, groups=["a", None, "b"])


def test_one_class_finding_is_not_estimable_with_the_reason_never_nan() -> None:
    y = np.array([[0, 1], [0, 0], [0, 1], [0, 0]], dtype=float)
    s = np.array([[0.1, 0.9], [0.2, 0.1], [0.3, 0.8], [0.4, 0.3]])
    result = auc_intervals(y, s, ["Fracture", "Edema"], n_resamples=50)
    fracture = result["per_finding"]["Fracture"]
    assert fracture == {"n": 4, "positives": 0, "negatives": 4, "estimable": False, "reason": "not estimable: only negatives"}
    assert result["macro"]["n_findings"] == 1 and result["macro"]["auc"] == 1.0
    assert result["bootstrap"] | {"degenerate_resamples": 0} == {
        "method": "percentile", "level": 0.95, "n_resamples": 50, "seed": 0, "unit": "study", "n_units": 4,
        "degenerate_resamples": 0}
    assert "NaN" not in json.dumps(result)


# ---------------------------------------------------------------------------------------------- DeLong
def psi_components(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V10 and V01 straight from the definition (the m × n pair matrix), as in DeLong et al. (1988)."""
    x, z = s[y == 1], s[y == 0]
    psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def test_delong_by_hand_on_five_items() -> None:
    # Positives 0.9, 0.6, 0.4; negatives 0.5, 0.1. Pairs won: 0.9 (2), 0.6 (2), 0.4 (1 of 2) -> AUC 5/6.
    # V10 = [1, 1, 1/2] (variance 1/12), V01 = [2/3, 1] (variance 1/18); Var = (1/12)/3 + (1/18)/2 = 1/18.
    y = np.array([1, 1, 1, 0, 0])
    s = np.array([0.9, 0.6, 0.4, 0.5, 0.1])
    auc, se, low, high = delong_interval(y, s)
    assert auc == pytest.approx(5 / 6)
    assert se == pytest.approx(math.sqrt(1 / 18))
    assert low == pytest.approx(5 / 6 - 1.959964 * math.sqrt(1 / 18), abs=1e-6) and high == 1.0  # clipped at 1


def test_structural_components_match_the_pair_definition_with_ties() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 30)
    s = np.round(rng.normal(0, 1, 30) + y, 1)
    _, v10, v01 = structural_components(y, [s])
    ref10, ref01 = psi_components(y, s)
    np.testing.assert_allclose(v10[0], ref10)
    np.testing.assert_allclose(v01[0], ref01)


def test_paired_delong_matches_the_definition_covariance() -> None:
    y, a = scored(80, 1.0, 8)
    b = a + np.random.default_rng(9).normal(0, 0.7, 80)
    test = delong_paired_test(y, a, b)
    (a10, a01), (b10, b01) = psi_components(y, a), psi_components(y, b)
    m, n = a10.size, a01.size
    var = (np.var(b10 - a10, ddof=1) / m) + (np.var(b01 - a01, ddof=1) / n)
    assert test.se == pytest.approx(math.sqrt(var))
    assert test.difference == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))


# ---------------------------------------------------------------------------------------------- comparison
def test_holm_by_hand() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4 0.02, x3 0.03, x2 0.06, x1 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_a_better_model_by_construction_is_found_better() -> None:
    rng = np.random.default_rng(10)
    y = (rng.random((400, 3)) < 0.4).astype(float)
    weak, strong = y + rng.normal(0, 1.5, y.shape), y + rng.normal(0, 0.5, y.shape)
    for method in ("delong", "bootstrap"):
        result = compare_runs(y, {"weak": weak, "strong": strong}, ["A", "B", "C"], method=method, n_resamples=500)
        pair = result["pairs"][0]
        for finding in "ABC":
            row = pair["per_finding"][finding]
            assert row["difference"] > 0.1 and row["low"] > 0 and row["p_holm"] < 0.01
        assert pair["macro"]["difference"] > 0.1 and pair["macro"]["low"] > 0 and pair["macro"]["p_value"] < 0.01


def test_equal_models_are_not_found_different() -> None:
    rng = np.random.default_rng(11)
    y = (rng.random((300, 2)) < 0.4).astype(float)
    a, b = y + rng.normal(0, 1.0, y.shape), y + rng.normal(0, 1.0, y.shape)
    pair = compare_runs(y, {"a": a, "b": b}, ["A", "B"], n_resamples=500)["pairs"][0]
    assert all(pair["per_finding"][f]["p_value"] > 0.1 for f in "AB")
    assert pair["macro"]["p_value"] > 0.1 and pair["macro"]["low"] < 0 < pair["macro"]["high"]
    # The same ranking (a monotone transform) differs by exactly 0, p = 1.
    same = compare_runs(y, {"a": a, "a3": a ** 3}, ["A", "B"], n_resamples=100)["pairs"][0]
    assert all(same["per_finding"][f]["difference"] == 0 and same["per_finding"][f]["p_value"] == 1.0 for f in "AB")


def test_bootstrap_p_value_is_floored_by_the_resample_count() -> None:
    assert bootstrap_p_value(np.ones(99)) == pytest.approx(0.01)
    assert bootstrap_p_value(np.r_[-np.ones(50), np.ones(50)]) == 1.0


# ---------------------------------------------------------------------------------------------- operating points
@pytest.mark.parametrize("target", [0.9, 0.95, 0.8])
def test_thresholds_reach_their_target_sensitivity_on_the_tuning_items(target: float) -> None:
    y, s = scored(500, 1.0, 12)
    tuning = np.random.default_rng(13).random(500) < 0.5
    result = operating_points(y[:, None], 1 / (1 + np.exp(-s[:, None])), ["F"], "sensitivity", target, tuning=tuning)
    row = result["per_finding"]["F"]
    assert row["on_tuning"]["sensitivity"]["value"] >= target
    # The highest such threshold: one step higher and the target is missed.
    assert (row["on_tuning"]["sensitivity"]["k"] - 1) / row["on_tuning"]["sensitivity"]["n"] < target
    assert row["measured"]["sensitivity"]["n"] == int(y[~tuning].sum())  # measured on the other items only
    assert abs(row["measured"]["sensitivity"]["value"] - target) < 0.15  # ~100 held-out positives


def test_specificity_and_youden_rules() -> None:
    y, s = scored(300, 1.0, 14)
    t = choose_threshold(y, s, "specificity", 0.9)
    assert np.mean(s[y == 0] < t) >= 0.9 and np.mean(s[y == 0] < np.nextafter(t, -np.inf) - 1e-12) < 0.9 + 1e-9
    tj = choose_threshold(y, s, "youden")
    j = lambda t: np.mean(s[y == 1] >= t) + np.mean(s[y == 0] < t) - 1  # noqa: E731
    assert j(tj) == pytest.approx(max(j(v) for v in s))
    assert parse_rule("sensitivity=0.95") == ("sensitivity", 0.95) and parse_rule("youden") == ("youden", None)
    with pytest.raises(ValueError, match="must be one of"):
        parse_rule("sens=0.9")


def test_cross_fitting_measures_out_of_fold_and_keeps_patients_together() -> None:
    y, s = scored(200, 1.0, 15)
    patients = np.repeat(np.arange(100), 2)
    result = operating_points(y[:, None], 1 / (1 + np.exp(-s[:, None])), ["F"], "sensitivity", 0.9,
                              groups=patients.tolist(), n_folds=5)
    row = result["per_finding"]["F"]
    assert result["scheme"]["kind"] == "cross-fitting" and result["scheme"]["grouped_by"] == "patient"
    assert row["n_folds"] == 5 and len(row["fold_thresholds"]) == 5
    for name in ("sensitivity", "specificity", "ppv", "npv"):
        r = row["measured"][name]
        assert r["low"] <= r["value"] <= r["high"]
    assert row["on_tuning"]["sensitivity"]["value"] >= 0.9


@pytest.mark.parametrize("k,n,low,high", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
                                          (1, 29, 0.0061, 0.1718)])
def test_wilson_interval_matches_newcombes_published_values(k: int, n: int, low: float, high: float) -> None:
    # Newcombe, Statistics in Medicine 17:857-872 (1998), Table I, method 3 (Wilson score, no continuity correction).
    value, got_low, got_high = wilson_interval(k, n)
    assert value == k / n and got_low == pytest.approx(low, abs=1e-4) and got_high == pytest.approx(high, abs=1e-4)


def test_too_few_positives_to_cross_fit_is_not_estimable() -> None:
    y = np.zeros((20, 1))
    y[0] = 1
    result = operating_points(y, np.linspace(0, 1, 20)[:, None], ["Rare"], "youden")
    assert result["per_finding"]["Rare"]["threshold"] is None
    assert "too few to cross-fit" in result["per_finding"]["Rare"]["reason"]


# ---------------------------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
def test_recalibration_lowers_ece_on_a_miscalibrated_case(method: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(16)
    true_p = rng.beta(2, 5, 4000)
    y = (rng.random(4000) < true_p).astype(float)[:, None]
    logit = np.log(true_p) - np.log1p(-true_p)
    overconfident = (1 / (1 + np.exp(-3 * logit)))[:, None]
    fit, held = slice(0, 2000), slice(2000, None)
    document = fit_calibration(y[fit], overconfident[fit], ["F"], method)
    path = save_calibration(tmp_path / "calibration.json", ["F"], method, document["maps"])
    after = calibrate(load_calibration(path, ["F"]), overconfident[held])
    before_ece = expected_calibration_error(y[held, 0], overconfident[held, 0])
    after_ece = expected_calibration_error(y[held, 0], after[:, 0])
    assert after_ece < before_ece / 2
    summary = calibration_summary(y[held], after, ["F"])["F"]
    assert summary["ece"] == pytest.approx(after_ece) and summary["brier"] < np.mean((overconfident[held, 0] - y[held, 0]) ** 2)


def test_saved_isotonic_map_predicts_like_sklearn() -> None:
    rng = np.random.default_rng(17)
    p, y = rng.random(300), (rng.random(300) < 0.5).astype(float)
    document = fit_calibration(y[:, None], p[:, None], ["F"], "isotonic")
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    grid = np.linspace(-0.1, 1.1, 57)
    np.testing.assert_allclose(calibrate(document, grid[:, None])[:, 0], reference.predict(grid))


def test_ece_by_hand() -> None:
    # Bin [0.1, 0.2): p 0.1, 0.1, labels 0, 1 -> |1 - 0.2| = 0.8; bin [0.9, 1]: p 0.9, label 1 -> 0.1. ECE = 0.9 / 3.
    assert expected_calibration_error(np.array([0.0, 1.0, 1.0]), np.array([0.1, 0.1, 0.9])) == pytest.approx(0.3)


# ---------------------------------------------------------------------------------------------- decision files
def test_thresholds_file_round_trip_and_calls(tmp_path: Path) -> None:
    path = save_thresholds(tmp_path / "thresholds.json", ["A", "B", "C"], {"A": 0.5, "B": None, "C": 0.2}, rule="youden")
    document = load_thresholds(path, ["A", "B", "C"])
    assert calls([[0.6, 0.9, 0.1], [0.4, 0.1, 0.2]], threshold_vector(document)).tolist() == [[1, -1, 0], [0, -1, 1]]
    transform = ThresholdCallsd(thresholds_file=path, findings=["A", "B", "C"])
    assert transform({"pred": np.array([0.6, 0.9, 0.1])})["calls"].tolist() == [1, -1, 0]
    # No file at the default place: inference carries on without calls.
    assert "calls" not in ThresholdCallsd(thresholds_file=tmp_path / "none.json")({"pred": np.zeros(3)})


def test_thresholds_from_a_model_with_other_findings_are_refused(tmp_path: Path) -> None:
    path = save_thresholds(tmp_path / "thresholds.json", ["A", "B"], {"A": 0.5, "B": 0.5})
    with pytest.raises(DecisionFileError, match=r"thresholds.json: saved for findings \['A', 'B'\], but this model predicts \['A', 'C'\]"):
        ThresholdCallsd(thresholds_file=path, findings=["A", "C"])
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(DecisionFileError, match="bad.json: not a l2v-thresholds/1 file"):
        load_thresholds(tmp_path / "bad.json")


# ---------------------------------------------------------------------------------------------- subgroups
def test_subgroups_are_all_shown_and_small_ones_flagged() -> None:
    rng = np.random.default_rng(18)
    y = (rng.random((120, 2)) < 0.4).astype(float)
    s = y + rng.normal(0, 1, y.shape)
    items = [{"image": f"i{k}.png", "view": "PA" if k < 100 else "ap", "sex": "F" if k % 2 else "M"} for k in range(120)]
    metadata = check_metadata(items, ["view", "sex"])
    assert metadata["view"][100] == "AP"
    result = subgroup_aucs(y, s, ["A", "B"], metadata, n_resamples=100)
    assert set(result["view"]) == {"PA", "AP"} and set(result["sex"]) == {"F", "M"}
    assert result["view"]["AP"]["n_items"] == 20 and result["view"]["AP"]["small"]
    assert not result["view"]["PA"]["small"]


def test_unexpected_metadata_values_name_the_item() -> None:
    items = [{"image": "a.png", "sex": "F"}, {"image": "b.png", "sex": "female"}]
    with pytest.raises(ValueError, match=r"hand.json: item 1 \(b.png\) has sex = 'female', which must be F, M or O"):
        check_metadata(items, ["sex"], source="hand.json")
    with pytest.raises(ValueError, match="age_band = '40 to 49'"):
        check_metadata([{"image": "c.png", "age_band": "40 to 49"}], ["age_band"])
