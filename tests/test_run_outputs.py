"""A trained run's view of its training items: the vote's weights and refined labels, the model's probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiny_nets import TinyNet

from l2v_monai.engine.run_outputs import item_batches, parse_overrides, vote_outputs
from l2v_monai.strategies import attach_targets, build_strategy


def _items(n: int = 10, sets: int = 3, findings: int = 2, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, sets, findings)).astype(np.float32)
    labels[0, 1, 0] = np.nan  # one set silent on one entry
    labels[1, :, 1] = np.nan  # no set labels this entry
    labels[2, :2, 0] = np.nan  # only the third set labels this one
    return [{"image": torch.from_numpy(rng.random((1, 8, 8), dtype=np.float32)), "labels": torch.from_numpy(labels[i])}
            for i in range(n)]


def test_vote_outputs_weights_renormalise_over_the_sets_that_label() -> None:
    torch.manual_seed(0)
    net = TinyNet(num_outputs=2)
    strategy = build_strategy("l2v", num_sets=3, num_outputs=2, feature_dim=net.num_features)
    items = attach_targets(_items(), strategy)
    out = vote_outputs(strategy, net, item_batches(items, batch_size=4))
    labels = np.stack([it["labels"].numpy() for it in items])
    assert out.vote.shape == out.model.shape == (10, 2) and out.weights.shape == (10, 3, 2)
    known = ~np.isnan(labels)
    np.testing.assert_array_equal(np.isnan(out.weights), ~known)
    sums = np.nansum(out.weights, axis=1)
    np.testing.assert_allclose(sums[known.any(1)], 1.0, rtol=1e-5)
    assert out.weights[2, 2, 0] == pytest.approx(1.0)  # the only set that labels it
    # ȳ is the weighted vote of the sets that label the entry; NaN where none does.
    np.testing.assert_allclose(np.nansum(out.weights * labels, axis=1)[known.any(1)], out.vote[known.any(1)], rtol=1e-5)
    assert np.isnan(out.vote[1, 1]) and np.isnan(out.vote).sum() == 1
    assert ((out.model > 0) & (out.model < 1)).all()
    assert net.training  # the network's mode is restored


def test_a_strategy_that_does_not_vote_gives_its_target_and_no_weights() -> None:
    net = TinyNet(num_outputs=2)
    strategy = build_strategy("majority", num_sets=3, num_outputs=2, feature_dim=net.num_features, options={"majority": {"ties": "nan"}})
    out = vote_outputs(strategy, net, item_batches(_items(), batch_size=4))
    assert out.weights is None and out.vote.shape == (10, 2)


def test_parse_overrides_reads_json_values_and_plain_strings() -> None:
    assert parse_overrides(["image_size=64", "dataset_dir=/data/x", "label_sets=[\"a\",\"b\"]", "amp=false"]) == {
        "image_size": 64, "dataset_dir": "/data/x", "label_sets": ["a", "b"], "amp": False}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["image_size"])
