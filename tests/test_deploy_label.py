"""Image-only inference as MONAI Deploy and MONAI Label load it.

Always run: the contract both SDKs rely on (TorchScript with ``extra/metadata.json`` and
``extra/inference.json``; the metadata's ``image``/``pred``; ``inference.json``'s keys; its
``preprocessing`` → TorchScript → ``postprocessing`` giving 14 probabilities) and
``l2v_monai.deploy``'s SDK-free helpers. With ``monai-deploy-app-sdk`` (tested 4.0.0) or
``monailabel`` (tested 0.8.5) importable, the same exported model also goes through the SDKs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"
META = json.loads((CONFIGS / "metadata.json").read_text())
CHANNEL_DEF = META["network_data_format"]["outputs"]["pred"]["channel_def"]
FINDINGS = [CHANNEL_DEF[str(i)] for i in range(len(CHANNEL_DEF))]


def _sdk_importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random-weight network as ``model.pt`` and its export ``model.ts``, plus a synthetic PNG."""
    from PIL import Image

    from l2v_monai.networks import ResNet50Classifier

    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    torch.save(ResNet50Classifier().state_dict(), root / "model.pt")
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'inference.json'}']"
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(root / "model.ts"),
           "--ckpt_file", str(root / "model.pt"), "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", configs]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows, cols = np.mgrid[0:300, 0:280]
    pixels = (rows + cols) / (rows + cols).max() * 200 + np.random.default_rng(0).integers(0, 50, (300, 280))
    (root / "images").mkdir()
    Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / "cxr.png")
    return {"pt": root / "model.pt", "ts": root / "model.ts", "png": root / "images" / "cxr.png", "root": root}


@pytest.fixture(scope="module")
def reference(exported: dict[str, Path]) -> np.ndarray:
    """``inference.json``'s preprocessing → the TorchScript model → its postprocessing, for the PNG: 14 values."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    pre = parser.get_parsed_content("preprocessing")
    post = parser.get_parsed_content("postprocessing")
    item = pre({"image": str(exported["png"])})
    assert tuple(item["image"].shape) == (1, 256, 256)
    network = torch.jit.load(str(exported["ts"]), map_location="cpu").eval()
    with torch.no_grad():
        logits = network(item["image"][None].float())
    pred = post({"pred": logits[0]})["pred"]
    return np.asarray(pred, dtype=np.float64)


def _bundle_dir(exported: dict[str, Path], name: str, model: str) -> Path:
    """A bundle folder as both SDKs expect it: ``configs/`` as shipped plus ``models/<model>``."""
    bundle = exported["root"] / name
    if not bundle.exists():
        shutil.copytree(CONFIGS, bundle / "configs")
        (bundle / "models").mkdir()
        shutil.copy(exported[Path(model).suffix.lstrip(".")], bundle / "models" / model)
    return bundle


# ---------------------------------------------------------------------------------------------
# The contract (no SDK needed)


def test_pred_to_findings_names_values_in_channel_def_order() -> None:
    from l2v_monai.deploy import pred_to_findings

    probabilities = np.linspace(0.0, 1.0, 14, dtype=np.float32)
    # What the SDK's bundle operator emits for a ``probabilities`` output: ``result`` maps values, not classes.
    sdk_pred = {"result": ["Atelectasis"] * 13 + ["Cardiomegaly"], "probabilities": probabilities}
    named = pred_to_findings(sdk_pred, CHANNEL_DEF)
    assert list(named) == FINDINGS
    assert named["Support Devices"] == pytest.approx(1.0) and named["Atelectasis"] == pytest.approx(0.0)
    assert pred_to_findings(torch.from_numpy(probabilities)[None], FINDINGS) == named  # 1 x 14 tensor, list of names
    logits = pred_to_findings(torch.zeros(14), CHANNEL_DEF, sigmoid=True)
    assert set(logits.values()) == {0.5}
    with pytest.raises(ValueError, match="13 values"):
        pred_to_findings(np.zeros(13), CHANNEL_DEF)
    with pytest.raises(KeyError, match="probabilities"):
        pred_to_findings({"result": []}, CHANNEL_DEF)


def test_exported_torchscript_carries_what_deploy_and_label_read(exported: dict[str, Path], reference: np.ndarray) -> None:
    from l2v_monai.deploy import read_channel_def

    extra = {"metadata.json": ""}
    torch.jit.load(str(exported["ts"]), map_location="cpu", _extra_files=extra)
    meta = json.loads(extra["metadata.json"])["network_data_format"]
    image = meta["inputs"]["image"]
    assert list(meta["inputs"]) == ["image"] and list(meta["outputs"]) == ["pred"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [256, 256]
    assert meta["outputs"]["pred"]["channel_def"] == CHANNEL_DEF and len(CHANNEL_DEF) == 14
    # Deploy's operator reads extra/inference.json from the TorchScript file: export with both configs.
    with zipfile.ZipFile(exported["ts"]) as archive:
        assert any(n.endswith("/extra/inference.json") for n in archive.namelist())
    config = json.loads((CONFIGS / "inference.json").read_text())
    assert {"network_def", "preprocessing", "postprocessing", "inferer", "device", "bundle_root"} <= set(config)
    assert config["findings"] == FINDINGS
    assert read_channel_def(exported["ts"]) == CHANNEL_DEF
    assert read_channel_def(_bundle_dir(exported, "bundle_ts", "model.ts")) == CHANNEL_DEF
    assert reference.shape == (14,) and np.isfinite(reference).all()
    assert ((reference >= 0) & (reference <= 1)).all()


@pytest.mark.skipif(_sdk_importable("monai.deploy"), reason="the App SDK is installed")
def test_deploy_operators_need_the_sdk_and_say_so() -> None:
    import l2v_monai.deploy as deploy

    with pytest.raises(ImportError, match="pip install monai-deploy-app-sdk"):
        deploy.FindingProbabilitiesOperator  # noqa: B018


# ---------------------------------------------------------------------------------------------
# MONAI Deploy App SDK


class _Input:
    def __init__(self, **values: object) -> None:
        self.values = values

    def receive(self, name: str) -> object:
        return self.values[name]


class _Output:
    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def get(self, name: str) -> object:  # the SDK asks for a DISK path first; in-memory ports have none
        raise RuntimeError("in-memory output")

    def emit(self, value: object, name: str) -> None:
        self.values[name] = value


def test_deploy_bundle_operator_gives_14_named_probabilities(
    exported: dict[str, Path], reference: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("monai.deploy")
    from monai.deploy.core import AppContext, Fragment, Image

    from l2v_monai.data.transforms import read_chest_xray
    from l2v_monai.deploy import ChestXrayBundleInferenceOperator, FindingProbabilitiesOperator

    monkeypatch.chdir(tmp_path)  # AppContext looks for ./models by default; there is none here
    fragment, context = Fragment(), AppContext({})
    image = Image(read_chest_xray(exported["png"]), metadata={"filename_or_obj": str(exported["png"])})
    for bundle_path in (exported["ts"], _bundle_dir(exported, "bundle_ts", "model.ts")):
        infer = ChestXrayBundleInferenceOperator(fragment, app_context=context, bundle_path=bundle_path, name="bundle")
        out = _Output()
        infer.compute(_Input(image=image), out, None)
        pred = out.values["pred"]
        np.testing.assert_allclose(np.asarray(pred["probabilities"]).reshape(-1), reference, atol=1e-5)
        # The SDK's own "result" names values (int(p) → channel 0 or 1), not findings: why our operator exists.
        assert set(pred["result"]) <= {CHANNEL_DEF["0"], CHANNEL_DEF["1"]}
        named_out = _Output()
        FindingProbabilitiesOperator(fragment, bundle_path=bundle_path, name="named").compute(
            _Input(pred=pred), named_out, None
        )
        findings = named_out.values["findings"]
        assert list(findings) == FINDINGS
        np.testing.assert_allclose(list(findings.values()), reference, atol=1e-5)


def test_deploy_example_app_writes_findings_json(exported: dict[str, Path], reference: np.ndarray, tmp_path: Path) -> None:
    pytest.importorskip("monai.deploy")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "l2v_monai.deploy", "-i", str(exported["png"].parent), "-m", str(exported["ts"]), "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    findings = json.loads((out / "findings.json").read_text())
    assert list(findings) == FINDINGS
    np.testing.assert_allclose(list(findings.values()), reference, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# MONAI Label


def test_label_bundle_infer_task_classifies_14_findings(exported: dict[str, Path], reference: np.ndarray) -> None:
    pytest.importorskip("monailabel")
    from monailabel.tasks.infer.bundle import BundleInferTask

    bundle = _bundle_dir(exported, "bundle_pt", "model.pt")
    # Our folder is not named "*classification*", so say the type; the default would be segmentation.
    task = BundleInferTask(str(bundle), {}, type="classification")
    assert task.is_valid() and task.dimension == 2
    assert task.labels == {name.lower(): i for i, name in enumerate(FINDINGS)}
    _, result = task({"image": str(exported["png"]), "device": "cpu"})
    prediction = result["prediction"]
    assert [p["label"] for p in prediction] == [name.lower() for name in FINDINGS]
    np.testing.assert_allclose([p["score"] for p in prediction], reference, atol=1e-4)
