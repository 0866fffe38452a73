"""Request content decoding without a model: formats told apart, names and sizes checked before any
file is written or inflated, temporary files gone after the read."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import RejectedInput
from pipelines.registry.payloads import (
    InvalidPayload,
    PayloadRefused,
    PayloadTooLarge,
    ServingLimits,
    decode_input,
    sniff,
)
from tests.pipelines.registry.serving_helpers import b64, dicom_bytes, npy_b64, wav_bytes, wfdb_zip, write_ecg


def _recording_reader(seen: list[Path]):
    """A reader that notes the file it was given and what was next to it, then rejects it."""

    def read(path: Path):
        seen.append(path)
        seen.extend(sorted(path.parent.iterdir()))
        raise RejectedInput(f"looked at {path}")

    return read


def test_formats_are_told_apart_by_their_first_bytes() -> None:
    assert sniff(dicom_bytes(), "xray") == "dicom"
    assert sniff(wav_bytes(0.1), "speech") == "wav"
    assert sniff(wav_bytes(0.1, fmt="FLAC"), "speech") == "flac"
    assert sniff(b"PK\x03\x04rest", "ecg") == "zip"
    with pytest.raises(InvalidPayload, match="give input_format"):
        sniff(b"plain text", "xray")


def test_content_is_read_from_a_private_folder_that_is_gone_after_and_never_named(tmp_path: Path) -> None:
    seen: list[Path] = []
    modes: list[int] = []
    recording = _recording_reader(seen)

    def read(path: Path):
        modes.append(path.parent.stat().st_mode & 0o777)
        return recording(path)

    with pytest.raises(RejectedInput) as err:
        decode_input("xray", b64(dicom_bytes()), "dicom", read, ServingLimits())
    assert seen[0].name == "upload.dcm" and modes == [0o700]
    assert not seen[0].parent.exists()
    assert err.value.reason == "looked at <upload>/upload.dcm"


def test_a_wfdb_zip_is_written_flat_and_read_through_its_header(tmp_path: Path) -> None:
    header = write_ecg(tmp_path, "r1")
    seen: list[Path] = []
    with pytest.raises(RejectedInput):
        decode_input("ecg", b64(wfdb_zip(header)), "", _recording_reader(seen), ServingLimits())
    assert seen[0].name == "r1.hea" and {p.name for p in seen[1:]} == {"r1.hea", "r1.dat"}


@pytest.mark.parametrize("name", ["../r1.dat", "sub/r1.dat", ".hidden", "/etc/passwd"])
def test_zip_members_with_folders_or_hidden_names_are_refused(name: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("r1.hea", "r1 1 500 10\nr1.dat 16 200 16 0 0 0 0 I\n")
        archive.writestr(name, b"\0" * 20)
    with pytest.raises(PayloadRefused, match="not a bare file name"):
        decode_input("ecg", b64(buffer.getvalue()), "zip", _recording_reader([]), ServingLimits())


@pytest.mark.parametrize("signal_name", ["../../etc/passwd", "/etc/passwd", "sub/r1.dat"])
def test_a_wfdb_header_naming_a_file_outside_the_upload_is_refused_before_reading(signal_name: str) -> None:
    record = json.dumps({"header": f"r1 1 500 10\n{signal_name} 16 200 16 0 0 0 0 I\n", "files": {}})
    seen: list[Path] = []
    with pytest.raises(PayloadRefused, match="only bare file names"):
        decode_input("ecg", record, "wfdb", _recording_reader(seen), ServingLimits())
    assert seen == []


def test_sizes_are_checked_before_decoding() -> None:
    limits = ServingLimits(max_input_bytes=1000, max_files=2, max_unzipped_bytes=500)
    read = _recording_reader([])
    with pytest.raises(PayloadTooLarge, match="max_input_bytes=1000"):
        decode_input("xray", "A" * 1004, "dicom", read, limits)
    files = {f"r1.d{i}": b64(b"x") for i in range(3)}
    with pytest.raises(PayloadTooLarge, match="max_files=2"):
        decode_input("ecg", json.dumps({"header": "r1 1 500 10\n", "files": files}), "wfdb", read, limits)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("r1.dat", b"\0" * 600)
    with pytest.raises(PayloadTooLarge, match="zip declares 600 bytes"):
        decode_input("ecg", b64(buffer.getvalue()), "zip", read, limits)


def test_npy_arrays_must_have_the_stored_shape() -> None:
    read = _recording_reader([])
    ecg = np.zeros((12, 500), np.float32)
    ecg[3] = np.nan
    array, row = decode_input("ecg", npy_b64(ecg), "npy", read, ServingLimits())
    assert row["lead_mask"] == "111011111111" and array.shape == (12, 500)
    for modality, bad in [("xray", np.zeros(5)), ("speech", np.zeros((2, 5))), ("ecg", np.zeros((11, 5)))]:
        with pytest.raises(InvalidPayload):
            decode_input(modality, npy_b64(bad), "npy", read, ServingLimits())
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidPayload):
        decode_input("xray", b64(pickled.getvalue()), "npy", read, ServingLimits())


def test_formats_a_modality_lacks_and_unknown_settings_are_refused() -> None:
    read = _recording_reader([])
    with pytest.raises(PayloadRefused, match="not one of"):
        decode_input("xray", b64(wav_bytes(0.1)), "wav", read, ServingLimits())
    with pytest.raises(PayloadRefused, match="not an input for xray"):
        decode_input("xray", b64(wav_bytes(0.1)), "", read, ServingLimits())
    with pytest.raises(ValueError, match="unknown serving setting"):
        ServingLimits.from_model_config({"path_rot": "/"})
    with pytest.raises(ValueError, match="max_rows must be a positive integer"):
        ServingLimits(max_rows=0)
