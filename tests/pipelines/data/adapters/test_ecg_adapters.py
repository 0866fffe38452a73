"""ECG adapters on tiny WFDB fixtures in the upstream layouts, and on the real CinC/PhysioNet samples."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import wfdb

from pipelines.data.adapters import list_items, ptbxl
from pipelines.data.adapters.cinc2021 import dx_names

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _record(folder: Path, name: str, comments: list[str], seed: int = 0, fs_hz: int = 100) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    signal = np.random.default_rng(seed).standard_normal((fs_hz * 3, 12)) * 0.2
    wfdb.wrsamp(
        name,
        fs=fs_hz,
        units=["mV"] * 12,
        sig_name=LEADS,
        p_signal=signal,
        fmt=["16"] * 12,
        comments=comments,
        write_dir=str(folder),
    )
    return folder / f"{name}.hea"


def test_cinc_dx_codes_become_label_columns_and_names(tmp_path):
    _record(tmp_path / "georgia", "E00001", ["Age: 60", "Sex: Male", "Dx: 426177001,59118001,999999"])
    (tmp_path / "dx_mapping_scored.csv").write_text(
        "Dx,SNOMEDCTCode,Abbreviation\nsinus bradycardia,426177001,SB\nright bundle branch block,59118001,RBBB\n"
    )
    (item,) = list_items("cinc2021", "ecg", tmp_path)
    assert item.extra["SB"] == "1" and item.extra["RBBB"] == "1" and item.extra["AF"] == "0"
    assert item.extra["dx_names"] == "sinus bradycardia;right bundle branch block;999999"
    assert item.raw_subject == "E00001"  # no patient IDs in the challenge data
    assert {p.suffix for p in item.members} == {".hea", ".dat"}


def test_cinc_equivalent_classes_share_a_label(tmp_path):
    _record(tmp_path, "A1", ["Dx: 63593006"])  # SVPB, scored as PAC by the challenge
    (item,) = list_items("cinc2021", "ecg", tmp_path)
    assert item.extra["PAC"] == "1"


def _ptbxl_root(root: Path) -> Path:
    _record(root / "records500" / "00000", "00001_hr", [], seed=1, fs_hz=500)
    _record(root / "records100" / "00000", "00001_lr", [], seed=1, fs_hz=100)
    _record(root / "records500" / "00000", "00002_hr", [], seed=2, fs_hz=500)
    (root / "ptbxl_database.csv").write_text(
        "ecg_id,patient_id,report,scp_codes,strat_fold,filename_lr,filename_hr\n"
        "1,15709.0,sinusrhythmus periphere niederspannung,\"{'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}\",3,"
        "records100/00000/00001_lr,records500/00000/00001_hr\n"
        "2,13243.0,sinus bradycardia. possible inferior infarct,\"{'SBRAD': 0.0, 'IMI': 35.0}\",10,"
        "records100/00000/00002_lr,records500/00000/00002_hr\n"
        "3,13243.0,missing record,\"{'NORM': 100.0}\",9,records100/00000/00003_lr,records500/00000/00003_hr\n"
    )
    (root / "scp_statements.csv").write_text(
        ",description,diagnostic,diagnostic_class\nNORM,normal ECG,1.0,NORM\nIMI,inferior MI,1.0,MI\n"
        "SR,sinus rhythm,,\nSBRAD,sinus bradycardia,,\nLVOLT,low QRS voltages,,\n"
    )
    return root


def test_ptbxl_rows_give_report_labels_folds_and_patient(tmp_path, monkeypatch):
    monkeypatch.delenv("PTBXL_RECORDS", raising=False)
    items = {i.raw_study: i for i in list_items("ptbxl", "ecg", _ptbxl_root(tmp_path))}
    first, second = items["1"], items["2"]
    assert first.rel == "records500/00000/00001_hr.hea" and first.extra["split"] == "train"
    assert first.extra["NSR"] == "1" and first.extra["LQRSV"] == "1" and first.extra["MI"] == "0"
    assert first.extra["report"] == "sinusrhythmus periphere niederspannung"
    assert first.extra["superclasses"] == "NORM"
    assert second.extra["SB"] == "1" and second.extra["MI"] == "-1"  # likelihood 35: possible
    assert second.extra["split"] == "test" and second.raw_subject == first.raw_subject.replace(
        "15709", "13243"
    )
    assert "missing" in items["3"].reject


def test_ptbxl_100hz_records_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("PTBXL_RECORDS", "100")
    items = {i.raw_study: i for i in ptbxl.list_ptbxl(_ptbxl_root(tmp_path))}
    assert items["1"].rel == "records100/00000/00001_lr.hea"
    assert items["2"].rel == "records500/00000/00002_hr.hea"  # no 100 Hz file: falls back


def test_mimic_ecg_machine_report_is_joined_in_order(tmp_path):
    _record(tmp_path / "files" / "p1000" / "p10000032" / "s40689238", "40689238", [])
    (tmp_path / "record_list.csv").write_text(
        "subject_id,study_id,file_name,ecg_time,path\n"
        "10000032,40689238,40689238,2180-07-23 08:44:00,files/p1000/p10000032/s40689238/40689238\n"
        "10000033,40689239,40689239,2180-07-23 09:44:00,files/p1000/p10000033/s40689239/40689239\n"
    )
    (tmp_path / "machine_measurements.csv").write_text(
        "subject_id,study_id,report_0,report_1,report_2\n10000032,40689238,Sinus rhythm,,Borderline ECG\n"
    )
    items = list_items("mimic-iv-ecg", "ecg", tmp_path)
    assert (items[0].raw_subject, items[0].raw_study) == ("10000032", "40689238")
    assert items[0].extra["report"] == "Sinus rhythm. Borderline ECG."
    assert "missing" in items[1].reject


def test_generic_wfdb_uses_ptb_reason_and_patient_folder(tmp_path):
    _record(
        tmp_path / "patient001",
        "s0010_re",
        ["age: 81", "sex: female", "Reason for admission: Myocardial infarction"],
    )
    _record(tmp_path, "100", ["69 M 1085 1629 x1", "Aldomet, Inderal"])
    items = {Path(i.rel).stem: i for i in list_items("wfdb", "ecg", tmp_path)}
    assert items["s0010_re"].raw_subject == "patient001" and items["s0010_re"].extra == {"MI": "1"}
    assert items["100"].raw_subject == "100" and items["100"].extra == {}


def test_generic_wfdb_dx_label_names_and_scp_codes_are_positives_not_negatives(tmp_path):
    """A ``# Dx:`` of label names (the demo's) or SCP codes states positives like SNOMED ids do."""
    _record(tmp_path, "demo1", ["Dx: NSR,LBBB"])
    _record(tmp_path, "scp1", ["Dx: AFIB"], seed=1)
    _record(tmp_path, "snomed1", ["Dx: 164889003"], seed=2)
    items = {Path(i.rel).stem: i.extra for i in list_items("wfdb", "ecg", tmp_path)}
    assert items["demo1"]["NSR"] == items["demo1"]["LBBB"] == "1"
    assert items["demo1"]["AF"] == items["demo1"]["STE"] == "0"
    assert items["scp1"] == items["snomed1"]
    assert items["scp1"]["AF"] == "1" and items["scp1"]["NSR"] == "0"


def test_real_cinc_sample_labels_match_its_index(shared_data):
    root = shared_data / "cinc2021_sample_ecg"
    items = list_items("cinc2021", "ecg", root)
    assert len(items) == 50 and not any(i.reject for i in items)
    assert (
        sum(i.extra["STach"] == "1" for i in items) == 23 and sum(i.extra["NSR"] == "1" for i in items) == 15
    )
    hr = {i.raw_study: i for i in items}["HR06000"]
    assert hr.extra["report"].startswith("sinus rhythm") and hr.extra["split"] == "test"  # strat_fold 10
    assert len(dx_names(root)) > 100


def test_real_ptbxl_rows_read_by_the_ptbxl_adapter(shared_data, tmp_path, monkeypatch):
    """The 10 real PTB-XL rows, with their real signals (CinC HR0600x) written in the PTB-XL layout."""
    monkeypatch.delenv("PTBXL_RECORDS", raising=False)
    source = shared_data / "cinc2021_sample_ecg"
    shutil.copy(source / "ptbxl_database_rows_6000-6009.csv", tmp_path / "ptbxl_database.csv")
    for ecg_id in range(6000, 6010):
        record = wfdb.rdrecord(str(source / f"HR{ecg_id:05d}"))
        folder = tmp_path / "records500" / "06000"
        folder.mkdir(parents=True, exist_ok=True)
        wfdb.wrsamp(
            f"{ecg_id:05d}_hr",
            fs=record.fs,
            units=record.units,
            sig_name=record.sig_name,
            p_signal=record.p_signal,
            fmt=["16"] * 12,
            write_dir=str(folder),
        )
    items = list_items("ptbxl", "ecg", tmp_path)
    assert len(items) == 10 and not any(i.reject for i in items)
    assert all(i.extra["report"] for i in items)
    assert {i.extra["split"] for i in items} <= {"train", "val", "test"}
    assert sum(i.extra["NSR"] == "1" for i in items) >= 1


def test_real_wfdb_samples_all_listed(shared_data):
    items = {Path(i.rel).stem: i for i in list_items("wfdb", "ecg", shared_data / "wfdb_python_sample_ecg")}
    assert set(items) == {"100", "s0010_re", "a103l", "v102s", "test01_00s"}
    assert items["s0010_re"].extra == {"MI": "1"}
