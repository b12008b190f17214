"""The uint8 preprocessing cache: build, reuse, rebuild on change, explicit failures, and train.json's pipeline on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader
from PIL import Image
from dicom_files import ramp, write_dicom

from l2v_monai.data.cache import (
    CacheBuildError,
    CacheNotWritableError,
    CachedChestXrayDataset,
    LoadCachedChestXrayd,
    build_cache,
    cache_path,
)
from l2v_monai.data.transforms import preprocess_chest_xray

SIZE = 32
TRAIN = Path(__file__).resolve().parents[1] / "bundle" / "configs" / "train.json"


def bundle_preprocessing(**overrides) -> object:
    """``train.json``'s ``preprocessing`` for two label sets × two findings at ``SIZE``, as the bundle builds it."""
    parser = ConfigParser()
    parser.read_config(TRAIN)
    parser.update({"image_size": SIZE, "label_sets": ["a", "b"], "findings": ["x", "y"], **overrides})
    return parser.get_parsed_content("preprocessing")


def _png(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 40), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def sources(tmp_path) -> list[Path]:
    """Three small images in three formats."""
    folder = tmp_path / "images"
    folder.mkdir()
    jpeg = folder / "c.jpg"
    Image.fromarray(ramp(top=255).astype(np.uint8)).save(jpeg, quality=95)
    return [_png(folder / "a.png", 0), write_dicom(folder / "b.dcm", ramp(top=4095), 12), jpeg]


def _items(paths: list[Path]) -> list[dict]:
    return [{"image": str(p), "labels": [[1, None], [0, 1]], "label": [None, 1]} for p in paths]


def test_build_then_read_matches_the_uncached_pipeline(sources, tmp_path):
    cache_dir = tmp_path / "cache"
    first = build_cache(_items(sources), cache_dir, SIZE, progress=False)
    assert (first.built, first.reused, first.excluded) == (3, 0, [])
    for item, source in zip(first.items, sources):
        assert item["source_image"] == str(source)
        stored = np.load(item["image"])
        assert stored.dtype == np.uint8 and stored.shape == (SIZE, SIZE)
    dataset = CachedChestXrayDataset(_items(sources), cache_dir, SIZE, bundle_preprocessing(), progress=False)
    assert dataset.build_result.reused == 3 and dataset.build_result.built == 0
    # The dataset holds paths only: memory does not grow with the number of images.
    assert all(isinstance(item["image"], str) for item in dataset.data)
    for index, source in enumerate(sources):
        sample = dataset[index]
        image = sample["image"]
        assert tuple(image.shape) == (1, SIZE, SIZE) and image.dtype == torch.float32
        reference = preprocess_chest_xray(source, SIZE)
        # uint8 rounding: at most half a grey level away from the float pipeline.
        assert float(np.abs(image.numpy() - reference).max()) <= 0.5 / 255 + 1e-6
        assert torch.isnan(sample["labels"][0, 1]) and sample["label"][1] == 1
        assert torch.equal(dataset[index]["image"], image)  # a second read is identical


def test_dataset_batches(sources, tmp_path):
    dataset = CachedChestXrayDataset(_items(sources), tmp_path / "cache", SIZE, bundle_preprocessing(), progress=False)
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert tuple(batch["image"].shape) == (3, 1, SIZE, SIZE)
    assert tuple(batch["labels"].shape) == (3, 2, 2) and tuple(batch["label"].shape) == (3, 2)


def test_default_transform_only_loads_the_cached_image(sources, tmp_path):
    sample = CachedChestXrayDataset(_items(sources[:1]), tmp_path / "cache", SIZE, progress=False)[0]
    assert tuple(sample["image"].shape) == (1, SIZE, SIZE) and sample["labels"] == [[1, None], [0, 1]]


def test_bundle_preprocessing_names_the_source_image_of_a_bad_label(sources, tmp_path):
    items = _items(sources[:1])
    items[0]["labels"] = [[1, None], [0, -1]]  # an uncertain CheXpert label that was never mapped to 0/1
    dataset = CachedChestXrayDataset(items, tmp_path / "cache", SIZE, bundle_preprocessing(), progress=False)
    with pytest.raises(RuntimeError) as caught:
        dataset[0]
    cause = caught.value.__cause__
    assert isinstance(cause, ValueError) and "outside [0, 1]" in str(cause)
    assert str(sources[0]) in str(cause) and ".npy" not in str(cause)  # the user's file, not the cache entry
    # A datalist with three label sets where the config names two is refused too.
    items[0]["labels"] = [[1, 0], [0, 1], [1, 1]]
    dataset = CachedChestXrayDataset(items, tmp_path / "cache", SIZE, bundle_preprocessing(), progress=False)
    with pytest.raises(RuntimeError) as caught:
        dataset[0]
    assert "expected shape (2, 2), got (3, 2)" in str(caught.value.__cause__)


def test_corrupt_image_raises_with_every_failure_listed(sources, tmp_path):
    broken = sources[0].parent / "broken.jpg"
    broken.write_bytes(sources[2].read_bytes()[:300])
    missing = sources[0].parent / "missing.png"
    with pytest.raises(CacheBuildError, match=r"2 of 5 images could not be cached") as caught:
        build_cache(_items([*sources, broken, missing]), tmp_path / "cache", SIZE, progress=False)
    reasons = {f.image: f.reason for f in caught.value.failures}
    assert set(reasons) == {str(broken), str(missing)}
    assert reasons[str(missing)] == "file not found"
    assert "broken.jpg" in str(caught.value)
    # The good images were still cached, so the next build only has to retry the bad ones.
    assert all(cache_path(tmp_path / "cache", s, SIZE).exists() for s in sources)


def test_exclude_mode_returns_and_writes_the_exclusions(sources, tmp_path):
    broken = sources[0].parent / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 64)
    items = _items([*sources, broken])
    result = build_cache(items, tmp_path / "cache", SIZE, on_error="exclude", progress=False)
    assert [f.image for f in result.excluded] == [str(broken)]
    assert [i["source_image"] for i in result.items] == [str(s) for s in sources]

    with pytest.raises(ValueError, match="exclusions_file"):
        CachedChestXrayDataset(items, tmp_path / "cache", SIZE, on_error="exclude", progress=False)
    record = tmp_path / "out" / "excluded.json"
    dataset = CachedChestXrayDataset(
        items, tmp_path / "cache", SIZE, on_error="exclude", exclusions_file=record, progress=False
    )
    assert len(dataset) == 3
    written = json.loads(record.read_text())
    assert len(written) == 1 and written[0]["image"] == str(broken) and "DICOM" in written[0]["reason"]


def test_changed_source_is_rebuilt(sources, tmp_path):
    cache_dir = tmp_path / "cache"
    source = sources[0]
    before = build_cache(_items([source]), cache_dir, SIZE, progress=False)
    old_entry = before.items[0]["image"]
    _png(source, seed=99)  # new content under the same name
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse clocks: make sure mtime moves
    after = build_cache(_items([source]), cache_dir, SIZE, progress=False)
    assert (after.built, after.reused) == (1, 0)
    assert after.items[0]["image"] != old_entry
    fresh = LoadCachedChestXrayd(image_size=SIZE)({"image": after.items[0]["image"]})["image"]
    assert float(np.abs(fresh.numpy() - preprocess_chest_xray(source, SIZE)).max()) <= 0.5 / 255 + 1e-6


def test_image_size_is_part_of_the_key_and_checked_on_read(sources, tmp_path):
    small = build_cache(_items(sources[:1]), tmp_path / "cache", 16, progress=False)
    large = build_cache(_items(sources[:1]), tmp_path / "cache", SIZE, progress=False)
    assert small.items[0]["image"] != large.items[0]["image"] and large.built == 1
    with pytest.raises(ValueError, match=r"expected uint8 \(32, 32\)"):
        LoadCachedChestXrayd(image_size=SIZE)(small.items[0])


def test_missing_cache_entry_and_bad_arguments(sources, tmp_path):
    result = build_cache(_items(sources[:1]), tmp_path / "cache", SIZE, progress=False)
    Path(result.items[0]["image"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.png.*rebuild the cache"):
        LoadCachedChestXrayd(image_size=SIZE)(result.items[0])
    with pytest.raises(ValueError, match="on_error"):
        build_cache(_items(sources), tmp_path / "cache", SIZE, on_error="skip", progress=False)
    with pytest.raises(ValueError, match="item 1 has no image path"):
        build_cache([{"image": str(sources[0])}, {"labels": []}], tmp_path / "cache", SIZE, progress=False)


def test_parallel_build_matches_serial(sources, tmp_path):
    serial = build_cache(_items(sources), tmp_path / "serial", SIZE, progress=False)
    parallel = build_cache(_items(sources), tmp_path / "parallel", SIZE, num_workers=2, progress=False)
    assert parallel.built == 3
    for a, b in zip(serial.items, parallel.items):
        assert np.array_equal(np.load(a["image"]), np.load(b["image"]))


def test_an_unwritable_cache_folder_stops_before_decoding_and_names_the_key(sources, tmp_path):
    """A cache under a read-only place (here: below a regular file, which even root cannot write into)."""
    blocker = tmp_path / "read_only_mount"
    blocker.write_text("not a folder")
    with pytest.raises(CacheNotWritableError, match=rf"image cache folder {blocker}/cache is not writable .*set cache_dir"):
        build_cache([{"image": str(p)} for p in sources], blocker / "cache", image_size=32)


def test_the_bundle_cache_defaults_to_the_bundle_root_not_the_data_folder(tmp_path):
    """A read-only dataset folder works: the cache is a folder of the run's own."""
    root = Path(__file__).resolve().parents[1]
    parser = ConfigParser()
    parser.read_config(str(root / "bundle" / "configs" / "train.json"))
    parser.update({"dataset_dir": "/mnt/read_only/images", "bundle_root": str(tmp_path / "run")})
    cache_dir = Path(parser.get_parsed_content("cache_dir"))
    assert cache_dir.is_relative_to(tmp_path / "run") and not cache_dir.is_relative_to("/mnt/read_only")
