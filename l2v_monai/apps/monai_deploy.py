"""Run the chest X-ray bundle in a MONAI Deploy App SDK application (image-only inference).

The bundle runs in the SDK's **stock** ``MonaiBundleInferenceOperator``: give it the bundle folder
(``configs/``, ``scripts/``, ``models/model.ts`` or ``model.pt``). What the stock operator does not
do, and why the two small operators here remain:

* **Decoding.** The operator receives in-memory images only: it drops every ``LoadImage*`` step
  from ``preprocessing`` and feeds its input ``Image`` to the rest (channel, resize, clip). So the
  bundle's ``ChestXrayReader`` never runs inside it, and the SDK's own DICOM loaders apply neither
  the VOI LUT nor the MONOCHROME1 inversion nor the per-image [0, 1] scaling the network was
  trained on. ``ChestXrayLoaderOperator`` decodes one DICOM/PNG/JPEG with the bundle's reader
  (``read_chest_xray``) and emits an SDK ``Image`` holding the ``H × W`` array in [0, 1].
* **Output names.** For a ``probabilities`` output the stock operator emits
  ``{"result": [...], "probabilities": array}`` where ``result`` maps each *value* (``int(p)``,
  so 0 or 1) to ``channel_def``: 14 copies of "Atelectasis" or "Cardiomegaly", not the findings.
  ``FindingProbabilitiesOperator`` turns that ``pred`` into ``{finding: probability}`` in
  ``channel_def`` order, optionally also as ``findings.json``. When the bundle folder holds
  ``models/thresholds.json`` (chosen on the hospital's hand labels with ``l2v-evaluate
  --operating-point ... --save-thresholds``), each finding becomes ``{"probability", "call",
  "threshold"}``: the 0/1 call beside its probability (``findings_with_calls``). A
  ``models/calibration.json`` is applied before, by ``inference.json``'s post-processing.

A bare TorchScript file (``ckpt_export``: it carries ``extra/metadata.json`` and
``extra/inference.json``, not ``scripts/``) works only where the bundle's ``scripts`` package is
importable (the bundle folder on ``PYTHONPATH``): the operator instantiates ``preprocessing``,
whose ``LoadImaged`` names ``scripts.reader.ChestXrayReader``, before dropping that step. For a
folder the SDK puts it on ``sys.path`` itself. ``ChestXrayClassificationApp`` chains the three::

    python -m l2v_monai.apps.monai_deploy -i IMAGE_OR_FOLDER -m BUNDLE_FOLDER -o OUT   # writes OUT/findings.json

``pred_to_findings``, ``findings_with_calls`` and ``read_channel_def`` need no SDK. The operator classes need
``pip install monai-deploy-app-sdk highdicom`` (tested with 4.0.0 on CPU): the SDK installs into
``monai/deploy``, so ``import monai`` then loads its operators, and fails without ``highdicom``.
Without the SDK, importing this module still works and using one of those classes raises
``ImportError``. ``make test-integration`` runs them. Research use only; not for clinical use.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from l2v_monai.bundle_scripts.decisions import calls as threshold_calls
from l2v_monai.bundle_scripts.decisions import load_thresholds, threshold_vector
from l2v_monai.bundle_scripts.reader import IMAGE_SUFFIXES, read_chest_xray

logger = logging.getLogger(__name__)

_SDK_NAMES = (
    "ChestXrayLoaderOperator",
    "FindingProbabilitiesOperator",
    "bundle_inference_operator",
    "ChestXrayClassificationApp",
)


def read_channel_def(bundle_path: str | Path, output: str = "pred") -> dict[str, str]:
    """``channel_def`` of ``output`` from a TorchScript bundle (``extra/metadata.json``), a bundle folder or a metadata file."""
    path = Path(bundle_path)
    if path.is_dir():
        path = path / "configs" / "metadata.json"
    if zipfile.is_zipfile(path):  # TorchScript: read extra/metadata.json without loading the network
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/extra/metadata.json")]
            if not names:
                raise ValueError(f"{path} carries no extra/metadata.json; export it with ckpt_export --meta_file")
            meta = json.loads(archive.read(names[0]))
    else:
        meta = json.loads(path.read_text())
    return {str(k): str(v) for k, v in meta["network_data_format"]["outputs"][output]["channel_def"].items()}


def pred_to_findings(pred: Any, channel_def: Mapping[str, str] | Sequence[str], sigmoid: bool = False) -> dict[str, float]:
    """Name the entries of one ``pred``: ``{finding: probability}`` in ``channel_def`` order.

    ``pred`` is the SDK bundle operator's ``{"probabilities": ...}`` dict, or any tensor/array holding
    exactly one value per finding (``14``, ``1 × 14``, ...). ``sigmoid=True`` for logits.
    """
    if isinstance(pred, Mapping):
        if "probabilities" not in pred:
            raise KeyError(f"pred dict has no 'probabilities' entry (keys: {sorted(map(str, pred))})")
        pred = pred["probabilities"]
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    values = np.asarray(pred, dtype=np.float64).reshape(-1)
    if isinstance(channel_def, Mapping):
        names = [channel_def[str(i)] for i in range(len(channel_def))]
    else:
        names = [str(n) for n in channel_def]
    if values.size != len(names):
        raise ValueError(f"pred has {values.size} values but channel_def names {len(names)} findings")
    if sigmoid:
        values = 1.0 / (1.0 + np.exp(-values))
    return {name: float(v) for name, v in zip(names, values)}


def findings_with_calls(findings: Mapping[str, float], thresholds_file: str | Path) -> dict[str, dict[str, Any]]:
    """``{finding: {"probability", "call", "threshold"}}``: each probability with its 0/1 call from a saved thresholds file.

    The file must be saved for exactly these findings, in this order (else an error naming it);
    a finding without a threshold gets call -1 and threshold ``None``.
    """
    document = load_thresholds(thresholds_file, list(findings))
    thresholds = threshold_vector(document)
    decided = threshold_calls(np.array(list(findings.values()), dtype=np.float64), thresholds)
    return {
        name: {"probability": float(p), "call": int(c), "threshold": document["thresholds"][name]}
        for (name, p), c in zip(findings.items(), decided)
    }


def default_thresholds_file(bundle_path: str | Path | None) -> Path | None:
    """``models/thresholds.json`` of a bundle folder, when one was saved there."""
    if bundle_path is None or not Path(bundle_path).is_dir():
        return None
    path = Path(bundle_path) / "models" / "thresholds.json"
    return path if path.is_file() else None


def _find_image(path: Path) -> Path:
    """``path`` itself, or the one image file (DICOM/PNG/JPEG) in the folder ``path``."""
    if path.is_file():
        return path
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else []
    if len(files) != 1:
        raise ValueError(f"expected one image file ({', '.join(IMAGE_SUFFIXES)}) at {path}, found {len(files)}")
    return files[0]


try:  # the App SDK is optional: everything above works without it
    from monai.deploy.conditions import CountCondition
    from monai.deploy.core import (
        AppContext,
        Application,
        ConditionType,
        Fragment,
        Image,
        IOType,
        Operator,
        OperatorSpec,
    )
    from monai.deploy.operators.monai_bundle_inference_operator import (
        BundleConfigNames,
        IOMapping,
        MonaiBundleInferenceOperator,
    )

    _SDK_ERROR: BaseException | None = None
except (ImportError, OSError) as error:  # OSError: the SDK's native libraries may fail to load
    _SDK_ERROR = error


def __getattr__(name: str) -> Any:
    if name in _SDK_NAMES:
        raise ImportError(
            f"l2v_monai.apps.monai_deploy.{name} needs the MONAI Deploy App SDK (pip install monai-deploy-app-sdk): {_SDK_ERROR}"
        ) from _SDK_ERROR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if _SDK_ERROR is None:

    class ChestXrayLoaderOperator(Operator):
        """Read one chest X-ray (a file, or a folder with one image) → output ``image``: SDK ``Image``, ``H × W`` in [0, 1]."""

        def __init__(self, fragment: Fragment, *args: Any, input_path: str | Path, **kwargs: Any) -> None:
            self.input_path = Path(input_path)
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.output("image")

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            path = _find_image(self.input_path)
            pixels = read_chest_xray(path)
            op_output.emit(Image(pixels, metadata={"filename_or_obj": str(path)}), "image")

    def bundle_inference_operator(
        fragment: Fragment, app_context: AppContext, bundle_path: str | Path, name: str = "bundle"
    ) -> MonaiBundleInferenceOperator:
        """The SDK's stock bundle operator wired for this bundle: input ``image`` (SDK ``Image``), output ``pred``."""
        return MonaiBundleInferenceOperator(
            fragment,
            app_context=app_context,
            bundle_path=Path(bundle_path),
            bundle_config_names=BundleConfigNames(config_names="inference"),
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", dict, IOType.IN_MEMORY)],
            name=name,
        )

    class FindingProbabilitiesOperator(Operator):
        """Input ``pred`` → output ``findings``: ``{finding: probability}`` named by ``channel_def``.

        Args:
            channel_def: ``{"0": name, ...}`` or a list of names; default: read from ``bundle_path``.
            bundle_path: the ``model.ts`` or bundle folder to read ``channel_def`` from.
            sigmoid: apply a sigmoid first (when ``pred`` holds logits, i.e. postprocessing was removed).
            output_folder: when given, also write ``findings.json`` there.
            thresholds_file: a saved thresholds file; default: ``models/thresholds.json`` of a
                ``bundle_path`` folder when present. With one, each finding carries its 0/1 call.
        """

        def __init__(
            self,
            fragment: Fragment,
            *args: Any,
            channel_def: Mapping[str, str] | Sequence[str] | None = None,
            bundle_path: str | Path | None = None,
            sigmoid: bool = False,
            output_folder: str | Path | None = None,
            thresholds_file: str | Path | None = None,
            **kwargs: Any,
        ) -> None:
            if channel_def is None:
                if bundle_path is None:
                    raise ValueError("give channel_def or bundle_path")
                channel_def = read_channel_def(bundle_path)
            self.channel_def = channel_def
            self.sigmoid = sigmoid
            self.output_folder = Path(output_folder) if output_folder else None
            self.thresholds_file = Path(thresholds_file) if thresholds_file else default_thresholds_file(bundle_path)
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("pred")
            spec.output("findings").condition(ConditionType.NONE)  # fine with no receiver (a leaf in the app)

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            findings: Any = pred_to_findings(op_input.receive("pred"), self.channel_def, self.sigmoid)
            if self.thresholds_file is not None:
                findings = findings_with_calls(findings, self.thresholds_file)
            if self.output_folder is not None:
                self.output_folder.mkdir(parents=True, exist_ok=True)
                (self.output_folder / "findings.json").write_text(json.dumps(findings, indent=2))
            op_output.emit(findings, "findings")

    class ChestXrayClassificationApp(Application):
        """Example app: loader → bundle inference → named findings, written to ``OUTPUT/findings.json``.

        Paths come from the SDK's usual ``-i/-m/-o`` arguments or ``HOLOSCAN_INPUT_PATH``,
        ``HOLOSCAN_MODEL_PATH``, ``HOLOSCAN_OUTPUT_PATH``.
        """

        def compose(self) -> None:
            app_context = Application.init_app_context(self.argv)
            model_path = Path(app_context.model_path)
            if model_path.is_dir():
                # A bundle folder: the stock operator loads models/ and puts the folder on sys.path itself,
                # but only when the context holds no model; the SDK wraps a folder in a Model without a predictor.
                app_context.models = None
            # CountCondition: a source operator is otherwise ticked again and again and the app never ends.
            loader = ChestXrayLoaderOperator(
                self, CountCondition(self, 1), input_path=Path(app_context.input_path), name="loader"
            )
            infer = bundle_inference_operator(self, app_context, model_path)
            named = FindingProbabilitiesOperator(
                self, bundle_path=model_path, output_folder=Path(app_context.output_path), name="findings"
            )
            self.add_flow(loader, infer, {("image", "image")})
            self.add_flow(infer, named, {("pred", "pred")})


if __name__ == "__main__":
    ChestXrayClassificationApp().run()
