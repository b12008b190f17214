"""The console entry points (``[project.scripts]``) and their ``scripts/*.py`` wrappers: each has a useful ``--help``."""

from __future__ import annotations

import importlib.metadata
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
# The commands pyproject.toml declares: the tests follow the declaration instead of restating it.
ENTRY_POINTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
# An option a command's help must list: proof that the name runs the right command, not just any parser.
KEY_OPTION = {
    "l2v-prepare-mimic": "hand-labels",
    "l2v-prepare-manifest": "--manifest",
    "l2v-prepare-openi": "--archive",
    "l2v-label-reports": "--reports",
    "l2v-embed-reports": "--datalist",
    "l2v-evaluate": "--predictions",
    "l2v-compare": "--method",
    "l2v-labeler-quality": "--archive",
    "l2v-quality": "--hand-datalist",
    "l2v-relabel-queue": "--import",
}


def _installed_entry_points() -> dict[str, str]:
    try:
        distribution = importlib.metadata.distribution("l2v-monai")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("l2v-monai is not installed (pip install -e '.[test]'): no console scripts to run")
    return {ep.name: ep.value for ep in distribution.entry_points if ep.group == "console_scripts"}


def test_every_command_is_an_l2v_command_with_a_main() -> None:
    import importlib

    for name, target in ENTRY_POINTS.items():
        module, function = target.split(":")
        assert name.startswith("l2v-") and module.startswith("l2v_monai.cli."), (name, target)
        assert callable(getattr(importlib.import_module(module), function)), target


def test_the_installed_package_has_the_entry_points() -> None:
    installed = _installed_entry_points()
    missing = {name: target for name, target in ENTRY_POINTS.items() if installed.get(name) != target}
    assert not missing, f"reinstall to pick up pyproject.toml (pip install -e '.[test]'); missing or stale: {missing}"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_help(name: str) -> None:
    _installed_entry_points()
    # The venv's bin folder first: the tests may run without the venv on PATH.
    executable = Path(sys.executable).parent / name
    found = str(executable) if executable.is_file() else shutil.which(name)
    assert found, f"{name} is not installed next to {sys.executable} nor on PATH"
    proc = subprocess.run([found, "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: {name} ")
    assert KEY_OPTION.get(name, "--") in proc.stdout


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_scripts_wrapper_runs_the_same_command(name: str, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    # The wrapper carries the command's module name (l2v-quality -> scripts/quality_report.py).
    path = ROOT / "scripts" / f"{ENTRY_POINTS[name].split(':')[0].rsplit('.', 1)[1]}.py"
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(path), run_name="__main__")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and KEY_OPTION.get(name, "--") in out
