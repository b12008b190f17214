"""Chest X-ray decoding and normalisation as MONAI transforms.

Every image, DICOM or JPEG/PNG, leaves the loader as a float32 ``H × W`` array in [0, 1], rows =
height, orientation exactly as stored. The standard pipeline then adds the channel (``1 × H × W``)
and resizes to ``image_size × image_size``.

Choices, and why:

* **DICOM grey levels** follow the display chain of the standard: stored values → modality LUT
  (RescaleSlope/Intercept or a Modality LUT Sequence) → the first VOI LUT or window
  (WindowCenter/Width) when the file has one → MONOCHROME1 inverted, so that bone is bright in
  every image. The result is then scaled to [0, 1] by its own min and max. That makes 8-, 12- and
  16-bit files (and any rescale) land on the same scale without trusting ``BitsStored``, which
  some vendors fill in loosely.
* **JPEG/PNG** are already display images; they get the same per-image min/max scaling, so both
  sources follow one rule and a JPEG rendered from a DICOM matches it (tested).
* **Plain resize, no padding.** The paper, torchxrayvision and most chest X-ray pipelines squash
  the (nearly square) radiograph to a square; padding would spend pixels on black borders and make
  the lungs smaller. ``mode="area"`` averages the source pixels under each target pixel, which is
  the correct low-pass filter when shrinking a 2-3k image to 256, and cannot overshoot [0, 1].
* MONAI's own ``LoadImaged`` readers (``PILReader``, ``PydicomReader``) return 2D images
  transposed to (x, y) by default; this loader keeps numpy's (row, column) order instead, so a
  DICOM and its JPEG come out in the same orientation with no reader options to remember.

No identifier from a DICOM header ever reaches a message, a log or the image metadata: errors name
the file path and the failing step only.
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

DICOM_SUFFIXES = (".dcm", ".dicom")
# A DICOM Part 10 file has a 128-byte preamble followed by these four bytes.
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
DEFAULT_IMAGE_SIZE = 256
DEFAULT_RESIZE_MODE = "area"


class ImageDecodeError(ValueError):
    """An image file could not be read or turned into a grey-level image; names the path and cause."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode image {self.path}: {reason}")


def is_dicom_file(path: str | Path) -> bool:
    """True when the file carries the DICOM Part 10 ``DICM`` marker."""
    with open(path, "rb") as handle:
        head = handle.read(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))
    return head[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC


def scale_to_unit_range(pixels: np.ndarray, path: str | Path) -> np.ndarray:
    """Min/max scale to float32 [0, 1]; a constant image carries nothing to learn from, so it is an error."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if not np.isfinite(pixels).all():
        raise ImageDecodeError(path, "pixel values contain NaN or infinity")
    low, high = float(pixels.min()), float(pixels.max())
    if high <= low:
        raise ImageDecodeError(path, f"image is constant (every pixel = {low:g})")
    return ((pixels - low) / (high - low)).astype(np.float32)


def read_dicom(path: str | Path) -> np.ndarray:
    """Decode a single-frame greyscale DICOM to float32 ``H × W`` in [0, 1] (see the module notes)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as error:  # pydicom raises many types for a broken file; all mean "unreadable"
        raise ImageDecodeError(path, f"unreadable DICOM ({type(error).__name__}: {error})") from error
    if "PixelData" not in ds:
        raise ImageDecodeError(path, "DICOM has no PixelData element")
    # pydicom parses elements lazily, so a malformed value (NumberOfFrames '1A') surfaces only here:
    # it must become this file's decode error, or one bad file would abort a whole cache build.
    samples = _header_int(ds, "SamplesPerPixel", path)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageDecodeError(
            path, f"colour DICOM (SamplesPerPixel={samples}, PhotometricInterpretation={photometric or 'missing'}); "
            "only greyscale MONOCHROME1/MONOCHROME2 radiographs are supported"
        )
    frames = _header_int(ds, "NumberOfFrames", path)
    if frames != 1:
        raise ImageDecodeError(path, f"multi-frame DICOM ({frames} frames); expected one radiograph per file")
    try:
        stored = ds.pixel_array
        modality = apply_modality_lut(stored, ds)
        windowed = apply_voi_lut(modality, ds, index=0)
    except Exception as error:  # truncated pixel data, missing codec plugin, malformed LUT ...
        raise ImageDecodeError(path, f"cannot decode DICOM pixel data ({type(error).__name__}: {error})") from error
    if windowed.ndim != 2:
        raise ImageDecodeError(path, f"expected a 2D pixel array, got shape {tuple(windowed.shape)}")
    unit = scale_to_unit_range(windowed, path)
    # MONOCHROME1 stores bright bone as low values; invert so that every image reads the same way.
    return (1.0 - unit) if photometric == "MONOCHROME1" else unit


def _header_int(ds: Any, keyword: str, path: str | Path) -> int:
    """An integer header element (1 when absent or empty); a malformed value is an ``ImageDecodeError``."""
    try:
        value = ds.get(keyword, 1)
        return int(value) if value not in (None, "") else 1
    except Exception as error:  # pydicom raises ValueError, TypeError or its own errors on bad VRs
        text = _raw_text(ds, keyword)
        raise ImageDecodeError(
            path, f"malformed DICOM header: {keyword} is {text!r}, not an integer ({type(error).__name__})"
        ) from error


def _raw_text(ds: Any, keyword: str) -> str:
    """The element's value as stored (before pydicom's conversion), for error messages about integer fields."""
    from pydicom.datadict import tag_for_keyword

    try:
        raw = ds.get_item(tag_for_keyword(keyword)).value
    except Exception:  # the message must not fail while describing a failure
        return "?"
    return raw.decode("ascii", "replace").strip() if isinstance(raw, bytes) else str(raw)


def read_pil_image(path: str | Path) -> np.ndarray:
    """Decode a JPEG/PNG (8- or 16-bit greyscale; colour is converted to luma) to float32 ``H × W`` in [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            # Image.open is lazy: load() is what decodes, and what fails on a truncated file.
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L"):
                pixels = np.asarray(image)
            else:
                pixels = np.asarray(image.convert("L"))
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError ... for bad files
        raise ImageDecodeError(path, f"unreadable image ({type(error).__name__}: {error})") from error
    if pixels.ndim != 2:
        raise ImageDecodeError(path, f"expected a 2D greyscale image, got shape {tuple(pixels.shape)}")
    return scale_to_unit_range(pixels, path)


def read_chest_xray(path: str | Path) -> np.ndarray:
    """Read a DICOM, JPEG or PNG chest X-ray as float32 ``H × W`` in [0, 1]; raise ``ImageDecodeError`` on failure."""
    path = Path(path)
    if not path.is_file():
        raise ImageDecodeError(path, "file not found")
    try:
        dicom = is_dicom_file(path)
    except OSError as error:
        raise ImageDecodeError(path, f"cannot open file ({error})") from error
    if dicom:
        return read_dicom(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        raise ImageDecodeError(path, "named as DICOM but has no 'DICM' marker at byte 128 (corrupt or not DICOM)")
    return read_pil_image(path)


#: Metadata key that ``LoadChestXrayd(mark_unreadable=True)`` sets: "" for a decoded image, else why it failed.
UNREADABLE_META_KEY = "unreadable"
# Size of the stand-in image of an unreadable file: later steps resize it like any other image.
_PLACEHOLDER_SHAPE = (2, 2)


class LoadChestXrayd(MapTransform):
    """Replace each path under ``keys`` with its decoded image: a ``MetaTensor`` ``H × W`` float32 in [0, 1].

    The metadata holds the file name, the format and the original size, never DICOM header fields.

    ``mark_unreadable=True`` is for inference over many files: a file that cannot be decoded
    (``ImageDecodeError``) becomes a blank stand-in image whose metadata says why under
    ``UNREADABLE_META_KEY`` (readable images carry ``""`` there, so every item batches alike);
    the caller must drop the stand-ins' predictions and list them (``l2v_monai.data.inference_inputs``).
    By default a bad file raises.
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False, mark_unreadable: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mark_unreadable = mark_unreadable

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if not isinstance(path, (str, Path)):
                raise TypeError(f"LoadChestXrayd expects a file path under {key!r}, got {type(path).__name__}")
            reason = ""
            try:
                pixels = read_chest_xray(path)
            except ImageDecodeError as error:
                if not self.mark_unreadable:
                    raise
                pixels, reason = np.zeros(_PLACEHOLDER_SHAPE, dtype=np.float32), error.reason
            meta: dict[str, Any] = {
                "filename_or_obj": str(path),
                "original_spatial_shape": tuple(pixels.shape),
                "original_channel_dim": "no_channel",
            }
            if self.mark_unreadable:
                meta[UNREADABLE_META_KEY] = reason
            d[key] = MetaTensor(torch.from_numpy(pixels), meta=meta)
        return d


def mark_unreadable(transform: Compose) -> Compose:
    """A copy of ``transform`` whose ``LoadChestXrayd`` steps mark unreadable files instead of raising."""
    steps = [
        LoadChestXrayd(step.keys, step.allow_missing_keys, mark_unreadable=True) if isinstance(step, LoadChestXrayd) else step
        for step in transform.transforms
    ]
    if not any(isinstance(step, LoadChestXrayd) for step in steps):
        raise ValueError("mark_unreadable: the transform has no LoadChestXrayd step to change")
    return Compose(steps, log_stats=False)  # log_stats=False: MONAI would log item fields on an error


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
    "UNREADABLE_META_KEY",
    "ImageDecodeError",
    "LabelSetsToTensord",
    "LoadChestXrayd",
    "chest_xray_image_transforms",
    "chest_xray_transforms",
    "label_transforms",
    "mark_unreadable",
    "preprocess_chest_xray",
    "read_chest_xray",
    "read_dicom",
    "read_pil_image",
]
