"""Images per second: decoding full-size DICOMs versus reading the uint8 preprocessing cache.

Makes ``--count`` full-size 16-bit DICOMs (row-shifted copies of a real radiograph given with
``--dicom``, synthetic 2500 × 2000 radiograph-like images otherwise), then in one
process times (a) decode + window + resize from DICOM and (b) reading the built cache, both on a
warm page cache, and prints the two rates and their ratio.

    python scripts/bench_cache.py --count 32 --image-size 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from l2v_monai.data.cache import LoadCachedChestXrayd, build_cache
from l2v_monai.data.transforms import preprocess_chest_xray

SYNTHETIC_SHAPE = (2500, 2000)


def _write(ds, pixels: np.ndarray, path: Path) -> None:
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.Rows, ds.Columns = pixels.shape
    ds.save_as(path, enforce_file_format=True)


def _synthetic_template():
    """A header for a 16-bit MONOCHROME2 DX image with no identifiers."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.WindowCenter, ds.WindowWidth = 32768, 60000
    return ds


def make_dicoms(folder: Path, count: int, real: Path | None = None, seed: int = 0) -> tuple[list[Path], str]:
    """Write ``count`` full-size 16-bit DICOMs; return their paths and where they came from."""
    import pydicom
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    if real is not None:
        ds = pydicom.dcmread(real)
        base = ds.pixel_array
        # The copies need no identifiers; blank them so the temporary files hold none.
        for keyword in ("PatientID", "PatientName", "PatientBirthDate", "StudyDate", "AccessionNumber"):
            if keyword in ds:
                setattr(ds, keyword, "")
        source = f"row-shifted copies of a real {base.shape[0]}x{base.shape[1]} radiograph"
    else:
        ds = _synthetic_template()
        rows, cols = np.mgrid[0 : SYNTHETIC_SHAPE[0], 0 : SYNTHETIC_SHAPE[1]]
        base = (20000 + 30000 * np.sin(rows / 400.0) * np.cos(cols / 300.0) ** 2).astype(np.float64)
        source = f"synthetic {SYNTHETIC_SHAPE[0]}x{SYNTHETIC_SHAPE[1]} 16-bit images"
    paths = []
    for index in range(count):
        pixels = np.roll(base, shift=int(rng.integers(0, 200)), axis=0).astype(np.float64)
        pixels += rng.normal(0.0, 50.0, size=pixels.shape)  # every file decodes to different values
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = folder / f"image_{index:03d}.dcm"
        _write(ds, np.clip(pixels, 0, 65535), path)
        paths.append(path)
    return paths, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=32, help="number of full-size DICOMs")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--cache-passes", type=int, default=20, help="cache read passes (fast: repeat to time)")
    parser.add_argument("--dicom", type=Path, help="a real DX DICOM to copy (default: synthetic images)")
    args = parser.parse_args()
    if args.dicom is not None and not args.dicom.is_file():
        parser.error(f"--dicom {args.dicom}: no such file")

    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        folder = Path(tmp)
        paths, source = make_dicoms(folder, args.count, args.dicom)
        print(f"{args.count} DICOMs: {source}; torch threads: {torch.get_num_threads()}")

        for path in paths[:2]:  # warm-up: imports, first-call overheads, page cache
            preprocess_chest_xray(path, args.image_size)
        start = time.perf_counter()
        for path in paths:
            preprocess_chest_xray(path, args.image_size)
        decode_rate = len(paths) / (time.perf_counter() - start)

        start = time.perf_counter()
        result = build_cache([{"image": str(p)} for p in paths], folder / "cache", args.image_size, progress=False)
        build_seconds = time.perf_counter() - start

        read = LoadCachedChestXrayd(image_size=args.image_size)
        start = time.perf_counter()
        for _ in range(args.cache_passes):
            for item in result.items:
                read(item)
        cache_rate = args.cache_passes * len(result.items) / (time.perf_counter() - start)

    print(f"(a) decode + window + resize from DICOM: {decode_rate:8.1f} images/s")
    print(f"(b) read from the uint8 cache:           {cache_rate:8.1f} images/s")
    print(f"ratio (b)/(a): {cache_rate / decode_rate:.0f}x; "
          f"cache build took {build_seconds:.1f} s for {len(paths)} images")


if __name__ == "__main__":
    main()
