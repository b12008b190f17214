"""The bundle stands alone: a copy of ``bundle/`` runs inference and export where ``l2v_monai`` cannot be imported.

Every bundle command runs in a subprocess whose ``sitecustomize`` blocks ``import l2v_monai`` (the
project's editable install would otherwise find it from anywhere), so only ``monai``, ``torch``,
``torchvision``, ``pydicom``, ``pillow``, ``pytorch-ignite`` and the copy's own ``scripts/`` are
there. Inference runs both ways the bundle card gives: from inside the copy, and from the
repository root with ``--bundle_root`` (where the repository's own ``scripts/`` folder must not
shadow the bundle's). The copy's predictions must equal the library's training preprocessing
followed by the same network.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_copy import ROOT, copy_bundle, without_l2v_monai, write_png

SHARED = ROOT.parent / "shared"
SCHEMA = SHARED / "monai" / "meta_schema_20240725.json"
REAL_DICOM = SHARED / "data" / "chest-dicom" / "chest.dcm"


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A copy of bundle/ with a random-weight models/model.pt, a few images, and the blocking environment."""
    top = tmp_path_factory.mktemp("standalone")
    bundle = top / "chest_xray_bundle"
    network = copy_bundle(bundle)
    images = top / "images"
    images.mkdir()
    paths = [write_png(images / f"cxr{i}.png", i) for i in range(3)]
    if REAL_DICOM.is_file():
        shutil.copy(REAL_DICOM, images / "real.dcm")
        paths.append(images / "real.dcm")
    env = without_l2v_monai(top / "shim")
    return {"bundle": bundle, "images": images, "paths": paths, "env": env, "network": network}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _bundle(command: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return _run(["-m", "monai.bundle", command, *args], cwd, env)


def _predictions(path: Path) -> dict[str, np.ndarray]:
    return {row[0]: np.array([float(v) for v in row[1:]]) for row in csv.reader(open(path))}


def test_the_environment_really_blocks_l2v_monai(standalone: dict) -> None:
    # Nothing the bundle runs for inference names the library (an optional import would fail silently).
    assert "l2v_monai" not in (standalone["bundle"] / "configs" / "inference.json").read_text()
    imports_library = re.compile(r"^\s*(from|import)\s+l2v_monai", re.MULTILINE)
    assert not [p.name for p in (standalone["bundle"] / "scripts").glob("*.py") if imports_library.search(p.read_text())]
    proc = subprocess.run([sys.executable, "-c", "import l2v_monai"], env=standalone["env"], capture_output=True, text=True)
    assert proc.returncode != 0 and "blocked: the bundle must stand alone" in proc.stderr
    # ... while what inference needs is there.
    _run(["-c", "import monai, torch, torchvision, pydicom, PIL, ignite"], standalone["bundle"], standalone["env"])


def test_inference_runs_from_inside_the_copy_and_from_the_repository_root(standalone: dict) -> None:
    from l2v_monai.data.transforms import preprocess_chest_xray

    bundle, images, env = standalone["bundle"], standalone["images"], standalone["env"]
    inside = _bundle("run", "--config_file", "configs/inference.json", "--dataset_dir", str(images),
                     "--num_workers", "0", cwd=bundle, env=env)
    # From the repository root, whose own scripts/ (a namespace folder) must not shadow the bundle's.
    assert (ROOT / "scripts").is_dir() and not (ROOT / "scripts" / "__init__.py").exists()
    _bundle("run", "--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle),
            "--dataset_dir", str(images), "--num_workers", "0", "--output_dir", str(bundle / "eval_from_root"),
            cwd=ROOT, env=env)
    first = _predictions(bundle / "eval" / "predictions.csv")
    second = _predictions(bundle / "eval_from_root" / "predictions.csv")
    assert list(first) == [str(p) for p in standalone["paths"]] == list(second)
    assert (bundle / "eval" / "failures.csv").read_text().strip() == "image,reason"
    # The library's training preprocessing and the same weights give the same 14 probabilities.
    batch = torch.stack([torch.from_numpy(preprocess_chest_xray(p)) for p in standalone["paths"]])
    with torch.no_grad():
        expected = torch.sigmoid(standalone["network"](batch)).numpy()
    for path, row in zip(standalone["paths"], expected):
        assert first[str(path)].shape == (14,)
        np.testing.assert_allclose(first[str(path)], row, atol=1e-4)
        np.testing.assert_allclose(second[str(path)], row, atol=1e-4)
    if REAL_DICOM.is_file():  # no DICOM header value reaches the log (checked without printing it)
        import pydicom

        patient_id = str(pydicom.dcmread(REAL_DICOM, stop_before_pixels=True).get("PatientID", "")).strip()
        if patient_id and patient_id in inside.stdout + inside.stderr:
            pytest.fail("the real DICOM's PatientID reached the inference log")


def test_metadata_verifies_against_the_schema(standalone: dict) -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"offline MONAI metadata schema not found ({SCHEMA.name})")
    proc = _bundle("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SCHEMA),
                   cwd=standalone["bundle"], env=standalone["env"])
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


def test_verify_net_in_out_and_export(standalone: dict) -> None:
    bundle, env = standalone["bundle"], standalone["env"]
    proc = _bundle("verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
                   "--config_file", "configs/inference.json", cwd=bundle, env=env)
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr
    # Export from the repository root: network_def is the first item built, before any run().
    ts = bundle / "models" / "model.ts"
    _bundle("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(bundle / "models" / "model.pt"),
            "--meta_file", str(bundle / "configs" / "metadata.json"),
            "--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle), cwd=ROOT, env=env)
    with zipfile.ZipFile(ts) as archive:
        extra = {Path(n).name: archive.read(n) for n in archive.namelist() if "/extra/" in n}
    assert {"metadata.json", "inference.json"} <= set(extra)
    # What inference needs stays required as MONAI reads and exports it; training's packages are not
    # required (MONAI would rewrite an `optional_packages_version` into `required_packages_version`).
    required = json.loads(extra["metadata.json"])["required_packages_version"]
    assert {"torchvision", "pydicom", "pillow", "pytorch-ignite"} == set(required)
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert "l2v-monai" in meta["training_packages_version"] and "optional_packages_version" not in meta
    exported = torch.jit.load(str(ts), map_location="cpu").eval()
    image = torch.rand(2, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported(image), standalone["network"](image), atol=1e-4, rtol=1e-4)
