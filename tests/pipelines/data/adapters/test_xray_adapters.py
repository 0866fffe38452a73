"""X-ray adapters on tiny fixtures in the upstream layouts (PNG/JPG/DICOM), and on the real NIH sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pipelines.data.adapters import list_items


def _image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _dicom(path: Path, view: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PatientID = "DX", view, "10000032"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _mimic(root: Path, suffix: str) -> Path:
    study = root / "files" / "p10" / "p10000032" / "s50414267"
    if suffix == ".dcm":
        _dicom(study / f"02aa804e{suffix}", "PA")
        _dicom(study / f"174413ec{suffix}", "LATERAL")
    else:
        _image(study / f"02aa804e{suffix}")
        _image(study / f"174413ec{suffix}", 1)
    (study.parent / "s50414267.txt").write_text(
        "FINDINGS: Small left effusion.\n IMPRESSION: Possible pneumonia.\n"
    )
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
        "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices\n"
        "10000032,50414267,,,,,,,,,,1.0,,-1.0,0.0,\n"
    )
    (root / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\n02aa804e,50414267,10000032,validate\n174413ec,50414267,10000032,validate\n"
    )
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text(
        "dicom_id,ViewPosition\n02aa804e,PA\n174413ec,LATERAL\n"
    )
    return root


def test_mimic_cxr_dicom_study_labels_report_split_and_view(tmp_path):
    items = {Path(i.rel).stem: i for i in list_items("mimic-cxr", "xray", _mimic(tmp_path, ".dcm"))}
    frontal = items["02aa804e"]
    assert (frontal.raw_subject, frontal.raw_study) == ("10000032", "50414267")
    assert frontal.extra["pleural_effusion"] == "1" and frontal.extra["pneumonia"] == "-1"
    assert frontal.extra["pneumothorax"] == "0" and frontal.extra["cardiomegaly"] == ""
    assert frontal.extra["report"] == "FINDINGS: Small left effusion. IMPRESSION: Possible pneumonia."
    assert frontal.extra["split"] == "val" and items["174413ec"].extra["view"] == "LATERAL"


def test_mimic_cxr_jpg_reads_the_same_tables(tmp_path):
    items = list_items("mimic-cxr-jpg", "xray", _mimic(tmp_path, ".jpg"))
    assert len(items) == 2 and all(i.rel.endswith(".jpg") for i in items)
    assert all(i.extra["pleural_effusion"] == "1" for i in items)


def test_chexpert_keeps_uncertain_and_resolves_paths_above_the_root(tmp_path):
    root = tmp_path / "CheXpert-v1.0-small"
    _image(root / "train" / "patient00001" / "study1" / "view1_frontal.jpg")
    _image(root / "valid" / "patient64541" / "study1" / "view1_frontal.jpg", 1)
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Cardiomegaly,Edema,Pleural Effusion\n"
    (root / "train.csv").write_text(
        header
        + "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,,-1.0,,1.0\n"
        "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg,Male,50,Frontal,PA,1.0,,,\n"
    )
    (root / "valid.csv").write_text(
        header
        + "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,0.0,0.0\n"
    )
    items = list_items("chexpert", "xray", root)
    train, missing, valid = items
    assert train.rel == "train/patient00001/study1/view1_frontal.jpg"
    assert (train.raw_subject, train.raw_study) == ("patient00001", "patient00001/study1")
    assert train.extra["cardiomegaly"] == "-1" and train.extra["pleural_effusion"] == "1"
    assert train.extra["edema"] == "" and train.extra["view"] == "AP" and train.extra["split"] == "train"
    assert "missing" in missing.reject
    assert (
        valid.extra["split"] == "val" and valid.extra["cardiomegaly"] == "1" and valid.extra["edema"] == "0"
    )


def test_nih_upstream_table_lists_and_patient_level_val(tmp_path):
    for name in ("00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png"):
        _image(tmp_path / "images_001" / "images" / name)
    (tmp_path / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
        "00000001_000.png,Cardiomegaly|Effusion,0,1,58,M,PA\n00000001_001.png,No Finding,1,1,58,M,PA\n"
        "00000002_000.png,Nodule,0,2,81,M,AP\n00000003_000.png,Hernia,0,3,74,F,PA\n"
    )
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000003_000.png\n")
    items = {Path(i.rel).name: i for i in list_items("nih-cxr14", "xray", tmp_path)}
    first = items["00000001_000.png"]
    assert first.extra["cardiomegaly"] == "1" and first.extra["pleural_effusion"] == "1"
    assert first.extra["no_finding"] == "0" and first.extra["view"] == "PA" and first.raw_subject == "1"
    assert (
        items["00000002_000.png"].extra["nodule"] == "1"
        and items["00000002_000.png"].extra["lung_lesion"] == "1"
    )
    assert items["00000003_000.png"].extra["split"] == "test"
    # Both images of patient 1 land in the same split.
    assert items["00000001_000.png"].extra["split"] == items["00000001_001.png"].extra["split"] != "test"


def test_real_nih_thumbnails_labels_match_sources_counts(shared_data):
    items = list_items("nih", "xray", shared_data / "nih_cxr14_thumbs64")
    assert len(items) == 1000 and not any(i.reject for i in items)
    count = {
        label: sum(i.extra[label] == "1" for i in items)
        for label in ("no_finding", "pleural_effusion", "hernia")
    }
    assert count == {"no_finding": 499, "pleural_effusion": 170, "hernia": 9}
    assert len({i.raw_subject for i in items}) == 264
