"""The README's bundle commands, run as written, from the repository root.

The lines come from the README itself (its "The chest X-ray bundle" block), so the test follows the
documentation. They run in a copy of the repository's ``bundle/`` under a temporary "repository
root", so that their outputs (``bundle/models``, ``bundle/eval``, the image cache) stay inside the
test's folder. Only two things change in each line: the documented data paths point at a synthetic
MIMIC-style tree, and training and inference get small overrides (64×64 images, one epoch) so the
whole workflow takes a minute on a CPU.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_runs import SMALL
from l2v_monai.experiments.synthetic_mimic import make_mimic_tree

ROOT = Path(__file__).resolve().parents[1]
SMALL_INFERENCE = ["--image_size", "64", "--num_workers", "0"]
MISSION_LINE = "python -m monai.bundle run training --config_file bundle/configs/train.json --dataset_dir /data/mimic-cxr-jpg"


def readme_bundle_lines() -> list[str]:
    """The command lines of the README's bundle block, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The chest X-ray bundle"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the README's bundle section has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_shows_the_mission_line() -> None:
    assert MISSION_LINE in readme_bundle_lines()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A repository-root stand-in holding a copy of ``bundle/``, a synthetic MIMIC tree with its hand
    labels, and a folder of PNGs for inference."""
    base = tmp_path_factory.mktemp("readme")
    repo = base / "repo"
    shutil.copytree(ROOT / "bundle", repo / "bundle", ignore=shutil.ignore_patterns("models", "eval", "cache", "__pycache__"))
    data = base / "mimic"
    make_mimic_tree(data, n_subjects=8, studies_per_subject=2)
    pngs = base / "pngs"
    pngs.mkdir()
    from PIL import Image

    for index, image in enumerate(sorted(data.rglob("*.jpg"))[:3]):
        Image.open(image).save(pngs / f"image_{index}.png")
    return {"repo": repo, "data": data, "pngs": pngs}


def _env() -> dict[str, str]:
    # The venv's own commands (l2v-*, torchrun) first, as in an activated venv.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1"}


def _as_run_here(line: str, paths: dict[str, Path]) -> list[str]:
    line = (line.replace("/data/mimic-cxr-jpg", str(paths["data"])).replace("/data/mimic-cxr", str(paths["data"]))
            .replace("/data/some_pngs", str(paths["pngs"])))
    argv = shlex.split(line)
    if argv[0] == "python":
        argv[0] = sys.executable
    if argv[0] == "torchrun":
        argv[1:1] = ["--master_port=29541"]
    if "run" in argv and "training" in argv or "evaluate.json" in line:
        argv += SMALL
    elif "inference.json" in line and "ckpt_export" not in argv:
        argv += SMALL_INFERENCE
    return argv


def test_every_readme_bundle_line_runs_from_the_repository_root(workspace: dict[str, Path], hand_label_tree) -> None:
    repo, bundle = workspace["repo"], workspace["repo"] / "bundle"
    for line in readme_bundle_lines():
        argv = _as_run_here(line, workspace)
        if argv[0] == "torchrun":  # the multi-GPU form of the training line starts a fresh run, as the README says
            shutil.rmtree(bundle / "models")
        proc = subprocess.run(argv, cwd=repo, env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{line}\nfailed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        if argv[1:2] == ["labelers"] or "l2v-prepare-mimic" in line:
            hand_label_tree(workspace["data"])  # the hand-labelled set evaluation reads (docs/data.md)
        if "ckpt_export" in argv:
            assert (bundle / "models" / "model.ts").is_file()
        if line == MISSION_LINE:
            # The outputs land in the bundle's own folders, as from inside bundle/.
            assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "checkpoint.pt").is_file()
            assert any((bundle / "eval").glob("events.out.tfevents.*"))
            assert any((bundle / "cache").iterdir()), "the image cache belongs to the bundle, not the data folder"
            assert not any(p.name.startswith("cache") for p in workspace["data"].iterdir())
    assert (bundle / "eval" / "predictions.csv").is_file()
    assert not (repo / "models").exists() and not (repo / "eval").exists(), "nothing lands beside bundle/"


def test_a_bundle_root_without_scripts_keeps_a_run_apart(workspace: dict[str, Path], tmp_path: Path) -> None:
    """``--bundle_root`` pointing at an output folder of its own: no copy of ``scripts/`` is needed."""
    repo = workspace["repo"]
    if not (workspace["data"] / "datalist.json").is_file():
        subprocess.run(["l2v-prepare-mimic", "labelers", "--root", str(workspace["data"]), "--out",
                        str(workspace["data"] / "datalist.json")], check=True, capture_output=True, env=_env())
    run = tmp_path / "runs" / "a"
    argv = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "bundle/configs/train.json",
            "--dataset_dir", str(workspace["data"]), "--bundle_root", str(run), *SMALL]
    proc = subprocess.run(argv, cwd=repo, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (run / "models" / "model.pt").is_file() and not (run / "scripts").exists()


def test_a_config_outside_any_bundle_stops_with_one_line_naming_the_fix(workspace: dict[str, Path], tmp_path: Path) -> None:
    """A copied ``train.json`` with no bundle beside it: the start-up error names the folders and the fix."""
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(workspace["repo"] / "bundle" / "configs" / "train.json", loose / "train.json")
    argv = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(loose / "train.json"),
            "--dataset_dir", str(workspace["data"]), "--bundle_root", str(tmp_path / "out"), *SMALL]
    proc = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert re.search(r"no bundle scripts/ folder in .*out or .*loose: give --config_file from the bundle's configs/", proc.stderr)
