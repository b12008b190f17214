"""Chest X-ray preprocessing and label conversion as MONAI transforms.

Decoding has one home: the bundle's ``ChestXrayReader`` (``bundle/scripts/reader.py``, installed
as ``l2v_monai.bundle_scripts.reader``), which turns a DICOM, JPEG or PNG into a float32 ``H × W``
array in [0, 1] (modality LUT, VOI LUT or window, MONOCHROME1 inverted, per-image min/max; rows =
height). Its names are re-exported here, with ``LoadChestXrayd``, the same reader as a dictionary
transform. The standard pipeline then adds the channel (``1 × H × W``) and resizes to
``image_size × image_size``.

* **Plain resize, no padding.** The paper, torchxrayvision and most chest X-ray pipelines squash
  the (nearly square) radiograph to a square; padding would spend pixels on black borders and make
  the lungs smaller. ``mode="area"`` averages the source pixels under each target pixel, which is
  the correct low-pass filter when shrinking a 2-3k image to 256, and cannot overshoot [0, 1].
* Labels: datalist label sets (nested lists, ``null`` = no label) become float32 tensors with NaN.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    MapTransform,
    Resized,
    ScaleIntensityRanged,
)

from l2v_monai.bundle_scripts.reader import (
    DICOM_SUFFIXES,
    UNREADABLE_META_KEY,
    ChestXrayReader,
    ImageDecodeError,
    is_dicom_file,
    read_chest_xray,
    read_dicom,
    read_pil_image,
    scale_to_unit_range,
)

DEFAULT_IMAGE_SIZE = 256
DEFAULT_RESIZE_MODE = "area"


class LoadChestXrayd(MapTransform):
    """Replace each path under ``keys`` with its decoded image: a ``MetaTensor`` ``H × W`` float32 in [0, 1].

    ``ChestXrayReader`` as a dictionary transform, the same as ``LoadImaged(keys, reader=ChestXrayReader(...))``
    but without ``LoadImage``'s fallback to MONAI's other readers (and their construction on every
    call). The metadata holds the file name and the original size, never DICOM header fields.
    ``mark_unreadable=True`` turns an undecodable file into a marked blank stand-in (see the reader);
    by default a bad file raises ``ImageDecodeError``.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False, mark_unreadable: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reader = ChestXrayReader(mark_unreadable=mark_unreadable)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if not isinstance(path, (str, Path)):
                raise TypeError(f"LoadChestXrayd expects a file path under {key!r}, got {type(path).__name__}")
            pixels, meta = self.reader.get_data(self.reader.read(path))
            d[key] = MetaTensor(torch.from_numpy(pixels), meta={**meta, "filename_or_obj": str(path)})
        return d


def _describe_item(data: Mapping[Hashable, Any], image_key: str) -> str:
    """Name a datalist item in error messages by its image path (never by report text)."""
    image = data.get(image_key)
    if isinstance(image, (str, Path)):
        return f"item with image {str(image)!r}"
    meta = getattr(image, "meta", None)
    if isinstance(meta, Mapping) and "filename_or_obj" in meta:
        return f"item with image {meta['filename_or_obj']!r}"
    return "item without an image path"


def _nested_shape(value: Any, ndim: int, where: str, depth: int | None = None) -> tuple[int, ...]:
    """Shape of a rectangular nested list of depth ``ndim``; raise naming ``where`` when ragged."""
    depth = ndim if depth is None else depth
    if ndim == 0:
        return ()
    if not isinstance(value, (list, tuple)):
        example = "[[0, 1, null], ...]" if depth == 2 else "[0, 1, null]"
        found = type(value).__name__
        raise ValueError(f"{where}: expected lists nested to depth {depth} like {example}, found a {found}")
    inner = {_nested_shape(element, ndim - 1, where, depth) for element in value}
    if len(inner) > 1:
        raise ValueError(f"{where}: rows have different lengths {sorted(inner)}")
    return (len(value), *(inner.pop() if inner else (0,) * (ndim - 1)))


def _to_float(value: Any, where: str) -> float:
    """One label value: ``None`` (JSON null) → NaN, numbers → float, anything else is an error."""
    if value is None:
        return math.nan
    if isinstance(value, (bool, int, float, np.integer, np.floating)):
        return float(value)
    raise ValueError(f"{where}: label value {value!r} is a {type(value).__name__}, expected a number or null")


class LabelSetsToTensord(MapTransform):
    """Turn datalist labels (nested lists, ``null`` = no label) into float32 tensors with NaN for missing.

    ``ndim=2`` for ``labels`` (``M × N``: label sets × findings), ``ndim=1`` for a clean ``label``
    (``N``). Values must be NaN or in [0, 1]: a stray CheXpert ``-1`` (uncertain, not mapped to 0 or
    1) is caught here. ``num_label_sets`` / ``num_findings``, when given, are checked too.
    """

    def __init__(
        self,
        keys: KeysCollection = "labels",
        ndim: int = 2,
        num_label_sets: int | None = None,
        num_findings: int | None = None,
        image_key: str = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if ndim not in (1, 2):
            raise ValueError(f"ndim must be 1 (one label vector) or 2 (label sets × findings), got {ndim}")
        self.ndim = ndim
        self.num_label_sets = num_label_sets
        self.num_findings = num_findings
        self.image_key = image_key

    def _expected_shape(self) -> tuple[int | None, ...]:
        return (self.num_findings,) if self.ndim == 1 else (self.num_label_sets, self.num_findings)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            where = f"{_describe_item(d, self.image_key)}, key {key!r}"
            value = d[key]
            if isinstance(value, (torch.Tensor, np.ndarray)):
                array = torch.as_tensor(value).to(torch.float32).cpu().numpy()
                if array.ndim != self.ndim:
                    raise ValueError(f"{where}: expected {self.ndim} dimensions, got shape {tuple(array.shape)}")
            else:
                shape = _nested_shape(value, self.ndim, where)
                flat = value if self.ndim == 1 else [v for row in value for v in row]
                array = np.array([_to_float(v, where) for v in flat], dtype=np.float32).reshape(shape)
            for got, want in zip(array.shape, self._expected_shape()):
                if want is not None and got != want:
                    raise ValueError(f"{where}: expected shape {self._expected_shape()}, got {tuple(array.shape)}")
            known = array[~np.isnan(array)]
            if ((known < 0) | (known > 1)).any():
                bad = sorted({float(v) for v in known[(known < 0) | (known > 1)]})
                raise ValueError(f"{where}: label values {bad} outside [0, 1] (uncertain labels not mapped to 0/1?)")
            d[key] = torch.from_numpy(np.ascontiguousarray(array))
        return d


def chest_xray_image_transforms(
    image_size: int = DEFAULT_IMAGE_SIZE, image_key: str = "image", mode: str = DEFAULT_RESIZE_MODE
) -> Compose:
    """Path → ``1 × image_size × image_size`` float32 in [0, 1]: load, add channel, resize, clip."""
    return Compose(
        [
            LoadChestXrayd(keys=image_key),
            EnsureChannelFirstd(keys=image_key, channel_dim="no_channel"),
            Resized(keys=image_key, spatial_size=(image_size, image_size), mode=mode),
            # "area" cannot overshoot, but bicubic can: keep the [0, 1] promise whatever the mode.
            ScaleIntensityRanged(keys=image_key, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        ],
        log_stats=False,  # MONAI's error logging would print every item field, report text included
    )


def label_transforms(
    labels_key: str = "labels",
    label_key: str = "label",
    num_label_sets: int | None = None,
    num_findings: int | None = None,
    image_key: str = "image",
) -> list[MapTransform]:
    """The datalist label conversions: noisy label sets ``M × N`` and, when present, a clean ``N`` label."""
    return [
        LabelSetsToTensord(labels_key, 2, num_label_sets, num_findings, image_key, allow_missing_keys=True),
        LabelSetsToTensord(label_key, 1, None, num_findings, image_key, allow_missing_keys=True),
    ]


def chest_xray_transforms(
    image_size: int = DEFAULT_IMAGE_SIZE,
    image_key: str = "image",
    labels_key: str = "labels",
    label_key: str = "label",
    num_label_sets: int | None = None,
    num_findings: int | None = None,
    mode: str = DEFAULT_RESIZE_MODE,
) -> Compose:
    """Standard preprocessing of a datalist item (no augmentation): labels to tensors, then the image.

    Labels are converted first so that a malformed row fails before an expensive decode.
    """
    return Compose(
        [
            *label_transforms(labels_key, label_key, num_label_sets, num_findings, image_key),
            *chest_xray_image_transforms(image_size, image_key, mode).transforms,
            EnsureTyped(keys=image_key, data_type="tensor", dtype=torch.float32),
        ],
        log_stats=False,  # MONAI's error logging would print every item field, report text included
    )


def preprocess_chest_xray(
    path: str | Path, image_size: int = DEFAULT_IMAGE_SIZE, mode: str = DEFAULT_RESIZE_MODE
) -> np.ndarray:
    """The image half of ``chest_xray_transforms`` for one file: float32 ``1 × S × S`` in [0, 1].

    The steps are called one by one rather than through ``Compose``, because ``Compose`` re-raises
    every error as a bare ``RuntimeError``; callers here (the cache build) need ``ImageDecodeError``.
    """
    data: dict[Hashable, Any] = {"image": str(path)}
    for step in chest_xray_image_transforms(image_size, "image", mode).transforms:
        data = step(data)
    out = data["image"]
    return np.asarray(torch.as_tensor(out).detach().cpu().numpy(), dtype=np.float32)


__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_RESIZE_MODE",
    "DICOM_SUFFIXES",
    "UNREADABLE_META_KEY",
    "ChestXrayReader",
    "ImageDecodeError",
    "LabelSetsToTensord",
    "LoadChestXrayd",
    "chest_xray_image_transforms",
    "chest_xray_transforms",
    "is_dicom_file",
    "label_transforms",
    "preprocess_chest_xray",
    "read_chest_xray",
    "read_dicom",
    "read_pil_image",
    "scale_to_unit_range",
]
