"""Simulated annotators: the paper's confusion matrices, the noise knob, and seeded label draws."""

from __future__ import annotations

import numpy as np
import pytest

from l2v_monai.experiments.annotators import (
    ANNOTATORS,
    confusion_matrix,
    noise_level,
    one_hot_label_sets,
    rescale_noise,
    simulate_labels,
)

K = 10
SWEEP = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
TUNABLE = ["HS", "SF", "OC", "AVG"]


def _balanced(per_class: int) -> np.ndarray:
    return np.repeat(np.arange(K), per_class)


@pytest.mark.parametrize("name", ANNOTATORS)
def test_matrices_are_row_stochastic(name: str) -> None:
    a = confusion_matrix(name)
    assert a.shape == (K, K)
    assert (a >= 0).all()
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)


def test_paper_noise_levels() -> None:
    levels = {name: noise_level(confusion_matrix(name)) for name in ANNOTATORS}
    assert levels == pytest.approx({"HS": 0.3, "SF": 0.4, "OC": 0.5, "AD": 1.0, "AVG": 0.55})


def test_matrix_entries_follow_the_table() -> None:
    hs = confusion_matrix("HS")
    assert hs[3, 3] == pytest.approx(0.7) and hs[3, 7] == pytest.approx(0.3 / 9)
    sf = confusion_matrix("SF")
    assert sf[0, 2] == pytest.approx(0.3) and sf[1, 9] == pytest.approx(0.4) and sf[6, 6] == 1.0
    assert sf[5].tolist() == pytest.approx([0, 0, 0, 0.3, 0.2, 0.5, 0, 0, 0, 0])
    oc = confusion_matrix("OC")
    assert oc[8].tolist() == pytest.approx([0.1, 0.1, 0, 0, 0, 0, 0, 0, 0.5, 0.3])  # wraps mod 10
    np.testing.assert_array_equal(confusion_matrix("AD"), np.eye(K)[::-1])
    four = [confusion_matrix(n) for n in ("HS", "SF", "OC", "AD")]
    np.testing.assert_allclose(confusion_matrix("AVG"), np.mean(four, axis=0))


def test_empirical_confusion_matches_each_matrix() -> None:
    per_class = 20_000
    true = _balanced(per_class)
    labels = simulate_labels(true, seed=3)
    for j, name in enumerate(ANNOTATORS):
        a = confusion_matrix(name)
        counts = np.zeros((K, K))
        np.add.at(counts, (true, labels[:, j]), 1)
        freq = counts / per_class
        # 4 standard errors of a binomial proportion; the floor covers entries with p = 0 or 1.
        tol = 4 * np.sqrt(a * (1 - a) / per_class) + 1e-9
        assert (np.abs(freq - a) <= tol).all(), name


@pytest.mark.parametrize("name", TUNABLE)
@pytest.mark.parametrize("noise", SWEEP)
def test_rescaling_hits_the_target_noise(name: str, noise: float) -> None:
    a = confusion_matrix(name, noise=noise)
    assert (a >= 0).all()
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
    assert noise_level(a) == pytest.approx(noise, abs=1e-12)


@pytest.mark.parametrize("noise", [0.1, 0.5, 0.8])
def test_empirical_noise_of_rescaled_annotators(noise: float) -> None:
    per_class = 10_000
    true = _balanced(per_class)
    labels = simulate_labels(true, TUNABLE, noise=noise, seed=1)
    empirical = (labels != true[:, None]).mean(axis=0)
    tol = 4 * np.sqrt(noise * (1 - noise) / len(true))
    np.testing.assert_allclose(empirical, noise, atol=tol)


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.8, 1.0])
def test_noise_knob_leaves_adversary_fixed(noise: float) -> None:
    np.testing.assert_array_equal(confusion_matrix("AD", noise=noise), confusion_matrix("AD"))


def test_rescaling_path_endpoints_and_shape() -> None:
    sf = confusion_matrix("SF")
    np.testing.assert_allclose(rescale_noise(sf, 0.0), np.eye(K))
    np.testing.assert_allclose(rescale_noise(sf, 0.4), sf)
    # Below the annotator's own level the off-diagonal confusions shrink in proportion.
    off = ~np.eye(K, dtype=bool)
    np.testing.assert_allclose(rescale_noise(sf, 0.1)[off], 0.25 * sf[off])
    # Above it, extra mass goes onto classes already confused; SF's perfect class 6 spreads uniformly.
    high = rescale_noise(sf, 0.8)
    assert high[0, 1] == 0 and high[0, 2] > sf[0, 2]
    t = (0.8 - 0.4) / 0.6
    np.testing.assert_allclose(high[6, [0, 5, 9]], t / 9)
    full = rescale_noise(sf, 1.0)
    np.testing.assert_allclose(np.diag(full), 0.0, atol=1e-12)


def test_bad_requests_raise() -> None:
    with pytest.raises(ValueError, match="unknown annotator 'XX'"):
        confusion_matrix("XX")
    with pytest.raises(ValueError, match="noise must lie in"):
        confusion_matrix("HS", noise=1.2)
    with pytest.raises(ValueError, match="noise must lie in"):
        confusion_matrix("AD", noise=-0.1)  # checked even where the knob does not apply
    with pytest.raises(ValueError, match="SF annotator is defined for 10 classes"):
        confusion_matrix("AVG", num_classes=5)
    with pytest.raises(ValueError, match="OC annotator needs more than 3"):
        confusion_matrix("OC", num_classes=3)
    assert confusion_matrix("HS", num_classes=4)[0].tolist() == pytest.approx([0.7, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="rows that sum to 1"):
        rescale_noise(np.full((3, 3), 0.5), 0.2)


def test_simulate_is_seeded_and_keeps_subsets_and_order() -> None:
    true = np.random.default_rng(0).integers(0, K, 500)
    full = simulate_labels(true, seed=7)
    assert full.shape == (500, 5) and full.dtype == np.int64
    np.testing.assert_array_equal(full, simulate_labels(true, seed=7))
    assert (full != simulate_labels(true, seed=8)).any()
    # An annotator's labels do not depend on which others are simulated, and the order is the caller's.
    pair = simulate_labels(true, ["AD", "HS"], seed=7)
    np.testing.assert_array_equal(pair, full[:, [3, 0]])
    np.testing.assert_array_equal(pair[:, 0], K - 1 - true)


def test_simulate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"integers in \[0, 10\)"):
        simulate_labels(np.array([0, 10]))
    with pytest.raises(ValueError, match="1-D"):
        simulate_labels(np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="must not repeat"):
        simulate_labels(np.array([1, 2]), ["HS", "HS"])
    with pytest.raises(ValueError, match="unknown annotator"):
        simulate_labels(np.array([1, 2]), ["HS", "nope"])


def test_one_hot_label_sets() -> None:
    labels = np.array([[0, 9, 3], [2, 2, 1]])
    sets = one_hot_label_sets(labels, K)
    assert sets.shape == (2, 3, K) and sets.dtype == np.float32
    np.testing.assert_array_equal(sets.sum(axis=2), 1.0)
    np.testing.assert_array_equal(sets.argmax(axis=2), labels)
    with pytest.raises(ValueError, match=r"integers in \[0, 10\)"):
        one_hot_label_sets(np.array([[0, 10]]), K)
