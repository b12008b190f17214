"""Small DICOM files written in the real on-disk format, for decoding tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    bits_stored: int = 16,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    frames: int | None = None,
    samples: int = 1,
) -> Path:
    """A minimal DX DICOM (Explicit VR Little Endian) holding ``pixels`` as stored values."""
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    allocated = 8 if bits_stored <= 8 else 16
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.PatientID = "TEST-SECRET-ID-4711"
    ds.Rows, ds.Columns = pixels.shape[-2], pixels.shape[-1]
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if frames is not None:
        ds.NumberOfFrames = frames
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept if intercept is not None else 0
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint8 if allocated == 8 else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(height: int = 40, width: int = 30, top: int = 65535) -> np.ndarray:
    """A horizontal-and-vertical ramp from 0 to ``top`` (both extremes present), rows ≠ columns."""
    values = np.linspace(0, top, height * width).round()
    return values.reshape(height, width).astype(np.int64)
