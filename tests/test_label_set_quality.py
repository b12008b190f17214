"""The label-set quality report: Dawid–Skene estimates, Wilson intervals, disagreement, outputs, bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from l2v_monai.quality.label_set_estimates import (
    CSV_COLUMNS,
    disagreement,
    estimate_error,
    estimate_quality,
    markdown_report,
    posterior_quality,
    quality_inputs_from_datalist,
    quality_report,
    wilson_interval,
    write_report,
)
from l2v_monai.labelers.against_truth import finding_quality

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "openi-reports" / "NLMCXR_reports.tgz"
from l2v_monai.cli import quality_report as script

# Per finding: prevalence, then (sensitivity, specificity) of each of four sets.
KNOWN = {
    "A": (0.30, [(0.90, 0.95), (0.70, 0.99), (0.80, 0.85), (0.95, 0.90)]),
    "B": (0.10, [(0.60, 0.98), (0.85, 0.97), (0.75, 0.995), (0.90, 0.92)]),
}


def simulate(n: int = 4000, seed: int = 0, missing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded sets (S × 4 × 2) that err independently given the truth (S × 2) with the KNOWN rates."""
    rng = np.random.default_rng(seed)
    truth = np.stack([(rng.random(n) < prevalence).astype(float) for prevalence, _ in KNOWN.values()], axis=1)
    labels = np.zeros((n, 4, len(KNOWN)))
    for j, (_, rates) in enumerate(KNOWN.values()):
        for k, (sens, spec) in enumerate(rates):
            r = rng.random(n)
            labels[:, k, j] = np.where(truth[:, j] == 1, r < sens, r >= spec)
    labels[rng.random(labels.shape) < missing] = np.nan
    return labels, truth


# --- Wilson intervals -----------------------------------------------------------------------------
def test_wilson_interval_matches_hand_computed_values() -> None:
    # 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71674, half 1.41602 * sqrt(0.016 + 0.009604) = 0.22658.
    low, high = wilson_interval(8, 10, z=1.96)
    assert low == pytest.approx(0.71674 - 0.22658, abs=1e-4) and high == pytest.approx(0.71674 + 0.22658, abs=1e-4)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    # All or none: the interval touches 0 or 1; its other end is z² / (n + z²) from it.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 1.959964**2 / (10 + 1.959964**2)), abs=1e-6)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(10, 10)[0] == pytest.approx(0.72246, abs=1e-5)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0 <= successes <= trials"):
        wilson_interval(11, 10)


# --- Dawid–Skene estimates ------------------------------------------------------------------------
def test_dawid_skene_recovers_known_sensitivity_specificity_and_prevalence() -> None:
    labels, truth = simulate(n=4000, seed=0, missing=0.1)
    fit = estimate_quality(labels)
    for j, (prevalence, rates) in enumerate(KNOWN.values()):
        assert fit.prevalence[j] == pytest.approx(prevalence, abs=0.02)
        for k, (sens, spec) in enumerate(rates):
            said = labels[:, k, j]
            realised = finding_quality(np.nan_to_num(said), np.where(np.isnan(said), np.nan, truth[:, j]))
            # Against the rates this sample realised, Dawid–Skene's own error is small (≤ 0.02 over seeds 0-5) ...
            assert fit.sensitivity[k, j] == pytest.approx(realised["sensitivity"], abs=0.025), (j, k)
            assert fit.specificity[k, j] == pytest.approx(realised["specificity"], abs=0.025), (j, k)
            # ... and against the generating rates it stays within three binomial standard errors.
            for estimate, rate, trials in ((fit.sensitivity[k, j], sens, realised["positives"]),
                                           (fit.specificity[k, j], spec, realised["negatives"])):
                assert abs(estimate - rate) <= 3 * math.sqrt(rate * (1 - rate) / trials) + 0.01, (j, k, estimate, rate)
    assert fit.posterior.shape == (4000, 2) and np.nanmin(fit.posterior) >= 0 and np.nanmax(fit.posterior) <= 1


def test_one_class_findings_and_absent_sets_give_defined_rates_or_nan() -> None:
    labels = np.zeros((6, 3, 2))
    labels[:, 2, :] = np.nan  # set 2 labels nothing
    labels[:, :2, 1] = 1.0  # finding 1: every label is 1
    fit = estimate_quality(labels)
    assert fit.prevalence.tolist() == [0.0, 1.0]
    assert fit.specificity[:2, 0].tolist() == [1.0, 1.0] and np.isnan(fit.sensitivity[:2, 0]).all()
    assert fit.sensitivity[:2, 1].tolist() == [1.0, 1.0] and np.isnan(fit.specificity[:2, 1]).all()
    assert np.isnan(fit.sensitivity[2]).all() and np.isnan(fit.specificity[2]).all()


def test_posterior_quality_with_the_truth_as_posterior_is_the_measured_value() -> None:
    labels, truth = simulate(n=500, seed=1, missing=0.2)
    sens, spec = posterior_quality(labels, truth, np.ones_like(truth, dtype=bool))
    for k in range(4):
        for j in range(2):
            said = labels[:, k, j]
            measured = finding_quality(np.nan_to_num(said), np.where(np.isnan(said), np.nan, truth[:, j]))
            assert sens[k, j] == pytest.approx(measured["sensitivity"])
            assert spec[k, j] == pytest.approx(measured["specificity"])


# --- disagreement -------------------------------------------------------------------------------
def test_disagreement_per_finding_and_pairs_ignores_missing_labels() -> None:
    nan = np.nan
    labels = np.array([
        [[1, 0], [1, 0], [0, nan]],  # finding 0: set 2 differs; finding 1: sets 0, 1 agree
        [[0, 1], [0, nan], [0, nan]],  # all agree; finding 1 has one label only (not compared)
        [[1, 1], [0, 0], [1, nan]],  # finding 0: set 1 differs; finding 1: differ
        [[0, 0], [0, 0], [0, 0]],
    ])
    out = disagreement(labels, ["a", "b", "c"], ["F0", "F1"])
    assert out["any_finding"] == pytest.approx(2 / 4)
    f0, f1 = out["findings"]["F0"], out["findings"]["F1"]
    assert (f0["items"], f0["fraction"]) == (4, 0.5)
    assert (f1["items"], f1["fraction"]) == (3, pytest.approx(1 / 3))
    rates = {tuple(p["sets"]): (p["items"], p["fraction"]) for p in f0["pairs"]}
    assert rates == {("a", "b"): (4, 0.25), ("a", "c"): (4, 0.25), ("b", "c"): (4, 0.5)}
    assert f0["pairs"][0]["sets"] == ["b", "c"]  # most-disagreeing first
    assert {tuple(p["sets"]): p["items"] for p in f1["pairs"]} == {("a", "b"): 3, ("a", "c"): 1, ("b", "c"): 1}


# --- the report -----------------------------------------------------------------------------------
def test_report_counts_intervals_and_error() -> None:
    labels, truth = simulate(n=3000, seed=2)
    hand = truth.copy()
    hand[600:] = np.nan  # 600 hand-labelled items
    report = quality_report(labels, ["s0", "s1", "s2", "s3"], ["A", "B"], hand, min_positives=100)
    assert len(report["rows"]) == 8 and report["truth"] == "hand labels"
    row = next(r for r in report["rows"] if (r["label_set"], r["finding"]) == ("s1", "A"))
    positives = int((hand[:, 0] == 1).sum())
    tp = int(((labels[:600, 1, 0] == 1) & (truth[:600, 0] == 1)).sum())
    assert (row["hand_positives"], row["true_positives"]) == (positives, tp)
    assert (row["sensitivity_low"], row["sensitivity_high"]) == pytest.approx(wilson_interval(tp, positives))
    assert row["sensitivity_inside"] == (row["sensitivity_low"] <= row["est_sensitivity"] <= row["sensitivity_high"])
    # B has about 60 positives among the 600: below min_positives, so only A enters the error.
    assert report["error"]["findings"] == ["A"]
    error = report["error"]["overall"]
    assert error["pairs"] == 8 and error["mae"] < 0.05
    assert error["mae"] == pytest.approx(np.mean([abs(r[f"est_{m}"] - r[m]) for r in report["rows"] if r["finding"] == "A"
                                                  for m in ("sensitivity", "specificity")]))
    assert estimate_error(report, ["A", "B"])["overall"]["pairs"] == 16
    # The estimates of sets that err independently mostly lie inside the 95 % intervals.
    assert error["inside_ci"] >= 6


def test_write_report_writes_markdown_csv_png_and_json(tmp_path: Path) -> None:
    labels, truth = simulate(n=400, seed=3, missing=0.05)
    report = quality_report(labels, ["s0", "s1", "s2", "s3"], ["A", "B"], truth)
    paths = write_report(report, tmp_path / "sub" / "q", "Test", "l2v-quality --datalist x.json")
    assert sorted(paths) == ["csv", "json", "md", "png"]
    markdown = paths["md"].read_text()
    assert "## Estimated from the label sets alone" in markdown and "## Estimates against hand labels" in markdown
    assert "l2v-quality --datalist x.json" in markdown
    with open(paths["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 8
    assert {r["label_set"] for r in rows} == {"s0", "s1", "s2", "s3"} and float(rows[0]["est_sensitivity"]) > 0.5
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = json.loads(paths["json"].read_text())  # allow_nan=False on writing: no NaN tokens
    assert document["command"].startswith("l2v-quality") and len(document["rows"]) == 8


def test_the_vote_gives_a_second_estimate_and_its_weights() -> None:
    """With the truth as the vote's refined labels, the vote's estimates are the measured values; the
    mean weight counts only entries at least two sets label, and bad shapes are refused."""
    labels, truth = simulate(n=1500, seed=5, missing=0.1)
    sets = ["s0", "s1", "s2", "s3"]
    weights = np.where(np.isnan(labels), np.nan, 0.1)
    weights[:, 0, :] = np.where(np.isnan(labels[:, 0, :]), np.nan, 0.7)  # the vote trusts s0 most
    weights = weights / np.nansum(weights, axis=1, keepdims=True)
    weights[0] = np.nan
    weights[0, 2, 0] = 1.0  # item 0, finding A: only s2 labels it, so its weight of 1 must not count
    labels[0, :, 0] = np.nan
    labels[0, 2, 0] = 1.0
    report = quality_report(labels, sets, ["A", "B"], truth, min_positives=50, vote=truth, vote_weights=weights)
    for r in report["rows"]:
        k, j = sets.index(r["label_set"]), ["A", "B"].index(r["finding"])
        known = ~np.isnan(labels[:, k, j])
        said, real = labels[known, k, j], truth[known, j]
        assert r["est_sensitivity_vote"] == pytest.approx(said[real == 1].mean())
        assert r["est_specificity_vote"] == pytest.approx(1 - said[real == 0].mean())
        contested = (~np.isnan(labels[:, :, j])).sum(1) >= 2
        assert r["vote_weight"] == pytest.approx(np.nanmean(weights[contested & known, k, j]))
    assert report["error_vote"]["overall"]["mae"] == pytest.approx(0.0, abs=1e-12)
    assert report["vote"]["prevalence"]["A"] == pytest.approx(truth[:, 0].mean())
    s0 = next(r for r in report["rows"] if (r["label_set"], r["finding"]) == ("s0", "A"))
    assert s0["vote_weight"] > 0.6
    markdown = markdown_report(report)
    assert "## Estimated from the trained run's vote" in markdown and "(1/4 = no preference)" in markdown
    with pytest.raises(ValueError, match="expected 1500 items × 2 findings"):
        quality_report(labels, sets, ["A", "B"], vote=truth[:10])
    with pytest.raises(ValueError, match="expected 1500 items × 4 sets × 2 findings"):
        quality_report(labels, sets, ["A", "B"], vote=truth, vote_weights=weights[:, :2])
    with pytest.raises(ValueError, match="need the vote's refined labels"):
        quality_report(labels, sets, ["A", "B"], vote_weights=weights)
    # Without a run nothing about a vote appears.
    plain = quality_report(labels, sets, ["A", "B"])
    assert plain["vote"] is None and all(r["est_sensitivity_vote"] is None for r in plain["rows"])


# --- datalists and the script --------------------------------------------------------------------
def _datalist(path: Path, n: int = 300, seed: int = 4, hand_every: int = 3, **override) -> Path:
    labels, truth = simulate(n=n, seed=seed, missing=0.05)
    items = []
    for i in range(n):
        item = {"image": f"img/{i}.png", "labels": [[None if math.isnan(x) else int(x) for x in row] for row in labels[i]]}
        if hand_every and i % hand_every == 0:
            item["label"] = [int(x) for x in truth[i]]
        items.append(item)
    document = {"findings": ["A", "B"], "label_sets": ["s0", "s1", "s2", "s3"], "training": items, **override}
    path.write_text(json.dumps(document))
    return path


def test_script_on_a_datalist_with_hand_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datalist = _datalist(tmp_path / "d.json")
    assert script.main(["--datalist", str(datalist), "--out", str(tmp_path / "out" / "q"), "--min-positives", "5"]) == 0
    assert "estimate vs hand labels" in capsys.readouterr().out
    document = json.loads((tmp_path / "out" / "q.json").read_text())
    assert document["items"] == 300 and document["error"]["findings"] == ["A", "B"]
    assert all(r["hand_positives"] + r["hand_negatives"] <= 100 for r in document["rows"])
    # --sets picks label sets by name, in that order.
    labels, names, findings, hand = quality_inputs_from_datalist(datalist, label_sets=["s2", "s0"])
    assert names == ["s2", "s0"] and labels.shape == (300, 2, 2) and hand is not None


def test_hand_labels_from_clean_class_index_and_from_a_second_datalist(tmp_path: Path) -> None:
    datalist = _datalist(tmp_path / "d.json", n=30, hand_every=0)
    document = json.loads(datalist.read_text())
    document["training"][0]["clean"] = 1  # a class index (multi-class data): one-hot over the findings
    datalist.write_text(json.dumps(document))
    _, _, _, hand = quality_inputs_from_datalist(datalist)
    assert hand[0].tolist() == [0.0, 1.0] and np.isnan(hand[1:]).all()
    second = tmp_path / "hand.json"
    second.write_text(json.dumps({"findings": ["A", "B"], "label_sets": [],
                                  "test": [{"image": "img/5.png", "label": [1, None]}]}))
    _, _, _, hand = quality_inputs_from_datalist(datalist, hand_datalist=second)
    assert hand[5, 0] == 1.0 and np.isnan(hand[5, 1]) and hand[0].tolist() == [0.0, 1.0]


def test_no_hand_labels_gives_estimates_only(tmp_path: Path) -> None:
    datalist = _datalist(tmp_path / "d.json", n=60, hand_every=0)
    assert script.main(["--datalist", str(datalist), "--out", str(tmp_path / "q")]) == 0
    document = json.loads((tmp_path / "q.json").read_text())
    assert document["truth"] is None and "error" not in document
    assert all(r["sensitivity"] is None and r["est_sensitivity"] is not None for r in document["rows"])


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        script.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_bad_input_errors_name_the_file_and_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "q")]
    missing = tmp_path / "nope.json"
    assert str(missing) in _error(capsys, ["--datalist", str(missing), *out])

    no_sets = _datalist(tmp_path / "no_sets.json", n=10, label_sets=[])
    message = _error(capsys, ["--datalist", str(no_sets), *out])
    assert str(no_sets) in message and "label_sets" in message

    shapes = _datalist(tmp_path / "shapes.json", n=10)
    document = json.loads(shapes.read_text())
    document["training"][3]["labels"] = [[1, 0], [0, 1]]  # 2 sets instead of 4
    document["training"][7]["labels"][0][1] = 2  # not a label
    shapes.write_text(json.dumps(document))
    message = _error(capsys, ["--datalist", str(shapes), *out])
    assert str(shapes) in message and "training[3] (image" in message and "training[7] (image" in message
    assert "2 × 2, expected 4 × 2" in message and "s0/B" in message

    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps({"findings": ["A", "B"], "label_sets": [], "test": [{"image": "elsewhere.png", "label": [1, 0]}]}))
    message = _error(capsys, ["--datalist", str(_datalist(tmp_path / "ok.json", n=10)), "--hand-datalist", str(hand), *out])
    assert str(hand) in message and "test[0] (image" in message and "not among" in message

    bad_hand = _datalist(tmp_path / "bad_hand.json", n=10)
    document = json.loads(bad_hand.read_text())
    document["training"][6]["label"] = [1]
    bad_hand.write_text(json.dumps(document))
    message = _error(capsys, ["--datalist", str(bad_hand), *out])
    assert str(bad_hand) in message and "training[6]" in message and "'label'" in message

    assert "give --datalist" in _error(capsys, out)
    assert "--label-sets" in _error(capsys, ["--report-testbed", "--reports", "x.tgz", *out])


@pytest.mark.skipif(not ARCHIVE.is_file(), reason="needs the OpenI report archive")
def test_report_testbed_mode_on_saved_label_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from l2v_monai.labelers.openi_corpus import load_openi_corpus, write_label_sets

    # Seeded noisy copies of MeSH stand in for the labelers here (labelling every report takes minutes).
    corpus = load_openi_corpus(ARCHIVE, label_source="synthetic", seed=0)
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    write_label_sets(first, corpus.texts, corpus.label_sets[:, :2], corpus.set_names[:2])
    write_label_sets(second, corpus.texts, corpus.label_sets[:, 2:], corpus.set_names[2:])
    out = tmp_path / "openi"
    assert script.main(["--report-testbed", "--reports", str(ARCHIVE), "--label-sets", str(first), str(second),
                        "--out", str(out)]) == 0
    assert "estimate vs MeSH" in capsys.readouterr().out
    document = json.loads(out.with_suffix(".json").read_text())
    assert document["items"] == len(corpus.texts) and document["label_sets"] == corpus.set_names
    assert set(document["testbed"]["per_file"]) == {"a.npz", "b.npz"}
    assert "## Where the error comes from" in out.with_suffix(".md").read_text()

    assert "already in an earlier file" in _error(
        capsys, ["--report-testbed", "--reports", str(ARCHIVE), "--label-sets", str(first), str(first), "--out", str(out)])
    assert str(tmp_path / "none.npz") in _error(
        capsys, ["--report-testbed", "--reports", str(ARCHIVE), "--label-sets", str(tmp_path / "none.npz"), "--out", str(out)])
    other = tmp_path / "other.npz"
    write_label_sets(other, corpus.texts[:-1], corpus.label_sets[:-1, :2], ["x_u0", "x_u1"])
    assert str(other) in _error(
        capsys, ["--report-testbed", "--reports", str(ARCHIVE), "--label-sets", str(first), str(other), "--out", str(out)])
