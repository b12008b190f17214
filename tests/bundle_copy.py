"""A copy of ``bundle/`` as a user without ``l2v_monai`` has it, with random weights (not a test module)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

# Installed as sitecustomize in a subprocess's PYTHONPATH: any import of l2v_monai fails there
# (the project's editable install would otherwise find it from anywhere).
BLOCK_L2V = '''
import importlib.abc
import sys


class _BlockL2V(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "l2v_monai" or name.startswith("l2v_monai."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: the bundle must stand alone)", name=name)
        return None


sys.meta_path.insert(0, _BlockL2V())
'''


def copy_bundle(dest: Path, seed: int = 0) -> torch.nn.Module:
    """Copy ``bundle/`` (configs, scripts, docs; no models or outputs) to ``dest`` with a random-weight
    ``models/model.pt``; return that network, in eval mode."""
    from l2v_monai.bundle_scripts.networks import ResNet50Classifier

    shutil.copytree(ROOT / "bundle", dest, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    (dest / "models").mkdir()
    torch.manual_seed(seed)
    network = ResNet50Classifier().eval()
    torch.save(network.state_dict(), dest / "models" / "model.pt")
    return network


def without_l2v_monai(folder: Path) -> dict[str, str]:
    """An environment for subprocesses in which ``import l2v_monai`` fails (its shim lives in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCK_L2V)
    return {**os.environ, "PYTHONPATH": str(folder), "PYTHONDONTWRITEBYTECODE": "1"}


def write_png(path: Path, seed: int) -> Path:
    """A 300 × 280 8-bit grey ramp with noise: a stand-in radiograph."""
    from PIL import Image

    rows, cols = np.mgrid[0:300, 0:280]
    pixels = (rows + 2 * cols) / (rows + 2 * cols).max() * 200 + np.random.default_rng(seed).integers(0, 50, (300, 280))
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path
