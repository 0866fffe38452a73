"""X-ray reader: DICOM grey chain, compressed syntaxes, rejections, PNG/JPEG, real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from pipelines.data.sources import list_xray
from pipelines.data.xray import XrayConfig, read_xray, xray_normalisation
from pipelines.errors import RejectedInput

FLOAT = XrayConfig(size_px=32, dtype="float16")


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **tags: object,
) -> Path:
    """A DX radiograph DICOM file (Explicit VR Little Endian, with preamble) holding ``pixels``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    bits = bits_stored or pixels.dtype.itemsize * 8
    ds.set_pixel_data(pixels, photometric, bits)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(height: int = 32, width: int = 32, top: int = 4095, dtype=np.uint16) -> np.ndarray:
    return np.linspace(0, top, height * width).round().astype(dtype).reshape(height, width)


def decode(path: Path, cfg: XrayConfig = FLOAT) -> np.ndarray:
    (decoded,) = read_xray(path, cfg)
    return decoded.array.astype(np.float64)


def test_monochrome1_is_inverted(tmp_path):
    pixels = ramp()
    mono2 = decode(write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2", 12))
    mono1 = decode(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1", 12))
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-3)
    assert mono1[0, 0] == pytest.approx(1.0) and mono2[0, 0] == 0.0


def test_bits_stored_12_in_uint16_scales_by_4095_not_65535(tmp_path):
    pixels = np.full((32, 32), 2048, dtype=np.uint16)
    pixels[0, 0], pixels[0, 1] = 0, 4095
    out = decode(write_dicom(tmp_path / "b12.dcm", pixels, bits_stored=12))
    assert out[0, 1] == pytest.approx(1.0)
    assert out[5, 5] == pytest.approx(2048 / 4095, abs=1e-3)


def test_rescale_slope_and_intercept_feed_the_window(tmp_path):
    pixels = ramp()
    # Window defined in rescaled units (e.g. HU-like): value = 2 * stored - 1000.
    path = write_dicom(
        tmp_path / "rescale.dcm",
        pixels,
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=3000,
        WindowWidth=4000,
        VOILUTFunction="LINEAR_EXACT",
    )
    rescaled = 2.0 * pixels - 1000.0
    expected = np.clip((rescaled - 3000) / 4000 + 0.5, 0, 1)  # PS3.3 C.11.2.1.3.2
    np.testing.assert_allclose(decode(path), expected, atol=2e-3)


def test_negative_rescale_slope_without_window_inverts_the_range(tmp_path):
    pixels = ramp()
    plain = decode(write_dicom(tmp_path / "plain.dcm", pixels, bits_stored=12))
    flipped = decode(
        write_dicom(tmp_path / "neg.dcm", pixels, bits_stored=12, RescaleSlope=-1, RescaleIntercept=0)
    )
    np.testing.assert_allclose(flipped, 1.0 - plain, atol=1e-3)


def test_window_tags_clip_below_and_above(tmp_path):
    pixels = ramp()
    path = write_dicom(tmp_path / "win.dcm", pixels, bits_stored=12, WindowCenter=2048, WindowWidth=1024)
    out = decode(path)
    assert np.all(out[pixels < 1536] == 0.0)
    assert np.all(out[pixels > 2560] == 1.0)
    middle = out[(pixels > 1600) & (pixels < 2500)]
    assert middle.min() > 0.0 and middle.max() < 1.0
    assert read_xray(path, FLOAT)[0].meta["voi"] == "window"


def test_signed_pixels_scale_over_the_signed_stored_range(tmp_path):
    pixels = ramp().astype(np.int16) - 2048
    path = write_dicom(tmp_path / "signed.dcm", pixels, bits_stored=12)
    np.testing.assert_allclose(decode(path), (pixels + 2048) / 4095, atol=1e-3)
    windowed = write_dicom(tmp_path / "win.dcm", pixels, bits_stored=12, WindowCenter=0, WindowWidth=1024)
    out = decode(windowed)
    assert np.all(out[pixels < -512] == 0.0) and np.all(out[pixels > 512] == 1.0)


def test_apply_voi_off_uses_full_stored_range(tmp_path):
    pixels = ramp()
    path = write_dicom(tmp_path / "win.dcm", pixels, bits_stored=12, WindowCenter=2048, WindowWidth=1024)
    out = decode(path, XrayConfig(size_px=32, dtype="float16", apply_voi=False))
    np.testing.assert_allclose(out, pixels / 4095, atol=1e-3)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless], ids=lambda s: s.name)
def test_compressed_transfer_syntax_decodes_like_uncompressed(tmp_path, syntax):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(48, 40)).astype(np.uint16)
    plain = write_dicom(tmp_path / "plain.dcm", pixels, bits_stored=12)
    from pydicom import dcmread

    ds = dcmread(plain)
    ds.compress(syntax)
    ds.save_as(tmp_path / "compressed.dcm", enforce_file_format=True)
    (decoded,) = read_xray(tmp_path / "compressed.dcm", XrayConfig(size_px=48, dtype="uint16"))
    (reference,) = read_xray(plain, XrayConfig(size_px=48, dtype="uint16"))
    np.testing.assert_array_equal(decoded.array, reference.array)
    assert decoded.meta["transfer_syntax"] == syntax.name


def test_uint8_storage_pads_to_square_with_aspect_preserved(tmp_path):
    pixels = np.full((40, 20), 4095, dtype=np.uint16)
    (decoded,) = read_xray(write_dicom(tmp_path / "tall.dcm", pixels, bits_stored=12), XrayConfig(size_px=32))
    assert decoded.array.dtype == np.uint8 and decoded.array.shape == (32, 32)
    assert np.all(decoded.array[:, 8:24] == 255) and np.all(decoded.array[:, :8] == 0)
    assert (decoded.meta["height_px"], decoded.meta["width_px"]) == (40, 20)


def test_rgb_dicom_is_rejected_with_the_photometric_in_the_reason(tmp_path):
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "rgb.dcm", pixels, "RGB", 8)
    with pytest.raises(RejectedInput, match="'RGB'"):
        read_xray(path, FLOAT)


def test_multi_frame_dicom_is_rejected(tmp_path):
    pixels = np.zeros((3, 16, 16), dtype=np.uint16)
    path = write_dicom(tmp_path / "multi.dcm", pixels, bits_stored=12)
    with pytest.raises(RejectedInput, match="multi-frame"):
        read_xray(path, FLOAT)


@pytest.mark.parametrize("view", ["LL", "LATERAL"])
def test_lateral_view_is_filtered_not_decoded(tmp_path, view):
    path = write_dicom(tmp_path / "lat.dcm", ramp(), bits_stored=12, ViewPosition=view)
    with pytest.raises(RejectedInput) as info:
        read_xray(path, FLOAT)
    assert info.value.stage == "filter" and "lateral" in info.value.reason


def test_subject_and_study_come_from_patient_id_and_accession(tmp_path):
    path = write_dicom(tmp_path / "ids.dcm", ramp(), bits_stored=12, PatientID="MRN1", AccessionNumber="ACC1")
    (decoded,) = read_xray(path, FLOAT)
    assert (decoded.raw_subject, decoded.raw_study) == ("MRN1", "ACC1")
    path = write_dicom(tmp_path / "uid.dcm", ramp(), bits_stored=12, StudyInstanceUID="1.2.3")
    (decoded,) = read_xray(path, FLOAT)
    assert (decoded.raw_subject, decoded.raw_study) == (None, "1.2.3")


def test_png_8_and_16_bit_scale_by_their_bit_depth(tmp_path):
    grey8 = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 256
    Image.fromarray(grey8.astype(np.uint8)).save(tmp_path / "g8.png")
    grey16 = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(decode(tmp_path / "g8.png"), grey8 / 255, atol=1e-3)
    np.testing.assert_allclose(decode(tmp_path / "g16.png"), grey16 / 65535, atol=1e-3)
    (decoded,) = read_xray(tmp_path / "g16.png", FLOAT)
    assert decoded.meta["bits_stored"] == 16


def test_grey_rgb_png_is_converted_and_colour_png_rejected(tmp_path):
    grey = np.repeat((np.arange(32 * 32) % 256).astype(np.uint8).reshape(32, 32, 1), 3, axis=2)
    Image.fromarray(grey).save(tmp_path / "greyrgb.png")
    np.testing.assert_allclose(decode(tmp_path / "greyrgb.png"), grey[..., 0] / 255, atol=1e-3)
    colour = grey.copy()
    colour[..., 2] = 0
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(RejectedInput, match="colour"):
        read_xray(tmp_path / "colour.png", FLOAT)


def test_jpeg_goes_through_the_same_path(tmp_path):
    grey = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    Image.fromarray(grey).save(tmp_path / "x.jpg", quality=95)
    (decoded,) = read_xray(tmp_path / "x.jpg", XrayConfig(size_px=64))
    assert decoded.array.shape == (64, 64) and decoded.meta["format"] == "jpeg"
    np.testing.assert_allclose(decoded.array.astype(float), grey, atol=4)


def _broken_files(tmp_path: Path) -> dict[str, Path]:
    good = write_dicom(tmp_path / "good.dcm", ramp(64, 64), bits_stored=12)
    data = good.read_bytes()
    files = {
        "empty": tmp_path / "empty.dcm",
        "truncated": tmp_path / "truncated.dcm",
        "truncated_header": tmp_path / "cut_header.dcm",
        "garbage": tmp_path / "garbage.dcm",
        "png_named_dcm": tmp_path / "png.dcm",
        "garbage_png": tmp_path / "garbage.png",
        "truncated_png": tmp_path / "cut.png",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) - 3000])
    files["truncated_header"].write_bytes(data[:200])
    files["garbage"].write_bytes(np.random.default_rng(0).bytes(4096))
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "real.png")
    files["png_named_dcm"].write_bytes((tmp_path / "real.png").read_bytes())
    files["garbage_png"].write_bytes(np.random.default_rng(1).bytes(512))
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8) + 7).save(tmp_path / "full.png")
    files["truncated_png"].write_bytes((tmp_path / "full.png").read_bytes()[:60])
    no_pixels = Dataset()
    no_pixels.file_meta = FileMetaDataset()
    no_pixels.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    no_pixels.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    no_pixels.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    no_pixels.Modality = "SR"
    no_pixels.save_as(tmp_path / "nopixels.dcm", enforce_file_format=True)
    files["no_pixels"] = tmp_path / "nopixels.dcm"
    return files


def test_broken_corpus_is_rejected_with_a_reason_never_a_crash(tmp_path):
    reasons = {}
    for name, path in _broken_files(tmp_path).items():
        with pytest.raises(RejectedInput) as info:
            read_xray(path, FLOAT)
        assert info.value.reason and info.value.stage == "decode"
        reasons[name] = info.value.reason
    assert "0 bytes" in reasons["empty"]
    assert "truncated" in reasons["truncated"] or "corrupt" in reasons["truncated"]
    assert "not a DICOM" in reasons["garbage"] and "not a DICOM" in reasons["png_named_dcm"]
    assert "no pixel data" in reasons["no_pixels"]


def test_normalisation_record_states_dtype_and_scale():
    record = xray_normalisation(XrayConfig(dtype="uint16", size_px=256))
    assert record["dtype"] == "uint16" and record["value_range"] == [0, 65535] and record["size_px"] == 256


def test_real_cr_monochrome1_chest_decodes_with_bone_bright(shared_data):
    (decoded,) = read_xray(shared_data / "dicom_samples" / "RG1_UNCI.dcm", XrayConfig())
    image = decoded.array.astype(np.float64)
    assert image.shape == (224, 224) and decoded.array.dtype == np.uint8
    assert decoded.meta["photometric"] == "MONOCHROME1" and decoded.meta["view"] == "PA"
    # After inversion the mediastinum/spine (central columns) is brighter than the lung fields.
    centre = image[60:160, 102:122].mean()
    lungs = np.concatenate([image[60:160, 50:80], image[60:160, 144:174]]).mean()
    assert centre > lungs + 20


def test_real_nih_thumbnails_decode_to_grey_squares(shared_data):
    paths = sorted((shared_data / "nih_cxr14_thumbs64" / "images").glob("*.png"))[:5]
    for path in paths:
        (decoded,) = read_xray(path, XrayConfig())
        assert decoded.array.shape == (224, 224) and decoded.meta["converted_from"] == "RGB"
        assert decoded.array.std() > 10


# ------------------------------------------------------------------ only radiographs, legacy files
@pytest.mark.parametrize(
    ("modality", "sop_class"),
    [
        ("CT", "1.2.840.10008.5.1.4.1.1.2"),
        ("MR", "1.2.840.10008.5.1.4.1.1.4"),
        ("US", "1.2.840.10008.5.1.4.1.1.6.1"),
    ],
)
def test_ct_mr_and_ultrasound_are_rejected_as_not_radiographs(tmp_path, modality, sop_class):
    path = write_dicom(
        tmp_path / f"{modality}.dcm", ramp(), bits_stored=12, Modality=modality, SOPClassUID=sop_class
    )
    with pytest.raises(RejectedInput) as info:
        read_xray(path, FLOAT)
    assert info.value.stage == "filter"
    assert f"modality {modality} is not a radiograph" in info.value.reason


def test_a_configured_override_accepts_ct(tmp_path):
    path = write_dicom(tmp_path / "ct.dcm", ramp(), bits_stored=12, Modality="CT", BodyPartExamined="CHEST")
    cfg = XrayConfig(size_px=32, dtype="float16", keep_modalities=["CR", "DX", "CT"])
    (decoded,) = read_xray(path, cfg)
    assert decoded.meta["modality"] == "CT" and decoded.array.shape == (32, 32)


def test_without_modality_the_sop_class_decides(tmp_path):
    dx = write_dicom(tmp_path / "dx.dcm", ramp(), bits_stored=12)
    ct = write_dicom(tmp_path / "ct.dcm", ramp(), bits_stored=12, SOPClassUID="1.2.840.10008.5.1.4.1.1.2")
    for path in (dx, ct):
        ds = pydicom.dcmread(path)
        del ds.Modality
        ds.save_as(path)
    assert read_xray(dx, FLOAT)[0].array.shape == (32, 32)
    with pytest.raises(RejectedInput, match="SOP class CT Image Storage is not a radiograph"):
        read_xray(ct, FLOAT)


def test_body_part_other_than_chest_is_filtered_and_a_hostile_value_is_not_quoted(tmp_path):
    knee = write_dicom(tmp_path / "knee.dcm", ramp(), bits_stored=12, BodyPartExamined="KNEE")
    with pytest.raises(RejectedInput, match="body part KNEE skipped"):
        read_xray(knee, FLOAT)
    odd = write_dicom(tmp_path / "odd.dcm", ramp(), bits_stored=12, BodyPartExamined="SMITH JOHN")
    with pytest.raises(RejectedInput) as info:
        read_xray(odd, FLOAT)
    assert "SMITH" not in info.value.reason and "unrecognised" in info.value.reason
    assert read_xray(odd, XrayConfig(size_px=32, keep_body_parts=[]))[0].array.shape == (32, 32)


def test_legacy_cr_without_preamble_or_file_meta_is_read(tmp_path):
    path = write_dicom(tmp_path / "cr.dcm", ramp(), bits_stored=12, Modality="CR")
    ds = pydicom.dcmread(path)
    legacy = tmp_path / "legacy_cr"  # no suffix either, as PACS exports often are
    # Implicit VR Little Endian dataset alone: no 128-byte preamble, no "DICM", no group 0002.
    ds.file_meta, ds.preamble = FileMetaDataset(), None
    ds.save_as(legacy, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert legacy.read_bytes()[128:132] != b"DICM" and legacy.read_bytes()[:2] == b"\x08\x00"
    np.testing.assert_allclose(decode(legacy), decode(path), atol=1e-3)
    assert [item.path.name for item in list_xray(tmp_path)] == ["cr.dcm", "legacy_cr"]


def test_no_preamble_bytes_without_an_image_dataset_are_still_not_dicom(tmp_path):
    path = tmp_path / "noise"
    path.write_bytes(b"\x08\x00\x05\x00" + np.random.default_rng(3).bytes(2000))
    with pytest.raises(RejectedInput, match="not a DICOM"):
        read_xray(path, FLOAT)


def test_image_declaring_65535_squared_pixels_is_rejected_before_decoding(tmp_path):
    path = write_dicom(tmp_path / "huge.dcm", ramp(16, 16), bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 65535  # the header lies; 512 bytes of pixel data follow
    ds.save_as(path)
    with pytest.raises(RejectedInput) as info:
        read_xray(path, FLOAT)
    assert "65535 x 65535 pixels" in info.value.reason and "8589672450 bytes" in info.value.reason
    assert "not decoded" in info.value.reason
