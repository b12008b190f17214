"""Chest X-ray decoding (DICOM, JPEG, PNG), resizing and label conversion."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized
from PIL import Image

from l2v_monai.bundle_scripts.reader import UNREADABLE_META_KEY, ChestXrayReader, mark_unreadable
from dicom_files import ramp, write_dicom
from l2v_monai.data.transforms import (
    ImageDecodeError,
    LabelSetsToTensord,
    LoadChestXrayd,
    chest_xray_transforms,
    preprocess_chest_xray,
    read_chest_xray,
    read_dicom,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_DICOM = SHARED / "data" / "chest-dicom" / "chest.dcm"


# --- the real radiograph -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_dicom() -> Path:
    if not REAL_DICOM.is_file():
        pytest.skip(f"real DICOM fixture absent: {REAL_DICOM}")
    return REAL_DICOM


def test_real_dicom_loads_to_unit_square_without_leaking_identifiers(real_dicom, capsys, caplog):
    import pydicom

    header = pydicom.dcmread(real_dicom, stop_before_pixels=True)
    secrets = [str(header.get(tag, "")) for tag in ("PatientID", "PatientName", "StudyDate")]
    secrets = [s for s in secrets if s]
    caplog.set_level(logging.DEBUG)
    out = chest_xray_transforms()({"image": str(real_dicom)})["image"]
    assert tuple(out.shape) == (1, 256, 256)
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 0.1  # a radiograph, not a flat field
    printed = capsys.readouterr()
    seen = printed.out + printed.err + caplog.text + repr(dict(out.meta))
    # Compare as booleans so that a failure message cannot print the identifier itself.
    leaked = any(secret in seen for secret in secrets)
    assert not leaked, "a DICOM identifier appeared in output, logs or image metadata"


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_dicom_and_its_jpeg_agree_in_values_and_orientation(real_dicom, tmp_path):
    full = read_dicom(real_dicom)
    jpeg = tmp_path / "chest.jpg"
    Image.fromarray(np.rint(full * 255).astype(np.uint8)).save(jpeg, quality=95)
    from_dicom = preprocess_chest_xray(real_dicom)[0]
    from_jpeg = preprocess_chest_xray(jpeg)[0]
    mean_abs_diff = float(np.abs(from_dicom - from_jpeg).mean())
    assert mean_abs_diff < 0.005  # measured 0.00019 (max 0.0025): 8-bit quantisation plus JPEG q95 loss
    straight = _correlation(from_dicom, from_jpeg)
    assert straight > 0.999
    # The JPEG path must not transpose or flip: any flipped version fits clearly worse.
    for flipped in (from_jpeg[::-1], from_jpeg[:, ::-1], from_jpeg.T):
        assert _correlation(from_dicom, flipped) < straight - 0.1


# --- DICOM grey-level chain ----------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_dicom_bit_depths_scale_to_unit_range(tmp_path, bits):
    top = 2**bits - 1
    pixels = ramp(top=top)
    out = read_dicom(write_dicom(tmp_path / f"b{bits}.dcm", pixels, bits_stored=bits))
    assert out.shape == (40, 30) and out.dtype == np.float32
    np.testing.assert_allclose(out, pixels / top, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    pixels = ramp(top=4095)
    mono2 = read_dicom(write_dicom(tmp_path / "m2.dcm", pixels, 12, "MONOCHROME2"))
    mono1 = read_dicom(write_dicom(tmp_path / "m1.dcm", pixels, 12, "MONOCHROME1"))
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono1[0, 0] == pytest.approx(1.0) and mono2[0, 0] == pytest.approx(0.0)


def _linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window onto [0, 1]."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_window_center_width_is_applied(tmp_path):
    pixels = ramp(top=4095)
    plain = read_dicom(write_dicom(tmp_path / "plain.dcm", pixels, 12))
    windowed = read_dicom(write_dicom(tmp_path / "win.dcm", pixels, 12, window=(2048, 1024)))
    np.testing.assert_allclose(windowed, _linear_window(pixels, 2048, 1024), atol=2e-3)
    # A narrow window saturates both ends and steepens the middle.
    assert (windowed == 0).mean() > 0.3 and (windowed == 1).mean() > 0.3
    assert (plain == 0).mean() < 0.01


def test_rescale_slope_intercept_is_applied_before_the_window(tmp_path):
    pixels = ramp(top=1000)
    # Stored 0..1000 → modality values -1024..976; the window is in modality units around 0.
    out = read_dicom(write_dicom(tmp_path / "ct_like.dcm", pixels, 16, slope=2, intercept=-1024, window=(0, 600)))
    np.testing.assert_allclose(out, _linear_window(2.0 * pixels - 1024, 0, 600), atol=2e-3)
    # Without the rescale the same window would sit elsewhere: the outputs must differ.
    ignored = _linear_window(pixels.astype(float), 0, 600)
    assert np.abs(out - ignored).mean() > 0.2


def test_negative_rescale_slope_flips_grey_levels(tmp_path):
    pixels = ramp(top=4095)
    out = read_dicom(write_dicom(tmp_path / "neg.dcm", pixels, 12, slope=-1, intercept=4095))
    np.testing.assert_allclose(out, 1.0 - pixels / 4095, atol=1e-6)


def test_multiframe_and_colour_dicoms_are_rejected(tmp_path):
    frames = write_dicom(tmp_path / "frames.dcm", np.stack([ramp(top=255)] * 2), 8, frames=2)
    with pytest.raises(ImageDecodeError, match=r"frames\.dcm.*multi-frame"):
        read_chest_xray(frames)
    rgb = np.repeat(ramp(top=255)[..., None], 3, axis=-1)
    colour = write_dicom(tmp_path / "colour.dcm", rgb, 8, photometric="RGB", samples=3)
    with pytest.raises(ImageDecodeError, match=r"colour\.dcm.*colour DICOM"):
        read_chest_xray(colour)


# --- JPEG and PNG --------------------------------------------------------------------------------


def test_png_8_and_16_bit_and_jpeg(tmp_path):
    pixels16 = ramp(top=65535).astype(np.uint16)
    png16 = tmp_path / "sixteen.png"
    Image.fromarray(pixels16).save(png16)
    np.testing.assert_allclose(read_chest_xray(png16), pixels16 / 65535, atol=1e-6)  # no 8-bit squeeze

    pixels8 = ramp(top=255).astype(np.uint8)
    png8, jpg = tmp_path / "eight.png", tmp_path / "eight.jpg"
    Image.fromarray(pixels8).save(png8)
    Image.fromarray(pixels8).save(jpg, quality=95)
    np.testing.assert_allclose(read_chest_xray(png8), pixels8 / 255, atol=1e-6)
    assert np.abs(read_chest_xray(jpg) - pixels8 / 255).mean() < 0.01


def test_rgb_jpeg_becomes_grey(tmp_path):
    grey = ramp(top=255).astype(np.uint8)
    path = tmp_path / "rgb.jpg"
    Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(path, quality=95)
    out = read_chest_xray(path)
    assert out.shape == grey.shape
    assert np.abs(out - grey / 255).mean() < 0.01


def test_resize_keeps_rows_as_height(tmp_path):
    # A tall image bright in its top-left quarter must stay bright top-left after the square resize.
    pixels = np.zeros((300, 200), dtype=np.uint8)
    pixels[:150, :100] = 255
    path = tmp_path / "tall.png"
    Image.fromarray(pixels).save(path)
    out = preprocess_chest_xray(path, image_size=64)
    assert out.shape == (1, 64, 64)
    np.testing.assert_allclose(out[0, :32, :32], 1.0)
    np.testing.assert_allclose(out[0, 32:, :], 0.0)
    np.testing.assert_allclose(out[0, :, 32:], 0.0)


# --- bad input -----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.dcm"
    with pytest.raises(ImageDecodeError, match=r"nowhere\.dcm.*file not found"):
        read_chest_xray(path)


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg.*truncated"):
        read_chest_xray(path)


def test_corrupt_dicoms(tmp_path):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 600, dtype=np.uint8).tobytes())
    with pytest.raises(ImageDecodeError, match=r"garbage\.dcm.*DICM"):
        read_chest_xray(garbage)

    good = write_dicom(tmp_path / "good.dcm", ramp(top=4095), 12)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(good.read_bytes()[:-500])  # header intact, pixel data short
    with pytest.raises(ImageDecodeError, match=r"cut\.dcm.*pixel data"):
        read_chest_xray(cut)

    header_only = tmp_path / "header_only.dcm"
    header_only.write_bytes(good.read_bytes()[:200])  # preamble and marker, then nothing usable
    with pytest.raises(ImageDecodeError, match=r"header_only\.dcm"):
        read_chest_xray(header_only)


def test_constant_image_is_an_error(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((20, 20), 7, dtype=np.uint8)).save(path)
    with pytest.raises(ImageDecodeError, match=r"flat\.png.*constant"):
        read_chest_xray(path)


def test_loader_rejects_non_paths():
    with pytest.raises(TypeError, match="file path"):
        LoadChestXrayd()({"image": np.zeros((4, 4))})


# --- the MONAI ImageReader ------------------------------------------------------------------------


def _load_with_reader(reader: ChestXrayReader) -> Compose:
    return Compose([LoadImaged("image", reader=reader, image_only=True), EnsureChannelFirstd("image")])


def test_reader_in_loadimaged_gives_the_decoder_output_channel_first(tmp_path):
    dicom = write_dicom(tmp_path / "m1.dcm", ramp(top=4095), 12, photometric="MONOCHROME1", window=(1500, 2000))
    png = tmp_path / "ramp.png"
    Image.fromarray(ramp(top=255).astype(np.uint8)).save(png)
    for path in (dicom, png):
        image = _load_with_reader(ChestXrayReader())({"image": str(path)})["image"]
        assert tuple(image.shape) == (1, 40, 30)  # rows stay the height: no (x, y) transpose
        np.testing.assert_array_equal(image[0].numpy(), read_chest_xray(path))
        assert image.meta["filename_or_obj"] == str(path)
        assert "TEST-SECRET-ID-4711" not in repr(dict(image.meta))
    reader = ChestXrayReader()
    assert reader.verify_suffix("a/b.DCM") and reader.verify_suffix(["x.png", "y.jpeg"])
    assert not reader.verify_suffix("scan.nii.gz")


def test_reader_raises_the_decode_error_rather_than_fall_back_to_other_readers(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageDecodeError, match=r"bad\.png.*unreadable image"):
        LoadImaged("image", reader=ChestXrayReader(), image_only=True)({"image": str(bad)})


def test_mark_unreadable_marks_a_stand_in_and_leaves_the_original_strict(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    Image.fromarray(ramp(top=255).astype(np.uint8)).save(good)
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    strict = Compose([*_load_with_reader(ChestXrayReader()).transforms, Resized("image", (8, 8), mode="area")])
    marked = mark_unreadable(strict)
    stand_in = marked({"image": str(bad)})["image"]
    assert tuple(stand_in.shape) == (1, 8, 8) and stand_in.meta[UNREADABLE_META_KEY].startswith("unreadable image")
    assert marked({"image": str(good)})["image"].meta[UNREADABLE_META_KEY] == ""
    with pytest.raises(RuntimeError) as raised:  # Compose wraps the step's error
        strict({"image": str(bad)})
    assert isinstance(raised.value.__cause__, ImageDecodeError)
    with pytest.raises(ValueError, match="no LoadImaged step with a ChestXrayReader"):
        mark_unreadable(Compose([EnsureChannelFirstd("image")]))


# --- labels --------------------------------------------------------------------------------------


def test_label_sets_null_becomes_nan():
    out = LabelSetsToTensord("labels")({"image": "a.png", "labels": [[1, None, 0], [0.0, 1, None]]})
    labels = out["labels"]
    assert labels.dtype == torch.float32 and tuple(labels.shape) == (2, 3)
    assert torch.isnan(labels).tolist() == [[False, True, False], [False, False, True]]
    assert labels[0, 0] == 1 and labels[1, 1] == 1

    clean = LabelSetsToTensord("label", ndim=1)({"label": [None, 1, 0]})["label"]
    assert math.isnan(clean[0]) and clean[1:].tolist() == [1.0, 0.0]


def test_label_sets_validation_names_the_item():
    with pytest.raises(ValueError, match=r"'p1/s2\.dcm'.*different lengths"):
        LabelSetsToTensord("labels")({"image": "p1/s2.dcm", "labels": [[1, 0, None], [1, 0]]})
    with pytest.raises(ValueError, match=r"'x\.png'.*\[-1\.0\] outside \[0, 1\]"):
        LabelSetsToTensord("labels")({"image": "x.png", "labels": [[1, -1]]})
    with pytest.raises(ValueError, match=r"expected shape \(4, 14\), got \(4, 13\)"):
        LabelSetsToTensord("labels", num_label_sets=4, num_findings=14)({"labels": [[0] * 13] * 4})
    with pytest.raises(ValueError, match="'1' is a str"):
        LabelSetsToTensord("label", ndim=1)({"label": ["1"]})
    with pytest.raises(ValueError, match="depth 2"):
        LabelSetsToTensord("labels")({"labels": [1, 0]})


def test_label_sets_accept_tensors_with_nan():
    value = torch.tensor([[1.0, float("nan")]])
    out = LabelSetsToTensord("labels")({"labels": value})["labels"]
    assert out.dtype == torch.float32 and torch.isnan(out[0, 1])


# --- the whole pipeline --------------------------------------------------------------------------


def test_pipeline_batches_images_and_labels(tmp_path):
    items = []
    for index in range(2):
        path = tmp_path / f"img{index}.png"
        Image.fromarray(ramp(top=255).astype(np.uint8) + index).save(path)
        labels = [[1, None], [0, 1], [None, None]]
        items.append({"image": str(path), "report": "text", "labels": labels, "label": [1, 0]})
    transform = chest_xray_transforms(image_size=32, num_label_sets=3, num_findings=2)
    loader = DataLoader(Dataset(items, transform), batch_size=2)
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (2, 1, 32, 32) and batch["image"].dtype == torch.float32
    assert tuple(batch["labels"].shape) == (2, 3, 2) and torch.isnan(batch["labels"][:, 2]).all()
    assert tuple(batch["label"].shape) == (2, 2)
    assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 1.0


def test_pipeline_error_keeps_the_cause_and_logs_no_report_text(tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    item = {"image": str(tmp_path / "gone.png"), "report": "CONFIDENTIAL FINDINGS TEXT", "labels": [[1]]}
    with pytest.raises(RuntimeError) as caught:
        chest_xray_transforms()(item)
    causes = []
    error: BaseException | None = caught.value
    while error is not None:
        causes.append(error)
        error = error.__cause__
    assert any(isinstance(c, ImageDecodeError) and "gone.png" in str(c) for c in causes)
    printed = capsys.readouterr()
    assert "CONFIDENTIAL" not in caplog.text + printed.out + printed.err
