"""Chest X-ray decoding as a MONAI ``ImageReader``: ``LoadImaged(keys="image", reader=ChestXrayReader())``.

Every image, DICOM or JPEG/PNG, leaves the reader as a float32 ``H × W`` array in [0, 1], rows =
height, orientation exactly as stored; ``EnsureChannelFirstd`` then makes it ``1 × H × W``.

Choices, and why:

* **DICOM grey levels** follow the display chain of the standard: stored values → modality LUT
  (RescaleSlope/Intercept or a Modality LUT Sequence) → the first VOI LUT or window
  (WindowCenter/Width) when the file has one → MONOCHROME1 inverted, so that bone is bright in
  every image. The result is then scaled to [0, 1] by its own min and max. That makes 8-, 12- and
  16-bit files (and any rescale) land on the same scale without trusting ``BitsStored``, which
  some vendors fill in loosely. MONAI's ``PydicomReader`` applies neither the VOI LUT nor the
  MONOCHROME1 inversion, which is why this reader exists.
* **JPEG/PNG** are already display images; they get the same per-image min/max scaling, so both
  sources follow one rule and a JPEG rendered from a DICOM matches it.
* MONAI's ``PILReader`` and ``PydicomReader`` return 2D images transposed to (x, y) by default;
  this reader keeps numpy's (row, column) order instead, so a DICOM and its JPEG come out in the
  same orientation with no reader options to remember.

No identifier from a DICOM header ever reaches a message, a log or the image metadata: errors name
the file path and the failing step only. Needs ``numpy``, ``monai``, ``pydicom`` and ``pillow``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.transforms import Compose, LoadImaged
from monai.utils import ensure_tuple

DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = (*DICOM_SUFFIXES, ".jpg", ".jpeg", ".png")
# A DICOM Part 10 file has a 128-byte preamble followed by these four bytes.
DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
#: Metadata key that ``ChestXrayReader(mark_unreadable=True)`` sets: "" for a decoded image, else why it failed.
UNREADABLE_META_KEY = "unreadable"
# Size of the stand-in image of an unreadable file: later steps resize it like any other image.
_PLACEHOLDER_SHAPE = (2, 2)


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

    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.4 (MONAI Label pins it): the same functions, under their older module
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

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


@dataclass(frozen=True)
class ChestXray:
    """What ``ChestXrayReader.read`` returns for one file: its pixels, or why it could not be decoded."""

    path: str
    pixels: np.ndarray | None
    error: ImageDecodeError | None


class ChestXrayReader(ImageReader):
    """MONAI ``ImageReader`` for DICOM, JPEG and PNG chest X-rays (see the module notes for the rules).

    ``get_data`` returns a float32 ``H × W`` array in [0, 1] and metadata holding the original size
    (``original_spatial_shape``), ``original_channel_dim = "no_channel"`` (so
    ``EnsureChannelFirstd`` adds the channel); never a DICOM header field.

    A file that cannot be decoded raises ``ImageDecodeError`` (from ``get_data``: ``read`` keeps
    the error, because ``LoadImage`` would otherwise quietly try its other readers, with other
    rules). ``mark_unreadable=True`` is for inference over many files: such a file becomes a blank
    stand-in image whose metadata says why under ``UNREADABLE_META_KEY`` (readable images carry
    ``""`` there, so every item batches alike); the caller drops the stand-ins' predictions.

    One file per call: a chest X-ray is one radiograph, so a list of paths (MONAI's channel stack)
    is refused.
    """

    def __init__(self, mark_unreadable: bool = False) -> None:
        super().__init__()
        self.mark_unreadable = mark_unreadable

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """True when every name ends in .dcm, .dicom, .jpg, .jpeg or .png (any case)."""
        names = ensure_tuple(filename)
        return bool(names) and all(Path(str(name)).suffix.lower() in IMAGE_SUFFIXES for name in names)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> ChestXray:
        """Decode one file; a decode failure is kept in the result, raised (or marked) by ``get_data``."""
        names = ensure_tuple(data)
        if len(names) != 1 or not isinstance(names[0], (str, Path)):
            raise ValueError(f"ChestXrayReader reads one chest X-ray file per item, got {data!r}")
        path = str(names[0])
        try:
            return ChestXray(path, read_chest_xray(path), None)
        except ImageDecodeError as error:
            return ChestXray(path, None, error)

    def get_data(self, img: ChestXray) -> tuple[np.ndarray, dict]:
        """``(H × W float32 in [0, 1], metadata)``; raises the file's ``ImageDecodeError`` unless marking."""
        reason = ""
        if img.error is not None:
            if not self.mark_unreadable:
                raise img.error
            pixels, reason = np.zeros(_PLACEHOLDER_SHAPE, dtype=np.float32), img.error.reason
        else:
            pixels = img.pixels
        # No "spatial_shape": MONAI Label's Restored would try to resize the 14 class scores back to it.
        meta: dict[str, Any] = {
            "original_spatial_shape": tuple(pixels.shape),
            "original_channel_dim": "no_channel",
        }
        if self.mark_unreadable:
            meta[UNREADABLE_META_KEY] = reason
        return pixels, meta


def mark_unreadable(transform: Compose) -> Compose:
    """A copy of ``transform`` whose ``LoadImaged`` steps with a ``ChestXrayReader`` mark unreadable files.

    For the inference run's dataset, whose handlers drop and list the stand-ins. ``preprocessing``
    itself stays strict: MONAI Label runs it on single images, where a blank stand-in would be a
    silent wrong answer.
    """
    steps, changed = [], False
    for step in transform.transforms:
        # LoadImaged keeps its readers on its LoadImage (``_loader``); there is no public accessor.
        if isinstance(step, LoadImaged) and any(isinstance(r, ChestXrayReader) for r in step._loader.readers):
            step = copy.deepcopy(step)
            for reader in step._loader.readers:
                if isinstance(reader, ChestXrayReader):
                    reader.mark_unreadable = True
            changed = True
        steps.append(step)
    if not changed:
        raise ValueError("mark_unreadable: the transform has no LoadImaged step with a ChestXrayReader to change")
    marked = copy.copy(transform)
    marked.transforms = tuple(steps)
    return marked


__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "UNREADABLE_META_KEY",
    "ChestXray",
    "ChestXrayReader",
    "ImageDecodeError",
    "is_dicom_file",
    "mark_unreadable",
    "read_chest_xray",
    "read_dicom",
    "read_pil_image",
    "scale_to_unit_range",
]
