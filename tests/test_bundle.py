"""The bundle end to end, as a user runs it: train, evaluate, infer, export, verify, multi-GPU.

Runs ``python -m monai.bundle ...`` in subprocesses on a synthetic MIMIC-CXR tree made here.
Tests override to 64×64 images, batch 4 and one epoch; the configs' defaults stay the paper's.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_runs import CONFIGS, ROOT, SMALL, bundle, configs, output_root

SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="module")
def trained(mimic: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run training`` with the default strategy (the posterior vote), image only, the way a bundle user runs it:
    from inside a copy of ``bundle/`` with the default ``bundle_root`` ("."). Returns that copy."""
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    shutil.copytree(ROOT / "bundle", out, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    bundle("run", "training", "--config_file", "configs/train.json", "--dataset_dir", str(mimic["root"]), *SMALL, cwd=out)
    return out


def test_run_training_trains_validates_and_saves_checkpoints(trained: Path) -> None:
    models = trained / "models"
    assert (models / "model.pt").is_file() and (models / "checkpoint.pt").is_file()
    state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert state["head.weight"].shape == (14, 2048)
    resume = torch.load(models / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert set(resume) >= {"trainer", "network", "optimizer", "strategy"}
    assert resume["trainer"]["iteration"] == resume["trainer"]["epoch_length"]  # one full epoch
    # The default vote (the posterior vote): its learned confusion counts are saved with the optimizer.
    assert {"counts", "class_counts", "seen", "dataset_size"} <= set(resume["strategy"])
    assert resume["strategy"]["seen"].item() > 0


def test_resume_continues_from_the_checkpoint(mimic: dict, trained: Path, tmp_path: Path) -> None:
    shutil.copytree(trained / "models", tmp_path / "models")
    small = [a if a != "1" else "2" for a in SMALL]  # --epochs 2: one more epoch after the saved one
    proc = bundle("run", "training", "--config_file", str(CONFIGS / "train.json"), "--dataset_dir", str(mimic["root"]),
                  "--bundle_root", str(output_root(tmp_path)), "--resume", "True", *small)
    log = proc.stdout + proc.stderr
    assert "Epoch[2]" in log and "Epoch[1] Complete" not in log  # epoch 1 was restored, not re-run
    resume = torch.load(tmp_path / "models" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert resume["trainer"]["iteration"] == 2 * resume["trainer"]["epoch_length"]


@pytest.mark.parametrize("strategy,use_report,extra", [
    ("majority", "False", []),
    ("l2v", "True", []),
    ("consensus", "True", []),
    ("l2v", "False", ["--strategy_options#l2v#variant", "paper", "--strategy_options#l2v#feedback", "features"]),
])
def test_run_key_trains_each_strategy_and_mode(mimic: dict, tmp_path: Path, strategy: str, use_report: str, extra: list[str]) -> None:
    proc = bundle("run", "--config_file", str(CONFIGS / "train.json"), "--dataset_dir", str(mimic["root"]),
                  "--bundle_root", str(output_root(tmp_path)), "--label_strategy", strategy, "--use_report", use_report,
                  "--report_dim", "16", *extra, *SMALL)
    assert "val_macro_auc" in proc.stdout + proc.stderr
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert state["head.weight"].shape == (14, 2048 + (512 if use_report == "True" else 0))
    if extra:  # the paper's vote head: one W_attn over the concatenated feedback
        strategy_state = torch.load(tmp_path / "models" / "checkpoint.pt", map_location="cpu", weights_only=True)["strategy"]
        assert "head.attn.weight" in strategy_state


def test_a_trained_run_feeds_the_relabel_queue_and_the_quality_report(mimic: dict, trained: Path, tmp_path: Path) -> None:
    """``--run``: the saved network and vote go over the training items once; the queue shows the vote's
    refined labels, the quality report its second estimate. A datalist that is not the
    run's is refused before any report is written."""
    datalist, n_train = mimic["root"] / "datalist.json", len(mimic["datalist"]["training"])
    run = ["--run", str(trained), "--override", "image_size=64", f"dataset_dir={mimic['root']}"]
    queue = subprocess.run([sys.executable, str(ROOT / "scripts" / "relabel_queue.py"), "--datalist", str(datalist), *run,
                            "--n", "5", "--no-sheet", "--out", str(tmp_path / "queue")], capture_output=True, text=True, timeout=600)
    assert queue.returncode == 0, queue.stderr[-3000:]
    with open(tmp_path / "queue" / "queue.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5
    refined = [float(v) for r in rows for k, v in r.items() if k.startswith("vote:") and v]
    assert len(refined) >= 5 * 10 and all(0.0 <= v <= 1.0 for v in refined)

    out = tmp_path / "quality"
    proc = subprocess.run([sys.executable, "-m", "l2v_monai.cli.quality_report", "--datalist", str(datalist), *run,
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    # The default (the posterior vote) weighs sets by learned confusion tables, not per-sample weights:
    # the report shows its refined labels as the second estimate and no vote weights.
    assert report["items"] == n_train and report["vote"]["weights"] is False
    assert all(r["vote_weight"] is None for r in report["rows"])
    second = [r["est_sensitivity_vote"] for r in report["rows"] if r["est_sensitivity_vote"] is not None]
    assert second and all(0.0 <= x <= 1.0 for x in second)
    assert "## Estimated from the trained run's vote" in out.with_suffix(".md").read_text()

    # Another datalist than the run's: refused, naming both, and no report written.
    other = json.loads(datalist.read_text())
    other["training"] = other["training"][:-1]
    (tmp_path / "other.json").write_text(json.dumps(other))
    bad = subprocess.run([sys.executable, "-m", "l2v_monai.cli.quality_report", "--datalist", str(tmp_path / "other.json"),
                          "--run", str(trained), "--override", "image_size=64", "datalist=" + str(datalist),
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "hold different training items" in bad.stderr and "other.json" in bad.stderr
    assert not (tmp_path / "bad.json").exists()


def test_evaluate_writes_auc_tables_and_roc_pngs(mimic: dict, trained: Path) -> None:
    # From inside the bundle copy, as its card says; the label-set run below is the repository-root form.
    bundle("run", "--config_file", "['configs/train.json','configs/evaluate.json']", "--dataset_dir", str(mimic["root"]),
           *SMALL, cwd=trained)
    out = trained / "eval" / "test"
    rows = list(csv.reader(open(out / "auc.csv")))
    assert rows[0][0] == "finding" and len(rows) == 1 + 14 + 1 and rows[-1][0] == "Average"
    pngs = list((out / "roc").glob("*.png"))
    assert len(pngs) >= 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == len(json.loads((mimic["root"] / "hand_labelled.json").read_text())["test"])
    # On request, each training label set's own AUC against the hand labels (Table 4, left part).
    bundle("run", "--config_file", configs("train.json", "evaluate.json"), "--dataset_dir", str(mimic["root"]),
           "--bundle_root", str(trained), "--label_set_auc", "True", *SMALL)
    header = next(csv.reader(open(out / "auc.csv")))
    assert header == ["finding", "neg_u0", "neg_u1", "che_u0", "che_u1", "R50_posterior_vote"]


def test_inference_writes_14_probabilities_per_image(mimic: dict, trained: Path) -> None:
    bundle("run", "--config_file", str(CONFIGS / "inference.json"), "--datalist", str(mimic["root"] / "hand_labelled.json"),
           "--bundle_root", str(trained), "--image_size", "64", "--num_workers", "0")
    rows = list(csv.reader(open(trained / "eval" / "predictions.csv")))
    assert len(rows) == len(json.loads((mimic["root"] / "hand_labelled.json").read_text())["test"])
    values = np.array([[float(x) for x in r[1:]] for r in rows])
    assert values.shape[1] == 14 and ((values >= 0) & (values <= 1)).all()
    # The evaluation CLI scores that CSV against the hand labels.
    out = trained / "eval" / "cli"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(trained / "eval" / "predictions.csv"),
                           "--datalist", str(mimic["root"] / "hand_labelled.json"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "macro AUC" in proc.stdout and (out / "auc.csv").is_file() and (out / "roc" / "roc_all.png").is_file()
    # A predictions file that misses a labelled image is refused, naming the count.
    (trained / "eval" / "short.csv").write_text("\n".join(",".join(r) for r in rows[:-1]) + "\n")
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--predictions", str(trained / "eval" / "short.csv"),
                          "--datalist", str(mimic["root"] / "hand_labelled.json"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "1 labelled images without a prediction" in bad.stderr


def test_inference_config_has_the_keys_deploy_and_label_load() -> None:
    config = json.loads((CONFIGS / "inference.json").read_text())
    assert {"network_def", "preprocessing", "postprocessing", "inferer", "device", "bundle_root"} <= set(config)
    meta = json.loads((CONFIGS / "metadata.json").read_text())["network_data_format"]
    assert list(meta["inputs"]) == ["image"] and list(meta["outputs"]) == ["pred"]
    assert len(meta["outputs"]["pred"]["channel_def"]) == 14


def test_export_matches_eager_and_carries_metadata(trained: Path) -> None:
    ts = trained / "models" / "model.ts"
    bundle("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(trained / "models" / "model.pt"),
           "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", configs("train.json", "inference.json"),
           "--bundle_root", str(trained))
    extra = {"metadata.json": ""}
    exported = torch.jit.load(str(ts), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"]["outputs"]["pred"]["num_channels"] == 14
    from l2v_monai.bundle_scripts.networks import ResNet50Classifier

    eager = ResNet50Classifier()
    eager.load_state_dict(torch.load(trained / "models" / "model.pt", map_location="cpu", weights_only=True))
    eager.eval()
    x = torch.rand(2, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (exported(x) - eager(x)).abs().max().item() < 1e-5


def test_verify_metadata_and_net_in_out() -> None:
    schema = SHARED / "monai" / "meta_schema_20240725.json"
    if not schema.is_file():
        pytest.skip("../shared/monai/meta_schema_20240725.json is absent")
    proc = bundle("verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"), "--filepath", str(schema))
    assert "verified with no error" in proc.stdout + proc.stderr
    proc = bundle("verify_net_in_out", "network_def", "--meta_file", str(CONFIGS / "metadata.json"),
                  "--config_file", str(CONFIGS / "train.json"), "--bundle_root", str(ROOT / "bundle"))
    assert "verified with no error" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_multi_gpu_overlay_trains_one_epoch_under_torchrun_on_cpu(mimic: dict, tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    proc = bundle("run", "training", "--config_file", configs("train.json", "multi_gpu_train.json"),
                  "--dataset_dir", str(mimic["root"]), "--bundle_root", str(output_root(tmp_path)),
                  "--image_size", "64", "--batch_size", "2", "--epochs", "1", "--num_workers", "0",
                  launcher=torchrun, cwd=tmp_path)
    assert (tmp_path / "models" / "model.pt").is_file()
    assert "val_macro_auc" in proc.stdout + proc.stderr


def test_poc_config_runs_on_digits_and_writes_results(tmp_path: Path) -> None:
    proc = bundle("run", "--config_file", str(CONFIGS / "cifar10.json"), "--dataset", "digits", "--epochs", "1",
                  "--max_train", "600", "--max_test", "200", "--bundle_root", str(tmp_path))
    # make demo shows each epoch's validation accuracy and mean training losses as it goes.
    log = proc.stdout + proc.stderr
    assert re.search(r"Epoch\[1\] Metrics -- val_noisy_mv_accuracy: \d\.\d{4}", log)
    assert re.search(r"Epoch\[1\] Metrics -- .*epoch_train_loss: \d+\.\d{4}", log)
    (results,) = list((tmp_path / "eval").glob("*/results.json"))
    data = json.loads(results.read_text())
    assert 0.0 <= data["test_accuracy"] <= 1.0
    # The default (the posterior vote) reports the annotator accuracies it learned: after one epoch
    # (one online M-step) AD, never right, is already learned as by far the least reliable.
    assert data["vote_weights"] is None
    learned, true = data["estimated_annotator_accuracy"], data["annotator_label_accuracy"]
    assert set(learned) == {"HS", "SF", "OC", "AD", "AVG"} and true["AD"] == 0.0
    assert learned["AD"] < 0.5 * min(v for k, v in learned.items() if k != "AD")


def test_poc_config_runs_cifar10_by_default_from_torchvisions_layout(cifar10_root: Path, tmp_path: Path) -> None:
    """No ``--dataset``: CIFAR-10, read from ``cifar-10-batches-py/`` under ``data_root``."""
    out = tmp_path / "out"
    bundle("run", "--config_file", str(CONFIGS / "cifar10.json"), "--data_root", str(cifar10_root), "--epochs", "1",
           "--max_train", "60", "--max_test", "20", "--batch_size", "8", "--bundle_root", str(out))
    (results,) = list((out / "eval").glob("poc_cifar10_*/results.json"))
    assert 0.0 <= json.loads(results.read_text())["test_accuracy"] <= 1.0


def test_poc_config_without_cifar10_says_where_to_put_it(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "cifar10.json"),
           "--data_root", str(tmp_path / "none"), "--bundle_root", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert re.search(r"CIFAR-10 not found in .*none/cifar-10-batches-py .*--download True.*--dataset fashion_mnist", proc.stderr)
