"""What inference predicts on: every image in a folder, or one split of a datalist.

``inference_items`` is the bundle's ``data``. An empty folder or split is an error
(``NoInputImagesError``), not a silent exit 0. Needs only the standard library.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .reader import IMAGE_SUFFIXES

logger = logging.getLogger(__name__)


class NoInputImagesError(FileNotFoundError):
    """Inference found nothing to predict on."""


def datalist_images(datalist: str | Path, split: str = "test") -> list[dict[str, str]]:
    """``[{"image": absolute path}]`` for the items of ``split`` in a datalist JSON; relative paths are against its folder."""
    path = Path(datalist)
    if not path.is_file():
        raise NoInputImagesError(f"datalist {path} not found")
    try:
        items = json.loads(path.read_text()).get(split) or []
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"datalist {path}: not a JSON object of splits ({error})") from error
    images = []
    for number, item in enumerate(items):
        image = item.get("image") if isinstance(item, dict) else None
        if not isinstance(image, str):
            raise ValueError(f"datalist {path}: item {number} of split {split!r} has no 'image' path")
        # Absolute, so that predictions.csv names each image the same way from any working folder
        # (l2v-evaluate and l2v-compare match its rows to the datalist by path).
        images.append({"image": os.path.abspath(image if Path(image).is_absolute() else path.parent / image)})
    return images


def inference_items(dataset_dir: str | Path, datalist: str | Path | None = None, split: str = "test") -> list[dict[str, str]]:
    """``[{"image": path}]`` for every DICOM/JPEG/PNG directly in ``dataset_dir`` (sorted), or for a datalist split.

    Files with other suffixes are counted in the log, not silently passed over. No image at all
    raises ``NoInputImagesError`` naming the folder or the datalist and split.
    """
    if datalist is not None:
        items = datalist_images(datalist, split)
        if not items:
            raise NoInputImagesError(f"datalist {datalist}: split {split!r} holds no images to predict on")
        logger.info("inference on %d images of split %r of %s", len(items), split, datalist)
        return items
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise NoInputImagesError(f"image folder {folder} does not exist (set --dataset_dir, or --datalist)")
    entries = sorted(p for p in folder.iterdir() if p.is_file())
    images = [str(p) for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    others = len(entries) - len(images)
    if not images:
        raise NoInputImagesError(
            f"image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files"
            + (f" ({others} other files)" if others else " (it is empty)")
        )
    if others:
        logger.warning("%s: %d files without an image suffix (%s) are not images to predict on",
                       folder, others, "/".join(IMAGE_SUFFIXES))
    logger.info("inference on %d images in %s", len(images), folder)
    return [{"image": path} for path in images]


__all__ = ["NoInputImagesError", "datalist_images", "inference_items"]
