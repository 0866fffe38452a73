"""PHI: canary strings planted in every identifying DICOM tag and WFDB comment never reach ``meta``,
whatever shape the comment key takes (header comments are read by allow-list)."""

from __future__ import annotations

import numpy as np
import pydicom
import wfdb
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

from pipelines.data.ecg import EcgConfig, read_ecg
from pipelines.data.xray import XrayConfig, read_xray

# Identifying attributes of the PS3.15 basic profile (names, IDs, dates, places, free text, UIDs).
IDENTIFYING_TAGS = {
    "PatientName": "CANARYNAME^ALPHA",
    "PatientID": "CANARYPID01",
    "PatientBirthDate": "19010203",
    "OtherPatientIDs": "CANARYOTHERID",
    "PatientAddress": "CANARY STREET 1",
    "InstitutionName": "CANARY HOSPITAL",
    "InstitutionAddress": "CANARY AVENUE 2",
    "ReferringPhysicianName": "CANARYDOC^BETA",
    "PerformingPhysicianName": "CANARYPERF^GAMMA",
    "OperatorsName": "CANARYOP^DELTA",
    "AccessionNumber": "CANARYACC77",
    "StudyID": "CANARYSTUDY",
    "StudyDescription": "CANARY STUDY DESCRIPTION",
    "SeriesDescription": "CANARY SERIES DESCRIPTION",
    "ImageComments": "CANARY IMAGE COMMENT",
    "StudyDate": "19020304",
    "SeriesDate": "19030405",
    "AcquisitionDate": "19040506",
    "ContentDate": "19050607",
    "StudyTime": "235959",
    "StationName": "CANARYSTATION",
    "DeviceSerialNumber": "CANARYSERIAL",
    "StudyInstanceUID": "1.2.999.424242.1",
    "SeriesInstanceUID": "1.2.999.424242.2",
    "FrameOfReferenceUID": "1.2.999.424242.3",
}
# Whole planted values (dates and UIDs too), plus the CANARY marker inside every text value.
CANARIES = ["CANARY", "1.2.999.424242", *IDENTIFYING_TAGS.values(), "1901-02-03", "02/03/1902", "04-Mar-1903"]


def assert_no_canary(meta: dict) -> None:
    for key, value in meta.items():
        for canary in CANARIES:
            assert canary not in str(value), f"{canary!r} leaked into meta[{key!r}] = {value!r}"


def test_no_identifying_dicom_tag_reaches_xray_meta(tmp_path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.999.424242.4"
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = "1.2.999.424242.4"
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.set_pixel_data(np.arange(256, dtype=np.uint16).reshape(16, 16) * 16, "MONOCHROME2", 12)
    for keyword, value in IDENTIFYING_TAGS.items():
        setattr(ds, keyword, value)
    ds.save_as(tmp_path / "phi.dcm", enforce_file_format=True)
    (decoded,) = read_xray(tmp_path / "phi.dcm", XrayConfig(size_px=16))
    assert_no_canary(decoded.meta)
    assert decoded.raw_subject == "CANARYPID01"  # raw IDs go to the stage for hashing, never to meta


def test_no_identifying_wfdb_comment_reaches_ecg_meta(tmp_path):
    comments = [
        "Patient: CANARYNAME Alpha",
        "Name: CANARYNAME2",
        "MRN: CANARYMRN",
        "DOB: 1901-02-03",
        "Accession: CANARYACC",
        "Institution: CANARY HOSPITAL",
        "Referring physician: CANARYDOC",
        "ECG date: 02/03/1902",
        "Infarction date (acute): 04-Mar-1903",
        "Operator: CANARYOP",
        "Age: 61",
        "Sex: Male",
        "Dx: NSR",
        "CANARY free text line without a key",
    ]
    t = np.arange(5000) / 500
    signals = np.stack([np.sin(2 * np.pi * 3 * t), np.sin(2 * np.pi * 5 * t)], axis=1)
    wfdb.wrsamp("phi", fs=500, units=["mV", "mV"], sig_name=["I", "II"], p_signal=signals, fmt=["16", "16"],
                comments=comments, write_dir=str(tmp_path))  # fmt: skip
    (crop,) = read_ecg(tmp_path / "phi.hea", EcgConfig())
    assert_no_canary(crop.meta)
    assert (crop.meta["age"], crop.meta["sex"], crop.meta["dx"]) == (61, "M", "NSR")
    assert crop.raw_subject == "CANARYMRN"


# Damaged and disguised keys: a flipped byte, mixed case, spaces inside, look-alike letters from other
# scripts, full-width forms, unknown keys, tagged form. Fail closed: none of their values may pass.
HOSTILE_COMMENTS = [
    "Pat1ent: CANARYNAME Flipped",
    "Patiemt: CANARYNAME Typo",
    "PaTiEnT: CANARYNAME Mixed",
    "P atient: CANARYNAME Spaced",
    "  Name :   CANARYNAME Padded",
    "Nаme: CANARYNAME Cyrillic",
    "Ｐatient: CANARYNAME Fullwidth",
    "MRМ: CANARYMRN-CYRILLIC",
    "M RN: CANARYMRN-SPACED",
    "Favourite colour: CANARY blue",
    "<Patient name>: CANARYTAGGED  <age>: 61",
    "Reason for admission: chest pain; patient John Canarysmith, MRN 12345678",
    "Diagnose: 02/03/1902 CANARY",
    "Dx: NSR, CANARYDX, 12345678, 164889003",
    "Sex: Male CANARYSEX",
    "Age: 61 CANARYAGE",
    "CANARY free text line without a key",
]


def test_damaged_or_unknown_comment_keys_fail_closed(tmp_path):
    t = np.arange(5000) / 500
    signals = np.stack([np.sin(2 * np.pi * 3 * t), np.sin(2 * np.pi * 5 * t)], axis=1)
    wfdb.wrsamp("hostile", fs=500, units=["mV", "mV"], sig_name=["I", "II"], p_signal=signals, fmt=["16", "16"],
                comments=HOSTILE_COMMENTS, write_dir=str(tmp_path))  # fmt: skip
    (crop,) = read_ecg(tmp_path / "hostile.hea", EcgConfig())
    assert_no_canary(crop.meta)
    for planted in ("Canarysmith", "12345678", "1902"):
        assert planted not in str(crop.meta)
    assert (crop.meta["age"], crop.meta["sex"], crop.meta["dx"]) == (61, "M", "NSR;164889003")
    assert crop.meta["report"].startswith("Reason for admission: chest pain; patient [NAME]")
    assert crop.meta["comments_dropped"] >= 12
    # Neither damaged MRN key is taken for the subject: the stage falls back to the folder layout.
    assert crop.raw_subject is None


def test_ecg_dicom_reads_no_text_attribute_but_scrubbed_annotations(tmp_path):
    from tests.pipelines.data.test_ecg import write_ecg_dicom

    t = np.arange(5000) / 500
    signals_uv = np.rint(np.stack([np.sin(2 * np.pi * 3 * t)] * 2, axis=1) * 1000).astype(np.int16)
    path = write_ecg_dicom(tmp_path / "ecg.dcm", signals_uv, 500, ["Lead I", "Lead II"], PatientAge="042Y",
                           PatientSex="F", **{k: v for k, v in IDENTIFYING_TAGS.items() if "UID" not in k})  # fmt: skip
    ds = pydicom.dcmread(path)
    annotation = Dataset()
    annotation.UnformattedTextValue = "Sinus rhythm. Read by Dr. Canarydoc, MRN 7654321"
    ds.WaveformAnnotationSequence = [annotation]
    ds.add_new((0x0011, 0x0010), "LO", "CANARY PRIVATE CREATOR")
    ds.add_new((0x0011, 0x1001), "LO", "CANARY PRIVATE VALUE")
    ds.save_as(path)
    (crop,) = read_ecg(path, EcgConfig())
    assert_no_canary(crop.meta)
    assert "Canarydoc" not in crop.meta["report"] and "7654321" not in crop.meta["report"]
    assert crop.meta["report"].startswith("Sinus rhythm.") and (crop.meta["age"], crop.meta["sex"]) == (
        42,
        "F",
    )
