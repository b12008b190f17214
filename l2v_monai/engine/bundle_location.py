"""Where is the bundle, wherever the command was typed from?

``python -m monai.bundle run training --config_file bundle/configs/train.json`` from the repository
root and ``python -m monai.bundle run training --config_file configs/train.json`` from inside
``bundle/`` must train the same bundle and write to the same ``models/`` and ``eval/``. MONAI's
``ConfigWorkflow`` knows the folder of the config files (``config_root_path``), but it adds the bundle
to ``sys.path`` only when ``run`` starts, after ``initialize`` has built the network. The configs ask
here instead: ``bundle_root`` defaults to the folder that holds the configs' ``configs/``, and the
network's ``scripts`` package is imported from there even when ``--bundle_root`` points elsewhere, so
that an output folder of its own (``--bundle_root /runs/a``) needs no copy of ``scripts/``.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

__all__ = ["BundleScriptsNotFoundError", "bundle_folder_of_configs", "put_bundle_scripts_on_path"]


class BundleScriptsNotFoundError(ImportError):
    """Neither the bundle root nor the configs' own bundle folder holds the bundle's ``scripts/``."""


def bundle_folder_of_configs(default: str = ".") -> str:
    """The folder that holds the running ``ConfigWorkflow``'s ``configs/`` folder; ``default`` when none runs.

    Configs read by a bare ``ConfigParser`` (``ckpt_export``, MONAI Label, MONAI Deploy) have no
    workflow on the stack: those callers pass ``bundle_root`` themselves.
    """
    from monai.bundle import ConfigWorkflow

    for frame in inspect.stack(0):
        workflow = frame.frame.f_locals.get("self")
        if isinstance(workflow, ConfigWorkflow):
            configs = Path(workflow.config_root_path)
            return os.fspath(configs.parent if configs.name == "configs" else configs)
    return default


def put_bundle_scripts_on_path(bundle_root: str, configs_bundle: str) -> str:
    """Put the first of ``bundle_root`` and ``configs_bundle`` that holds ``scripts/`` first on ``sys.path``.

    Returns that folder. Raises :class:`BundleScriptsNotFoundError`, naming both folders and the fix,
    when neither holds the bundle's ``scripts/``.
    """
    candidates = list(dict.fromkeys(os.path.abspath(p) for p in (bundle_root, configs_bundle)))
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "scripts", "networks.py")):
            if sys.path[:1] != [folder]:
                sys.path.insert(0, folder)
            return folder
    raise BundleScriptsNotFoundError(
        f"no bundle scripts/ folder in {' or '.join(candidates)}: give --config_file from the bundle's configs/ "
        "folder (bundle/configs/train.json), or keep runs apart with --ckpt_dir and --output_dir instead of --bundle_root"
    )
