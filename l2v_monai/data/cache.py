"""A disk cache of preprocessed chest X-rays: one ``S × S`` uint8 ``.npy`` per source image.

Decoding and windowing a 2-3k pixel 16-bit DICOM costs a large fraction of a second; reading a
64 KiB array costs well under a millisecond. The cache is built once, before training, and every
epoch after that reads only the small files.

Layout and why:

* **One file per image**, ``<cache_dir>/<key[:2]>/<key>.npy``. The key is a SHA-256 of the
  resolved source path, its size and modification time (so an edited or replaced file gets a new
  entry), the output size, the resize mode and ``CACHE_FORMAT_VERSION`` (bumped whenever the
  preprocessing changes). Per-file entries make the build incremental and restartable, let
  several splits or datalists share images, and need no index that could drift out of step with
  the files; the two-character shard keeps directories small at MIMIC scale (377k images).
  Entries are written to a temporary name and renamed, so a killed build or two ranks building at
  once never leave a half-written array behind.
* **uint8, not float**: the pipeline output is in [0, 1]; storing ``round(255 x)`` loses at most
  1/510, which is far below the noise of the JPEG exports most chest X-ray work trains on, and
  keeps MIMIC-CXR at 377k × 64 KiB ≈ 25 GB instead of 99 GB of float32.
* **Nothing is held in memory**: each ``__getitem__`` reads one file, so RAM does not grow with
  the dataset; the operating system's page cache does the rest.
* **Failures are explicit**: a file that cannot be decoded is reported with its path and reason.
  ``on_error="raise"`` (default) raises one ``CacheBuildError`` listing every failure after the
  pass; ``on_error="exclude"`` drops those items and returns them, and ``CachedChestXrayDataset``
  then insists on an ``exclusions_file`` to write them to. Training never meets a bad file.

Stale entries (from source files that changed) are not deleted; remove the folder to reclaim space.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import Dataset, MetaTensor
from monai.transforms import MapTransform
from tqdm.auto import tqdm

from l2v_monai.data.transforms import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_RESIZE_MODE,
    ImageDecodeError,
    preprocess_chest_xray,
)

logger = logging.getLogger(__name__)

# Bump whenever decoding, windowing, resizing or quantisation changes: old entries then miss.
CACHE_FORMAT_VERSION = 1
SOURCE_KEY = "source_image"
ON_ERROR_CHOICES = ("raise", "exclude")


@dataclass(frozen=True)
class CacheFailure:
    """One image that could not be cached: its source path and why."""

    image: str
    reason: str


@dataclass
class CacheBuildResult:
    """What ``build_cache`` did.

    ``items`` are the input items that were cached, each with ``image`` pointing at its ``.npy``
    and ``source_image`` at the original file; ``excluded`` lists the images left out.
    """

    items: list[dict[Hashable, Any]]
    excluded: list[CacheFailure] = field(default_factory=list)
    built: int = 0
    reused: int = 0

    def write_exclusions(self, path: str | Path) -> Path:
        """Write ``excluded`` as a JSON list of ``{"image", "reason"}`` (an empty list when none)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([asdict(f) for f in self.excluded], indent=1) + "\n")
        return path


class CacheBuildError(RuntimeError):
    """Raised by ``build_cache(on_error="raise")`` after the pass; ``failures`` lists every bad image."""

    def __init__(self, failures: Sequence[CacheFailure], total: int, shown: int = 10) -> None:
        self.failures = list(failures)
        lines = [f"  {f.image}: {f.reason}" for f in self.failures[:shown]]
        if len(self.failures) > shown:
            lines.append(f"  ... and {len(self.failures) - shown} more")
        super().__init__(
            f"{len(self.failures)} of {total} images could not be cached:\n" + "\n".join(lines) +
            "\nFix or remove them, or build with on_error='exclude' and keep the exclusion list."
        )


def cache_key(source: str | Path, image_size: int = DEFAULT_IMAGE_SIZE, mode: str = DEFAULT_RESIZE_MODE) -> str:
    """Hex key of a source file's cache entry; changes when the file's size or mtime changes."""
    resolved = Path(source).resolve()
    stat = resolved.stat()
    text = f"v{CACHE_FORMAT_VERSION}|{resolved}|{stat.st_size}|{stat.st_mtime_ns}|{image_size}|{mode}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_path(
    cache_dir: str | Path, source: str | Path, image_size: int = DEFAULT_IMAGE_SIZE, mode: str = DEFAULT_RESIZE_MODE
) -> Path:
    """Where the cache entry of ``source`` lives (whether or not it exists yet)."""
    key = cache_key(source, image_size, mode)
    return Path(cache_dir) / key[:2] / f"{key}.npy"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``1 × S × S`` (or ``S × S``) float in [0, 1] → ``S × S`` uint8, rounded to the nearest level."""
    plane = np.asarray(image, dtype=np.float32)
    plane = plane[0] if plane.ndim == 3 and plane.shape[0] == 1 else plane
    if plane.ndim != 2:
        raise ValueError(f"expected a one-channel 2D image, got shape {tuple(np.shape(image))}")
    return np.rint(np.clip(plane, 0.0, 1.0) * 255.0).astype(np.uint8)


def _write_atomically(target: Path, array: np.ndarray) -> None:
    """Save under a temporary name and rename, so readers only ever see complete files."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.stem}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(temporary, target)


class CacheNotWritableError(PermissionError):
    """The cache folder cannot be created or written; the message names the folder and the key to set."""


def _check_writable(cache_dir: Path) -> None:
    """Fail before decoding anything when ``cache_dir`` cannot take new entries (a read-only data mount)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = cache_dir / f".write_probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise CacheNotWritableError(
            f"image cache folder {cache_dir} is not writable ({error.strerror or error}): set cache_dir "
            "(e.g. --cache_dir /scratch/cxr_cache) to a folder this job can write"
        ) from error


def _cache_one(job: tuple[str, str, int, str]) -> str | None:
    """Decode, resize and store one image; return the failure reason, or None on success."""
    source, target, image_size, mode = job
    try:
        image = preprocess_chest_xray(source, image_size, mode)
    except ImageDecodeError as error:
        return error.reason
    _write_atomically(Path(target), to_uint8(image))
    return None


def _single_thread_worker() -> None:
    """Worker processes already give parallelism; torch threads inside them would only oversubscribe."""
    torch.set_num_threads(1)


def build_cache(
    items: Iterable[Mapping[Hashable, Any]],
    cache_dir: str | Path,
    image_size: int = DEFAULT_IMAGE_SIZE,
    *,
    mode: str = DEFAULT_RESIZE_MODE,
    image_key: str = "image",
    on_error: str = "raise",
    num_workers: int = 0,
    progress: bool = True,
) -> CacheBuildResult:
    """Make sure every item's image is cached; return the items re-pointed at their cache entries.

    Entries that already exist for the current file version are reused. Decoding failures are
    collected over the whole pass, then raised (``on_error="raise"``) or returned as exclusions
    (``on_error="exclude"``). ``num_workers > 0`` decodes in that many processes.
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    items = list(items)
    cache_dir = Path(cache_dir)
    failures: dict[str, str] = {}
    targets: list[Path | None] = []
    jobs: dict[str, tuple[str, str, int, str]] = {}
    reused = 0
    for index, item in enumerate(items):
        if image_key not in item or not isinstance(item[image_key], (str, Path)):
            raise ValueError(f"datalist item {index} has no image path under {image_key!r}")
        source = str(item[image_key])
        try:
            target = cache_path(cache_dir, source, image_size, mode)
        except FileNotFoundError:
            failures[source] = "file not found"
            targets.append(None)
            continue
        targets.append(target)
        if target.exists():
            reused += 1
        elif str(target) not in jobs:  # the same image listed twice is decoded once
            jobs[str(target)] = (source, str(target), image_size, mode)

    if jobs:
        _check_writable(cache_dir)
    with tqdm(total=len(jobs), desc="caching chest X-rays", unit="img", disable=not progress) as bar:
        if num_workers > 0 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=num_workers, initializer=_single_thread_worker) as pool:
                chunk = max(1, min(16, len(jobs) // (4 * num_workers)))
                outcomes = pool.map(_cache_one, jobs.values(), chunksize=chunk)
                for job, reason in zip(jobs.values(), outcomes):
                    if reason is not None:
                        failures[job[0]] = reason
                    bar.update()
        else:
            for job in jobs.values():
                reason = _cache_one(job)
                if reason is not None:
                    failures[job[0]] = reason
                bar.update()

    excluded = [CacheFailure(source, reason) for source, reason in failures.items()]
    if excluded and on_error == "raise":
        raise CacheBuildError(excluded, total=len(items))
    kept: list[dict[Hashable, Any]] = []
    for item, target in zip(items, targets):
        if target is None or str(item[image_key]) in failures:
            continue
        kept.append({**item, image_key: str(target), SOURCE_KEY: str(item[image_key])})
    built = len(jobs) - sum(1 for job in jobs.values() if job[0] in failures)
    for failure in excluded:
        logger.warning("excluded from the cache: %s (%s)", failure.image, failure.reason)
    logger.info("chest X-ray cache %s: %d built, %d reused, %d excluded", cache_dir, built, reused, len(excluded))
    return CacheBuildResult(items=kept, excluded=excluded, built=built, reused=reused)


class LoadCachedChestXrayd(MapTransform):
    """Replace each cache path under ``keys`` with a ``1 × S × S`` float32 ``MetaTensor`` in [0, 1]."""

    def __init__(
        self,
        keys: KeysCollection = "image",
        image_size: int | None = DEFAULT_IMAGE_SIZE,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_size = image_size

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = Path(d[key])
            source = d.get(SOURCE_KEY, str(path))
            if not path.is_file():
                raise FileNotFoundError(f"cache entry {path} for image {source} is missing; rebuild the cache")
            plane = np.load(path, allow_pickle=False)
            expected = None if self.image_size is None else (self.image_size, self.image_size)
            if plane.dtype != np.uint8 or plane.ndim != 2 or (expected is not None and plane.shape != expected):
                raise ValueError(
                    f"cache entry {path} for image {source} holds {plane.dtype} {plane.shape}, "
                    f"expected uint8 {expected or '(S, S)'}; was it built with another image_size?"
                )
            image = torch.from_numpy(plane).to(torch.float32).div_(255.0).unsqueeze(0)
            d[key] = MetaTensor(image, meta={"filename_or_obj": str(source), "cache_file": str(path)})
        return d


class CachedChestXrayDataset(Dataset):
    """A MONAI ``Dataset`` over datalist items whose images are read from the uint8 disk cache.

    Building (or checking) the cache happens here, before any epoch. With ``on_error="exclude"``
    an ``exclusions_file`` is required and always written (an empty list when nothing failed), so
    left-out images are on record. ``transform`` defaults to ``LoadCachedChestXrayd`` alone; the
    bundle's ``preprocessing`` (``train.json``) puts the label conversions in front of it, naming
    the source image (``source_image``) rather than its cache entry in any error.
    """

    def __init__(
        self,
        data: Sequence[Mapping[Hashable, Any]],
        cache_dir: str | Path,
        image_size: int = DEFAULT_IMAGE_SIZE,
        transform: Any = None,
        *,
        on_error: str = "raise",
        exclusions_file: str | Path | None = None,
        num_workers: int = 0,
        progress: bool = True,
        mode: str = DEFAULT_RESIZE_MODE,
    ) -> None:
        if on_error == "exclude" and exclusions_file is None:
            raise ValueError("on_error='exclude' needs exclusions_file, so that left-out images are written down")
        self.build_result = build_cache(
            data, cache_dir, image_size, mode=mode, on_error=on_error, num_workers=num_workers, progress=progress
        )
        self.excluded = self.build_result.excluded
        if exclusions_file is not None:
            self.build_result.write_exclusions(exclusions_file)
        if transform is None:
            transform = LoadCachedChestXrayd(image_size=image_size)
        super().__init__(self.build_result.items, transform)


__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheBuildError",
    "CacheBuildResult",
    "CacheFailure",
    "CacheNotWritableError",
    "CachedChestXrayDataset",
    "LoadCachedChestXrayd",
    "build_cache",
    "cache_key",
    "cache_path",
    "to_uint8",
]
