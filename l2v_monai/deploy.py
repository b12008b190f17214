"""Run the exported bundle in a MONAI Deploy App SDK application (image-only inference).

The App SDK's ``MonaiBundleInferenceOperator`` loads ``model.ts`` (exported with
``ckpt_export ... --config_file "['bundle/configs/train.json','bundle/configs/inference.json']"``
so that the TorchScript file carries ``extra/metadata.json`` *and* ``extra/inference.json``) or a
bundle folder (``configs/metadata.json``, ``configs/inference.json``, ``models/model.ts``). Two
things in its default handling do not fit a 14-finding multi-label classifier:

* **Input.** It removes only transforms named ``LoadImage*`` from ``preprocessing`` and then feeds
  the in-memory image; our loader, ``LoadChestXrayd``, expects a path. ``ChestXrayBundleInferenceOperator``
  puts ``ScaleToUnitRanged`` (the loader's min/max scaling, for an array) in its place.
* **Output.** For a ``probabilities`` output it emits ``{"result": [...], "probabilities": array}``
  where ``result`` maps each *value* (``int(p)``, so 0 or 1) to ``channel_def``: 14 copies of
  "Atelectasis" or "Cardiomegaly", not the findings. ``FindingProbabilitiesOperator`` takes that
  ``pred`` (or a plain 14-vector of probabilities or logits) and emits ``{finding: probability}``
  in ``channel_def`` order, optionally also as ``findings.json``.

``ChestXrayLoaderOperator`` reads one DICOM/PNG/JPEG with the bundle's own decoder
(``read_chest_xray``: modality LUT, VOI LUT/window, MONOCHROME1 inverted, min/max to [0, 1]) and
emits an SDK ``Image`` holding the ``H × W`` array. ``ChestXrayClassificationApp`` chains the three::

    python -m l2v_monai.deploy -i IMAGE_OR_FOLDER -m bundle/models/model.ts -o OUT   # writes OUT/findings.json

Feed the bundle operator a 2D ``H × W`` ``Image`` (as this loader does); the SDK's
``DICOMSeriesToVolumeOperator`` output (a volume, no VOI LUT applied) is not what the model expects.

``pred_to_findings`` and ``read_channel_def`` need no SDK. The operator classes need
``pip install monai-deploy-app-sdk highdicom`` (tested with 4.0.0 on CPU): the SDK installs into
``monai/deploy``, so ``import monai`` then loads its operators, and fails without ``highdicom``.
Without the SDK, importing this module still works and using one of those classes raises
``ImportError``. Research use only; not for clinical use.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from l2v_monai.data.transforms import LoadChestXrayd, read_chest_xray, scale_to_unit_range

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
_SDK_NAMES = (
    "ChestXrayLoaderOperator",
    "ChestXrayBundleInferenceOperator",
    "FindingProbabilitiesOperator",
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


class ScaleToUnitRanged(MapTransform):
    """In-memory stand-in for ``LoadChestXrayd``: min/max-scale an ``H × W`` image to float32 [0, 1].

    Idempotent on an image that already spans exactly [0, 1] (what ``read_chest_xray`` returns).
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            meta = dict(value.meta) if isinstance(value, MetaTensor) else {}
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            array = np.squeeze(array)
            if array.ndim != 2:
                raise ValueError(f"expected one greyscale H x W image under {key!r}, got shape {tuple(np.shape(value))}")
            where = meta.get("filename_or_obj", f"in-memory {key!r}")
            meta.setdefault("original_channel_dim", "no_channel")
            d[key] = MetaTensor(torch.from_numpy(scale_to_unit_range(array, where)), meta=meta)
        return d


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
            f"l2v_monai.deploy.{name} needs the MONAI Deploy App SDK (pip install monai-deploy-app-sdk): {_SDK_ERROR}"
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

    class ChestXrayBundleInferenceOperator(MonaiBundleInferenceOperator):
        """The SDK's bundle operator with ``LoadChestXrayd`` swapped for ``ScaleToUnitRanged``.

        Input ``image`` (SDK ``Image``, ``H × W``), output ``pred`` (the SDK's probabilities dict).
        Every other argument is the parent's (``app_context``, ``bundle_path``, ``model_name``, ...).
        """

        def __init__(
            self,
            fragment: Fragment,
            *args: Any,
            app_context: AppContext,
            input_mapping: list[IOMapping] | None = None,
            output_mapping: list[IOMapping] | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(
                fragment,
                *args,
                app_context=app_context,
                input_mapping=input_mapping or [IOMapping("image", Image, IOType.IN_MEMORY)],
                output_mapping=output_mapping or [IOMapping("pred", dict, IOType.IN_MEMORY)],
                **kwargs,
            )

        def _get_compose(self, obj_name: str, disallowed_prefixes: Sequence[str]) -> Any:
            compose = super()._get_compose(obj_name, disallowed_prefixes)
            compose.transforms = tuple(
                ScaleToUnitRanged(keys=t.keys, allow_missing_keys=t.allow_missing_keys) if isinstance(t, LoadChestXrayd) else t
                for t in compose.transforms
            )
            return compose

    class FindingProbabilitiesOperator(Operator):
        """Input ``pred`` → output ``findings``: ``{finding: probability}`` named by ``channel_def``.

        Args:
            channel_def: ``{"0": name, ...}`` or a list of names; default: read from ``bundle_path``.
            bundle_path: the ``model.ts`` or bundle folder to read ``channel_def`` from.
            sigmoid: apply a sigmoid first (when ``pred`` holds logits, i.e. postprocessing was removed).
            output_folder: when given, also write ``findings.json`` there.
        """

        def __init__(
            self,
            fragment: Fragment,
            *args: Any,
            channel_def: Mapping[str, str] | Sequence[str] | None = None,
            bundle_path: str | Path | None = None,
            sigmoid: bool = False,
            output_folder: str | Path | None = None,
            **kwargs: Any,
        ) -> None:
            if channel_def is None:
                if bundle_path is None:
                    raise ValueError("give channel_def or bundle_path")
                channel_def = read_channel_def(bundle_path)
            self.channel_def = channel_def
            self.sigmoid = sigmoid
            self.output_folder = Path(output_folder) if output_folder else None
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec) -> None:
            spec.input("pred")
            spec.output("findings").condition(ConditionType.NONE)  # fine with no receiver (a leaf in the app)

        def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
            findings = pred_to_findings(op_input.receive("pred"), self.channel_def, self.sigmoid)
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
            # CountCondition: a source operator is otherwise ticked again and again and the app never ends.
            loader = ChestXrayLoaderOperator(
                self, CountCondition(self, 1), input_path=Path(app_context.input_path), name="loader"
            )
            infer = ChestXrayBundleInferenceOperator(
                self, app_context=app_context, bundle_path=model_path, bundle_config_names=BundleConfigNames(), name="bundle"
            )
            named = FindingProbabilitiesOperator(
                self, bundle_path=model_path, output_folder=Path(app_context.output_path), name="findings"
            )
            self.add_flow(loader, infer, {("image", "image")})
            self.add_flow(infer, named, {("pred", "pred")})


if __name__ == "__main__":
    ChestXrayClassificationApp().run()
