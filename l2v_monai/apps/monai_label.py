"""A MONAI Label app for the chest X-ray bundle: classify, retrain from radiologists' labels, serve the relabeling queue.

MONAI Label (tested 0.8.5, with its own pins: ``pydicom==2.4.4``, ``dicomweb-client==0.59.1``,
``pynetdicom==2.0.2``) serves an image folder as a ``LocalDatastore``. For this bundle:

* **infer** (``l2v_cxr``): MONAI Label's own ``BundleInferTask`` as a classifier; it reads
  ``models/model.pt`` and reloads it when the file changes.
* **train** (``l2v_cxr``): :class:`HandLabelBundleTrainTask`, MONAI Label's ``BundleTrainTask`` fed
  from the project's datalist instead of the folder alone. A radiologist's label for image
  ``<id>`` is ``labels/final/<id>.json``, ``{finding: 1, 0 or null}``; before each round every such
  file goes into the datalist's hand-label field through the hand-label import
  (:mod:`l2v_monai.quality.label_files`), and the bundle trains on all its label sets plus those
  hand labels, with its own validation split. The round starts from the serving model, writes into
  a staging folder and replaces ``model.pt``/``checkpoint.pt`` only when it has finished: a round
  that fails leaves the previous model serving.
* **next sample**: MONAI Label's ``random`` and :class:`RelabelQueueStrategy` (``relabel_queue``),
  the relabeling queue's ranking (:mod:`l2v_monai.quality.relabel_queue`) of the unlabelled images,
  computed once per trained model and cached.

Image ids are file names without the extension; they must be the datalist's ``dicom_id`` (or the
item key named by ``--conf id_key``). Start the server with an app folder written by
``python -m l2v_monai.apps.monai_label init APP_DIR --bundle BUNDLE_DIR`` (see bundle/docs/README.md).
Only this module imports MONAI Label; nothing below ``l2v_monai.apps`` imports it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

from l2v_monai.engine.checkpoints import CHECKPOINT_FILE, MODEL_FILE, promote_checkpoints
from l2v_monai.quality.label_files import merge_label_files

__all__ = [
    "IMAGE_EXTENSIONS",
    "MODEL",
    "ChestXrayLabelApp",
    "HandLabelBundleTrainTask",
    "RelabelQueueStrategy",
    "final_label_files",
    "ranked_ids",
]

logger = logging.getLogger(__name__)

#: The name of the infer and train tasks (what a client's ``model`` names).
MODEL = "l2v_cxr"
#: The image files the folder serves (what ChestXrayReader decodes).
IMAGE_EXTENSIONS = ("*.jpg", "*.jpeg", "*.png", "*.dcm")
#: Where the round's hand-labelled datalist goes: beside the source datalist, ``<stem>_monailabel.json``.
WORK_SUFFIX = "_monailabel"
_START_FILE = "start_model.pt"


def final_label_files(datastore: Datastore) -> dict[str, Path]:
    """``{image id: labels/final/<id>.json}`` of every image with a final label."""
    out = {}
    for image_id in datastore.get_labeled_images():
        label_id = datastore.get_label_by_image_id(image_id, DefaultLabelTag.FINAL)
        uri = datastore.get_label_uri(label_id, DefaultLabelTag.FINAL) if label_id else ""
        if uri:
            out[image_id] = Path(uri)
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class HandLabelBundleTrainTask(BundleTrainTask):
    """``BundleTrainTask`` for this bundle: the datalist with the radiologists' labels, the bundle's
    validation split, a start model copied aside and a staging folder promoted only on success.

    Args:
        path: the bundle folder (``configs/``, ``scripts/``, ``models/``).
        conf: the app's ``--conf`` values.
        datalist: the project datalist (label sets per image, ``training``/``validation`` splits).
        dataset_dir: the bundle's ``dataset_dir`` (image cache, report embeddings); default the datalist's folder.
        overrides: further bundle config keys for every round (``image_size``, ``batch_size``, ...).
        id_key: the item key that the image ids name (default ``dicom_id``).
    """

    def __init__(
        self,
        path: str | Path,
        conf: Mapping[str, str],
        datalist: str | Path,
        dataset_dir: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        id_key: str | None = None,
    ) -> None:
        super().__init__(str(path), dict(conf))
        self.datalist = Path(datalist).resolve()
        self.work_datalist = self.datalist.with_name(f"{self.datalist.stem}{WORK_SUFFIX}.json")
        self.dataset_dir = Path(dataset_dir).resolve() if dataset_dir else self.datalist.parent
        self.overrides = dict(overrides or {})
        self.id_key = id_key
        self._staging: Path | None = None
        self._start: Path | None = None
        #: What the last round did: label files read, start model, seconds (for the result and the tests).
        self.last_round: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        options = super().config()
        options["val_split"] = -1  # the bundle's own validation split, never a random cut of the labelled images
        return options

    def _fetch_datalist(self, request: Mapping[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        files = final_label_files(datastore)
        counts = merge_label_files(self.datalist, files, self.work_datalist, id_key=self.id_key)
        # Counts only: ids and file names stay out of the log.
        logger.info("hand labels: %d final label file(s), imported %s, %d not in the datalist",
                    counts["files"], counts["imported"], counts["unmatched"])
        self.last_round["hand_labels"] = counts
        document = json.loads(self.work_datalist.read_text(encoding="utf-8"))
        return list(document.get("training") or [])

    def _partition_datalist(self, datalist: list, request: Mapping[str, Any], shuffle: bool = False) -> tuple[list, None]:
        return datalist, None  # the validation split is the datalist's; None keeps validate#dataset#data as it is

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        # The loader goes in with the start copy (_update_overrides): the stock one would read models/model.pt
        # itself and stay in the bundle config's handler list for every later round.
        self._start = Path(model_pytorch) if pretrained and os.path.exists(model_pytorch) else None

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        assert self._staging is not None, "a round runs through __call__"
        # The bundle reads its items from the datalist: train#items attaches the vote's targets, which a
        # replaced train#dataset#data would skip.
        overrides.pop(self.const.key_train_dataset_data(), None)
        overrides.pop(self.const.key_validate_dataset_data(), None)
        # Handlers are blocks or references ("@train#..."); only a stock CheckpointLoader block is replaced.
        handlers = [h for h in overrides.get(self.const.key_train_handlers(), [])
                    if not (isinstance(h, Mapping) and h.get("_target_") == "CheckpointLoader")]
        started_from = None
        if self._start is not None:
            start = self._staging / _START_FILE
            shutil.copyfile(self._start, start)  # a snapshot: the serving file may be replaced while this round runs
            started_from = _sha256(start)
            handlers.insert(0, {"_target_": "CheckpointLoader", "load_path": str(start),
                                "load_dict": {self.model_dict_key: f"@{self.const.key_network()}"},
                                "map_location": "cpu", "strict": True})
        self.last_round["started_from"] = started_from
        overrides[self.const.key_train_handlers()] = handlers
        overrides.update({
            **self.overrides,
            "dataset_dir": str(self.dataset_dir),
            "datalist": str(self.work_datalist),
            "ckpt_dir": str(self._staging),
            "resume": False,
            "overwrite": False,
        })
        return overrides

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any]:
        models = Path(self.bundle_path) / "models"
        models.mkdir(parents=True, exist_ok=True)
        self.last_round = {}
        started = time.monotonic()
        # Same file system as models/, so that promote_checkpoints' os.replace is atomic.
        self._staging = Path(tempfile.mkdtemp(prefix=".round-", dir=models))
        try:
            result = super().__call__(dict(request), datastore) or {}
            promote_checkpoints(self._staging, models, (CHECKPOINT_FILE, MODEL_FILE))
        except BaseException:
            logger.error("the training round failed; %s keeps serving", models / MODEL_FILE)
            if self.bundle_path in sys.path:  # BundleTrainTask removes it only after a run that returned
                sys.path.remove(self.bundle_path)
            raise
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        self.last_round["seconds"] = round(time.monotonic() - started, 1)
        self.last_round["model"] = _sha256(models / MODEL_FILE)
        return {**result, **self.last_round}


def ranked_ids(
    bundle: str | Path,
    datalist: str | Path,
    overrides: Mapping[str, Any] | None = None,
    id_key: str | None = None,
) -> list[tuple[str, float]]:
    """The relabeling queue's order of the training images: ``[(id, score)]``, best first.

    With a trained model (``models/checkpoint.pt``) the evidence is the run's (vote, model, label
    sets; :func:`l2v_monai.engine.run_outputs.evidence_from_run`), as ``scripts/relabel_queue.py
    --run`` ranks; before the first round, the label sets alone (Dawid–Skene's posterior). Fully
    hand-labelled images are left out.
    """
    from l2v_monai.data.datalist import read_split_label_sets
    from l2v_monai.engine.run_outputs import evidence_from_run
    from l2v_monai.quality.hand_labels import hand_label_matrix
    from l2v_monai.quality.relabel_queue import QueueEvidence, item_id, queue_scores, top_n

    if (Path(bundle) / "models" / CHECKPOINT_FILE).is_file():
        found = evidence_from_run(bundle, datalist, overrides)
    else:
        items, labels, _, findings = read_split_label_sets(datalist, "training")
        found = {"items": items, "labels": labels, "findings": findings, "vote": None, "model": None}
    items = found["items"]
    hand = hand_label_matrix(items, len(found["findings"]))
    evidence = QueueEvidence.from_labels(found["labels"], vote=found["vote"], model=found["model"],
                                         hand=hand if (~np.isnan(hand)).any() else None)
    scores, _ = queue_scores(evidence)
    return [(item_id(items[i], int(i), id_key), float(scores[i])) for i in top_n(scores, len(scores))]


class RelabelQueueStrategy(Strategy):
    """MONAI Label's next sample from the relabeling queue: the best-ranked image without a final label.

    The ranking (:func:`ranked_ids`) costs one pass of the trained network over the training split,
    so it is computed once per trained model (keyed by ``checkpoint.pt``'s size and time) and cached;
    a click only filters it by the datastore's unlabelled images. Unlabelled images that the
    datalist's training split does not hold come after the ranked ones, in id order; None once
    every image has a final label.
    """

    def __init__(self, bundle: str | Path, datalist: str | Path, work_datalist: str | Path | None = None,
                 overrides: Mapping[str, Any] | None = None, id_key: str | None = None) -> None:
        super().__init__("Relabeling queue: images whose training labels are most likely wrong, first")
        self.bundle = Path(bundle).resolve()
        self.datalist = Path(datalist).resolve()
        self.work_datalist = Path(work_datalist).resolve() if work_datalist else None
        self.overrides = dict(overrides or {})
        self.id_key = id_key
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._ranking: list[tuple[str, float]] = []
        #: How often the ranking was computed (one per trained model).
        self.computed = 0

    def _model_key(self) -> tuple:
        try:
            stat = (self.bundle / "models" / CHECKPOINT_FILE).stat()
        except FileNotFoundError:
            return (None,)
        return (stat.st_size, stat.st_mtime_ns, stat.st_ino)

    def ranking(self) -> list[tuple[str, float]]:
        """The cached ranking, recomputed when the trained model changed."""
        with self._lock:
            key = self._model_key()
            if key != self._key:
                # The datalist the model trained on (with its hand labels), once a round has written it.
                source = self.work_datalist if self.work_datalist is not None and self.work_datalist.is_file() else self.datalist
                started = time.monotonic()
                self._ranking = ranked_ids(self.bundle, source, self.overrides, self.id_key)
                self._key, self.computed = key, self.computed + 1
                logger.info("relabeling queue ranked %d images in %.1f s", len(self._ranking), time.monotonic() - started)
            return self._ranking

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        unlabelled = set(datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")))
        if not unlabelled:
            return None
        for rank, (image_id, score) in enumerate(self.ranking(), start=1):
            if image_id in unlabelled:
                return {"id": image_id, "score": score, "rank": rank}
        return {"id": sorted(unlabelled)[0], "score": None, "rank": None}


def _overrides(conf: Mapping[str, str]) -> dict[str, Any]:
    raw = conf.get("overrides") or "{}"
    value = json.loads(raw) if isinstance(raw, str) else dict(raw)
    if not isinstance(value, dict):
        raise ValueError(f"--conf overrides takes a JSON object of bundle config keys, got {raw!r}")
    return value


class ChestXrayLabelApp(MONAILabelApp):
    """The MONAI Label app: ``infer``/``train`` as :data:`MODEL`, strategies ``random`` and ``relabel_queue``.

    ``conf`` (``--conf KEY VALUE``): ``bundle`` (default ``APP_DIR/bundle``), ``dataset_dir`` and/or
    ``datalist`` (default ``dataset_dir/datalist.json``), ``overrides`` (JSON: bundle config keys for
    training and the queue, e.g. ``{"image_size": 256}``), ``id_key`` (default ``dicom_id``).
    """

    def __init__(self, app_dir: str, studies: str, conf: Mapping[str, str]) -> None:
        conf = dict(conf or {})
        self.bundle = Path(conf.get("bundle") or Path(app_dir) / "bundle").resolve()
        if not (self.bundle / "configs" / "train.json").is_file():
            raise FileNotFoundError(f"no bundle at {self.bundle}: pass --conf bundle BUNDLE_DIR (a copy of bundle/)")
        dataset_dir = conf.get("dataset_dir")
        datalist = conf.get("datalist") or (str(Path(dataset_dir) / "datalist.json") if dataset_dir else None)
        if not datalist or not Path(datalist).is_file():
            raise FileNotFoundError(f"no datalist ({datalist}): pass --conf dataset_dir DIR (with datalist.json) or --conf datalist FILE")
        self.datalist = Path(datalist).resolve()
        self.dataset_dir = Path(dataset_dir).resolve() if dataset_dir else self.datalist.parent
        self.bundle_overrides = {"dataset_dir": str(self.dataset_dir), **_overrides(conf)}
        self.id_key = conf.get("id_key") or None
        metadata = json.loads((self.bundle / "configs" / "metadata.json").read_text())
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="l2v chest X-ray",
                         description=metadata.get("name", ""), version=metadata.get("version", ""))

    def init_datastore(self) -> Datastore:
        return LocalDatastore(self.studies, extensions=list(IMAGE_EXTENSIONS),
                              auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                              read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def _infer_task(self) -> BundleInferTask | None:
        # The folder is not named "*classification*": say the type, or MONAI Label takes a segmentation.
        task = BundleInferTask(str(self.bundle), self.conf, type="classification")
        return task if task.is_valid() else None  # invalid while the bundle has no models/model.pt

    def init_infers(self) -> dict[str, Any]:
        task = self._infer_task()
        return {MODEL: task} if task is not None else {}

    def _refresh_infers(self) -> None:
        """Register the infer task once a model exists: a new app has none until its first round."""
        if MODEL not in self._infers and (self.bundle / "models" / MODEL_FILE).is_file():
            task = self._infer_task()
            if task is not None:
                self._infers[MODEL] = task

    def info(self) -> dict[str, Any]:
        self._refresh_infers()  # the server trains in a child process: the model may be new to this one
        return super().info()

    def infer(self, request: Mapping[str, Any], datastore: Datastore | None = None) -> Any:
        self._refresh_infers()
        return super().infer(request, datastore)

    def train(self, request: Mapping[str, Any]) -> Any:
        result = super().train(request)
        self._refresh_infers()  # the infer task reloads model.pt by itself when the file changes
        return result

    def init_trainers(self) -> dict[str, Any]:
        return {MODEL: HandLabelBundleTrainTask(self.bundle, self.conf, self.datalist, self.dataset_dir,
                                                self.bundle_overrides, self.id_key)}

    def init_strategies(self) -> dict[str, Strategy]:
        work = self.datalist.with_name(f"{self.datalist.stem}{WORK_SUFFIX}.json")
        return {"random": Random(),
                "relabel_queue": RelabelQueueStrategy(self.bundle, self.datalist, work, self.bundle_overrides, self.id_key)}


_MAIN_PY = '''"""MONAI Label loads the app class from this file: the chest X-ray bundle's app from l2v-monai."""

from l2v_monai.apps.monai_label import ChestXrayLabelApp  # noqa: F401
'''


def init_app_dir(app_dir: str | Path, bundle: str | Path) -> Path:
    """Write an app folder for ``monailabel start_server --app``: ``main.py`` and a copy of the bundle."""
    app_dir = Path(app_dir)
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "main.py").write_text(_MAIN_PY)
    target = app_dir / "bundle"
    if not target.exists():
        shutil.copytree(bundle, target, ignore=shutil.ignore_patterns("eval", "__pycache__"))
    return app_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m l2v_monai.apps.monai_label", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write an app folder (main.py and a copy of the bundle) for monailabel start_server")
    init.add_argument("app_dir", type=Path)
    init.add_argument("--bundle", type=Path, required=True, help="the bundle folder to copy (configs/, scripts/, models/)")
    args = parser.parse_args(argv)
    app_dir = init_app_dir(args.app_dir, args.bundle)
    print(f"wrote {app_dir / 'main.py'} and {app_dir / 'bundle'}; start with: "
          f"monailabel start_server --app {app_dir} --studies IMAGE_DIR --conf dataset_dir DATA_DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
