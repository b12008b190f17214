"""Image-only inference as MONAI Deploy and MONAI Label load it, on a standalone copy of the bundle.

Always run: the contract both SDKs rely on (TorchScript with ``extra/metadata.json`` and
``extra/inference.json``; the metadata's ``image``/``pred``; ``inference.json``'s keys; its
``preprocessing`` → TorchScript → ``postprocessing`` giving 14 probabilities) and
``l2v_monai.apps.monai_deploy``'s SDK-free helpers. With ``monai-deploy-app-sdk`` (tested 4.0.0) or
``monailabel`` (tested 0.8.5) importable, the same bundle copy also goes through the SDKs:
``make test-integration`` builds one venv per SDK (MONAI Label's pins pydicom 2.4, the Deploy SDK
needs pydicom 3) and runs this file in each; the bundle's DICOM reader is checked under both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle_copy import ROOT, copy_bundle, without_l2v_monai, write_png

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
    """A standalone bundle copy with random weights as ``models/model.pt`` and its export ``models/model.ts``
    (exported inside the copy, without l2v_monai), plus a synthetic PNG."""
    top = tmp_path_factory.mktemp("export")
    bundle = top / "bundle"
    copy_bundle(bundle)
    cmd = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", "models/model.ts",
           "--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"]
    proc = subprocess.run(cmd, cwd=bundle, env=without_l2v_monai(top / "shim"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (top / "images").mkdir()
    png = write_png(top / "images" / "cxr.png", 0)
    return {"bundle": bundle, "pt": bundle / "models" / "model.pt", "ts": bundle / "models" / "model.ts", "png": png}


@pytest.fixture(scope="module")
def reference(exported: dict[str, Path]) -> np.ndarray:
    """The copy's ``preprocessing`` → the TorchScript model → its ``postprocessing``, for the PNG: 14 values."""
    from monai.bundle import ConfigParser

    # A `scripts` package cached by an earlier test (another bundle copy) must not stand in for this copy's.
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]
    parser = ConfigParser()
    parser.read_config(str(exported["bundle"] / "configs" / "inference.json"))
    parser["bundle_root"] = str(exported["bundle"])
    pre = parser.get_parsed_content("preprocessing")
    post = parser.get_parsed_content("postprocessing")
    item = pre({"image": str(exported["png"])})
    assert tuple(item["image"].shape) == (1, 256, 256)
    network = torch.jit.load(str(exported["ts"]), map_location="cpu").eval()
    with torch.no_grad():
        logits = network(item["image"][None].float())
    pred = post({"pred": logits[0]})["pred"]
    return np.asarray(pred, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# The contract (no SDK needed)


def test_pred_to_findings_names_values_in_channel_def_order() -> None:
    from l2v_monai.apps.monai_deploy import pred_to_findings

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
    from l2v_monai.apps.monai_deploy import read_channel_def

    extra = {"metadata.json": ""}
    torch.jit.load(str(exported["ts"]), map_location="cpu", _extra_files=extra)
    meta = json.loads(extra["metadata.json"])["network_data_format"]
    image = meta["inputs"]["image"]
    assert list(meta["inputs"]) == ["image"] and list(meta["outputs"]) == ["pred"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [256, 256]
    assert meta["outputs"]["pred"]["channel_def"] == CHANNEL_DEF and len(CHANNEL_DEF) == 14
    # Deploy's operator reads extra/inference.json from the TorchScript file. The network is in it as
    # TorchScript code, but not the Python of scripts/ that inference.json's preprocessing names.
    with zipfile.ZipFile(exported["ts"]) as archive:
        names = archive.namelist()
    assert any(n.endswith("/extra/inference.json") for n in names)
    assert any(n.endswith("/code/__torch__/scripts/networks.py") for n in names)
    assert not any(n.endswith("scripts/reader.py") for n in names)
    config = json.loads((exported["bundle"] / "configs" / "inference.json").read_text())
    assert {"network_def", "preprocessing", "postprocessing", "inferer", "device", "bundle_root"} <= set(config)
    assert config["findings"] == FINDINGS
    # Deploy and Label read the config with a bare ConfigParser (no workflow to ask): bundle_root is then
    # the working folder, unless they set it, as both do.
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(exported["bundle"] / "configs" / "inference.json"))
    assert parser.get_parsed_content("bundle_root") == "."
    assert read_channel_def(exported["ts"]) == CHANNEL_DEF
    assert read_channel_def(exported["bundle"]) == CHANNEL_DEF
    assert reference.shape == (14,) and np.isfinite(reference).all()
    assert ((reference >= 0) & (reference <= 1)).all()


def test_bundle_reader_decodes_dicom_under_the_installed_pydicom() -> None:
    """The MONAI Label venv has pydicom 2.4, the Deploy venv and the project's pydicom 3: same pixels."""
    import pydicom
    from pydicom.data import get_testdata_file

    from l2v_monai.bundle_scripts.reader import read_dicom

    pixels = read_dicom(get_testdata_file("CT_small.dcm"))  # modality LUT (rescale) and a VOI window
    assert pixels.shape == (128, 128) and pixels.dtype == np.float32
    assert float(pixels.mean()) == pytest.approx(0.3766001, abs=1e-6), pydicom.__version__


@pytest.mark.skipif(_sdk_importable("monai.deploy"), reason="the App SDK is installed")
def test_deploy_operators_need_the_sdk_and_say_so() -> None:
    import l2v_monai.apps.monai_deploy as deploy

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


def test_deploy_stock_bundle_operator_gives_14_named_probabilities(
    exported: dict[str, Path], reference: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("monai.deploy")
    from monai.deploy.core import AppContext, Fragment

    from l2v_monai.apps.monai_deploy import ChestXrayLoaderOperator, FindingProbabilitiesOperator, bundle_inference_operator

    monkeypatch.chdir(tmp_path)  # AppContext looks for ./models by default; there is none here
    fragment, context = Fragment(), AppContext({})
    loaded = _Output()
    ChestXrayLoaderOperator(fragment, input_path=exported["png"], name="loader").compute(_Input(), loaded, None)
    # The folder as it is; the bare TorchScript file where the bundle's scripts/ is importable (see l2v_monai.apps.monai_deploy).
    monkeypatch.syspath_prepend(str(exported["bundle"]))
    for bundle_path in (exported["bundle"], exported["ts"]):
        infer = bundle_inference_operator(fragment, context, bundle_path)
        assert type(infer).__name__ == "MonaiBundleInferenceOperator"  # the SDK's own, not a subclass
        out = _Output()
        infer.compute(_Input(image=loaded.values["image"]), out, None)
        pred = out.values["pred"]
        np.testing.assert_allclose(np.asarray(pred["probabilities"]).reshape(-1), reference, atol=1e-5)
        # The SDK's own "result" names values (int(p) → channel 0 or 1), not findings: why the findings operator exists.
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
    cmd = [sys.executable, "-m", "l2v_monai.apps.monai_deploy", "-i", str(exported["png"].parent), "-m", str(exported["bundle"]), "-o", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    findings = json.loads((out / "findings.json").read_text())
    assert list(findings) == FINDINGS
    np.testing.assert_allclose(list(findings.values()), reference, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# MONAI Label


def test_label_bundle_infer_task_classifies_14_findings(exported: dict[str, Path], reference: np.ndarray) -> None:
    pytest.importorskip("monailabel")
    from monailabel.tasks.infer.bundle import BundleInferTask

    bundle = exported["bundle"]  # Label takes models/model.pt when it is there
    # Our folder is not named "*classification*", so say the type; the default would be segmentation.
    task = BundleInferTask(str(bundle), {}, type="classification")
    assert task.is_valid() and task.dimension == 2
    assert task.labels == {name.lower(): i for i, name in enumerate(FINDINGS)}
    _, result = task({"image": str(exported["png"]), "device": "cpu"})
    prediction = result["prediction"]
    assert [p["label"] for p in prediction] == [name.lower() for name in FINDINGS]
    np.testing.assert_allclose([p["score"] for p in prediction], reference, atol=1e-4)
