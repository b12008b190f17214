"""The posterior vote: learned confusion tables, the model's prediction as a voter, and what it must get right."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from l2v_monai.strategies import PosteriorVote
from l2v_monai.strategies import vote as v
from tiny_nets import report_like_sets


def _independent_binary_sets(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One finding, three sets erring independently with known sensitivity and specificity."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n) < 0.4).astype(np.float32)
    sens, spec = np.array([0.9, 0.7, 0.6]), np.array([0.95, 0.8, 0.9])
    says_one = np.where(truth[:, None] == 1, rng.random((n, 3)) < sens, rng.random((n, 3)) > spec)
    return says_one.astype(np.float32)[:, :, None], truth, sens, spec


def test_joint_answers_encode_each_tuple_of_set_answers_once() -> None:
    labels = torch.tensor([[[0.0], [1.0]], [[1.0], [float("nan")]], [[float("nan")], [float("nan")]], [[0.2], [0.7]]])
    given, mask = v.joint_answers(labels)
    assert given.shape == (4, 1, 1, 9)
    # Code = Σ_m 3^m · (0 missing, 1 says 0, 2 says 1); a soft label is cut at 0.5.
    assert given[:, 0, 0].argmax(dim=-1).tolist() == [1 + 3 * 2, 2 + 0, 0, 1 + 3 * 2]
    assert mask[:, 0, 0].tolist() == [1.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="independent"):
        v.joint_answers(torch.zeros(2, v.MAX_JOINT_SETS + 1, 1))


def test_set_log_likelihood_is_the_sum_of_each_present_sets_log_rate() -> None:
    labels = torch.tensor([[[1.0], [0.0], [float("nan")]]])
    given, mask = v.given_distributions(labels, multiclass=False)
    counts = torch.tensor([[[[8.0, 2.0], [1.0, 9.0]], [[6.0, 4.0], [3.0, 7.0]], [[5.0, 5.0], [5.0, 5.0]]]])
    rates = v.log_rates(counts, smoothing=0.0)
    assert torch.allclose(rates.exp().sum(dim=-1), torch.ones(1, 3, 2))
    got = v.set_log_likelihood(given, mask, rates)[0, 0]
    # Set 0 says 1, set 1 says 0, set 2 says nothing: P(1 | k) · P(0 | k) per true class k.
    expected = torch.log(torch.tensor([0.2 * 0.6, 0.9 * 0.3]))
    assert torch.allclose(got, expected, atol=1e-6)


def test_online_counts_recover_each_sets_sensitivity_and_specificity() -> None:
    """With no model vote (a long warm-up), the online M-steps are Dawid–Skene: a broken E- or M-step misses these rates."""
    labels, _, sens, spec = _independent_binary_sets(6000)
    strategy = PosteriorVote(num_sets=3, num_outputs=1, sets="independent", warmup_epochs=100.0)
    strategy.aggregate(labels)
    logits = torch.zeros(200, 1)
    for _ in range(12):  # online EM moves one M-step per epoch
        for start in range(0, len(labels), 200):
            strategy({"labels": torch.from_numpy(labels[start:start + 200])}, logits, None, None)
    rates = v.log_rates(strategy.counts, strategy.smoothing).exp()[0]
    assert np.allclose(rates[:, 1, 1].numpy(), sens, atol=0.03)
    assert np.allclose(rates[:, 0, 0].numpy(), spec, atol=0.03)
    assert strategy.seen.item() == 12 * len(labels)


def test_the_models_prediction_settles_what_the_sets_leave_open() -> None:
    """Two equally reliable sets that disagree: only the picture can say which is right, and after the warm-up it does."""
    rng = np.random.default_rng(1)
    truth = (rng.random(400) < 0.5).astype(np.float32)
    flip = rng.random((400, 2)) < 0.2
    labels = np.where(flip, 1 - truth[:, None], truth[:, None]).astype(np.float32)[:, :, None]
    strategy = PosteriorVote(num_sets=2, num_outputs=1, sets="independent", warmup_epochs=0.0, min_confidence=0.0)
    strategy.aggregate(labels)
    strategy.eval()  # no count updates: only the vote itself is under test
    confident_truth = torch.from_numpy(6.0 * (2 * truth - 1))[:, None]
    out = strategy({"labels": torch.from_numpy(labels)}, confident_truth, None, None)
    contested = labels[:, 0, 0] != labels[:, 1, 0]
    assert contested.sum() > 50
    decided = (out.target[:, 0].numpy() >= 0.5) == (truth == 1)
    assert decided[contested].mean() > 0.95
    # Where both sets agree their likelihood still counts: a model that says the opposite does not overturn it alone.
    agree = ~contested
    assert ((out.target[:, 0].numpy() >= 0.5) == (truth == 1))[agree].mean() > 0.9


def test_hand_labels_win_and_train_the_model_even_where_the_vote_is_unsure() -> None:
    sets, _ = report_like_sets(32)
    strategy = PosteriorVote(num_sets=4, num_outputs=2, min_confidence=1.0)
    strategy.aggregate(sets)
    hand = torch.full((32, 2), float("nan"))
    hand[:4, 0] = torch.tensor([1.0, 0.0, 1.0, 0.0])
    logits = torch.zeros(32, 2, requires_grad=True)
    out = strategy({"labels": torch.from_numpy(sets), "label": hand}, logits, None, None)
    assert out.target[:4, 0].tolist() == [1.0, 0.0, 1.0, 0.0]
    out.loss.backward()
    # min_confidence=1 leaves no vote entry confident: only the hand-labelled entries carry a gradient.
    assert logits.grad[:4, 0].abs().min() > 0
    assert logits.grad[4:].abs().max() == 0


def test_state_round_trips_through_a_checkpoint() -> None:
    labels, _, _, _ = _independent_binary_sets(500)
    a = PosteriorVote(num_sets=3, num_outputs=1)
    a.aggregate(labels)
    batch = {"labels": torch.from_numpy(labels[:100])}
    a(batch, torch.zeros(100, 1), None, None)
    b = PosteriorVote(num_sets=3, num_outputs=1)
    b.aggregate(labels)  # a resumed run fits again, then loads the checkpoint over it
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    logits = torch.randn(100, 1)
    assert torch.equal(a(batch, logits, None, None).target, b(batch, logits, None, None).target)
    assert a.seen.item() == b.seen.item() == 100


def test_bad_options_and_a_missing_fit_are_named() -> None:
    with pytest.raises(ValueError, match="joint"):
        PosteriorVote(num_sets=2, num_outputs=3, multiclass=True, sets="joint")
    with pytest.raises(ValueError, match="refined"):
        PosteriorVote(num_sets=2, num_outputs=1, refined="mixed")
    with pytest.raises(ValueError, match="min_confidence"):
        PosteriorVote(num_sets=2, num_outputs=1, min_confidence=1.5)
    with pytest.raises(ValueError, match="shrinkage"):
        PosteriorVote(num_sets=2, num_outputs=1, shrinkage=0.0)
    with pytest.raises(RuntimeError, match="attach_targets"):
        PosteriorVote(num_sets=2, num_outputs=1)({"labels": torch.zeros(2, 2, 1)}, torch.zeros(2, 1), None, None)


def test_a_nan_prediction_leaves_the_tables_as_they_were() -> None:
    labels, _, _, _ = _independent_binary_sets(200)
    strategy = PosteriorVote(num_sets=3, num_outputs=1, warmup_epochs=0.0)
    strategy.aggregate(labels)
    before = {k: t.clone() for k, t in strategy.state_dict().items()}
    out = strategy({"labels": torch.from_numpy(labels[:50])}, torch.full((50, 1), float("nan")), None, None)
    assert torch.isnan(out.loss)  # the trainer's check stops the run on it
    assert all(torch.equal(before[k], t) for k, t in strategy.state_dict().items())


DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np, torch, torch.distributed as dist, torch.multiprocessing as mp

    def worker(rank, folder):
        dist.init_process_group("gloo", init_method="file://" + os.path.join(folder, "init"), rank=rank, world_size=2)
        from l2v_monai.strategies import PosteriorVote
        labels = np.load(os.path.join(folder, "labels.npy"))
        logits = torch.from_numpy(np.load(os.path.join(folder, "logits.npy")))
        strategy = PosteriorVote(num_sets=4, num_outputs=3, warmup_epochs=0.0)
        strategy.aggregate(labels)
        half = slice(0, 32) if rank == 0 else slice(32, 64)
        strategy({"labels": torch.from_numpy(labels[half])}, logits[half], None, None)
        # Then a step where rank 1's network output is NaN: rank 1 adds nothing, and neither rank waits.
        bad = logits[half].clone()
        if rank == 1:
            bad[:] = float("nan")
        strategy({"labels": torch.from_numpy(labels[half])}, bad, None, None)
        torch.save(strategy.state_dict(), os.path.join(folder, f"rank{rank}.pt"))
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(worker, args=(sys.argv[1],), nprocs=2)
    """
)


def test_two_ddp_ranks_keep_one_set_of_tables_equal_to_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    """The counts are all-reduced: a rank that kept its own would differ from the other and from one process."""
    sets, _ = report_like_sets(64, seed=3)
    labels = np.concatenate([sets, sets[:, :, :1]], axis=2)  # 3 findings
    logits = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    np.save(tmp_path / "labels.npy", labels)
    np.save(tmp_path / "logits.npy", logits)
    script = tmp_path / "ddp_posterior_vote.py"
    script.write_text(DDP_SCRIPT)
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, env=env, timeout=300)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    one = PosteriorVote(num_sets=4, num_outputs=3, warmup_epochs=0.0)
    one.aggregate(labels)
    one({"labels": torch.from_numpy(labels)}, torch.from_numpy(logits), None, None)
    one({"labels": torch.from_numpy(labels[:32])}, torch.from_numpy(logits[:32]), None, None)  # rank 0's half only
    for key, value in one.state_dict().items():
        assert torch.allclose(ranks[0][key].double(), value.double(), atol=1e-4), key
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert ranks[0]["seen"].item() == 64 + 32
