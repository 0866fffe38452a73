"""Without reports, the ECG zero-shot task is labelled by each record's header diagnosis codes: SNOMED CT
``# Dx:`` codes (CinC 2021, MIMIC-IV-ECG), PTB-XL SCP statements through the label maps, our own codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from pipelines.data.adapters._common import ecg_label_cells
from pipelines.data.dataset import StudyDataset, ViewSpec, more_views
from pipelines.evaluation.real_data import positive_labels, preprocess_public
from pipelines.evaluation.tasks import (
    default_zero_shot_tasks,
    header_code_cells,
    label_columns,
    resolve_label_sources,
    task_labels,
)

# A few records of each CinC source in the shared sample: Georgia (E), PTB-XL (HR), Chapman-Shaoxing (JS).
CINC_RECORDS = ("E07500", "E07501", "E07502", "E07503", "HR06000", "HR06001", "HR06002", "JS20000", "JS20001")
ECG_VIEWS = {"ecg": ViewSpec(modality="ecg", tower="ecg")}


def _labels_by_record(root: Path, labels: dict[str, np.ndarray], dataset: StudyDataset) -> dict[str, dict]:
    sources = dataset.labels("ecg", ["source"])["source"]
    return {
        Path(str(source)).stem: {label: values[i] for label, values in labels.items()}
        for i, source in enumerate(sources)
    }


@pytest.fixture(scope="module")
def cinc(shared_data, tmp_path_factory) -> tuple[Path, Path]:
    """The sample records copied as they are, preprocessed by the plain WFDB folder reader (no adapter,
    so no label columns: only the reader's ``dx``)."""
    base = tmp_path_factory.mktemp("cinc")
    raw = base / "raw"
    raw.mkdir()
    for record in CINC_RECORDS:
        for suffix in (".hea", ".mat"):
            shutil.copy(shared_data / "cinc2021_sample_ecg" / f"{record}{suffix}", raw / f"{record}{suffix}")
    summary = preprocess_public("folder", "ecg", raw, base / "processed", str(base / "cards"), 1)
    assert summary["processed"] == len(CINC_RECORDS)
    return raw, base / "processed" / "folder"


def test_without_reports_the_ecg_task_reads_header_snomed_codes_of_real_cinc_records(cinc):
    raw, processed = cinc
    assert not (processed / "reports").exists()
    tasks, views = resolve_label_sources(default_zero_shot_tasks(), more_views(), processed)
    assert list(views) == ["ecg"] and list(tasks) == ["ecg_diagnoses"]  # no X-ray, no reports
    task = tasks["ecg_diagnoses"]
    assert task.labels_from == "ecg"
    dataset = StudyDataset(processed, ["train", "val", "test"], views)
    labels = _labels_by_record(raw, task_labels(dataset, [task], views)["ecg"], dataset)
    assert set(labels) == set(CINC_RECORDS)
    for record, got in labels.items():
        # The truth, read independently: the header's Dx codes through the challenge's SNOMED table.
        comments = wfdb.rdheader(str(raw / record)).comments
        codes = next(c.split(":", 1)[1] for c in comments if c.lower().startswith("dx"))
        expected = ecg_label_cells([c.strip() for c in codes.split(",")])
        assert {k: got[k] for k in label_columns(task)} == {
            k: float(expected[k]) for k in label_columns(task)
        }
    # Every record of the sample has a stated rhythm or a diagnosis: some positives, many negatives.
    stacked = np.array([[v[k] for k in label_columns(task)] for v in labels.values()])
    assert (stacked == 1).sum() >= len(CINC_RECORDS) and (stacked == 0).sum() > (stacked == 1).sum()
    assert {"NSR", "SB", "STach"} <= set(positive_labels(processed / "ecg", label_columns(task)))


def test_adapter_cells_and_header_codes_agree_on_the_same_records(cinc, tmp_path):
    raw, plain = cinc
    preprocess_public("cinc2021", "ecg", raw, tmp_path, str(tmp_path / "cards"), 1)
    task = default_zero_shot_tasks()["ecg_diagnoses"]
    task = resolve_label_sources({"t": task}, more_views(), plain)[0]["t"]
    by_source = []
    for root in (plain, tmp_path / "cinc2021"):
        dataset = StudyDataset(root, ["train", "val", "test"], ECG_VIEWS, key="sample_id")
        by_source.append(_labels_by_record(raw, task_labels(dataset, [task], ECG_VIEWS)["ecg"], dataset))
    assert by_source[0] == by_source[1]


def test_evaluate_keeps_only_the_views_and_pairs_the_data_has(cinc):
    from pipelines.evaluate import EvaluateConfig, with_classes

    _, processed = cinc
    cfg = with_classes(EvaluateConfig(data_root=str(processed)))
    assert list(cfg.views) == ["ecg"] and cfg.retrieval_pairs == []
    assert cfg.tasks["ecg_diagnoses"].labels_from == "ecg"


def _write_record(directory: Path, name: str, dx_comment: str | None, seed: int) -> None:
    from pipelines.demo.ecg import LEADS, simulate_ecg

    directory.mkdir(parents=True, exist_ok=True)
    signal = simulate_ecg(("NSR",), fs_hz=100, seed=seed)
    wfdb.wrsamp(
        record_name=name,
        fs=100,
        units=["mV"] * 12,
        sig_name=list(LEADS),
        d_signal=np.round(signal * 1000).astype(np.int32),
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        comments=[] if dx_comment is None else [f"Dx: {dx_comment}"],
        write_dir=str(directory),
    )


def test_ptbxl_scp_statements_label_the_task_through_the_label_maps(tmp_path):
    """A PTB-XL layout (records100/ + ptbxl_database.csv): SCP codes -> SNOMED -> our labels; a
    diagnostic statement of likelihood < 50 stays uncertain."""
    root = tmp_path / "ptbxl"
    scp = {
        1: "{'NORM': 100.0, 'SR': 0.0}",
        2: "{'AFIB': 0.0, 'LVH': 50.0}",
        3: "{'SBRAD': 0.0, 'CLBBB': 100.0}",
        4: "{'IMI': 35.0, 'STACH': 0.0, 'STE_': 100.0, 'LVH': 15.0}",
    }
    rows = []
    for ecg_id, codes in scp.items():
        name = f"{ecg_id:05d}_lr"
        _write_record(root / "records100" / "00000", name, None, seed=ecg_id)
        rows.append(
            {
                "ecg_id": ecg_id,
                "patient_id": 100 + ecg_id,
                "filename_lr": f"records100/00000/{name}",
                "filename_hr": f"records500/00000/{ecg_id:05d}_hr",
                "scp_codes": codes,
                "strat_fold": 10,
                "report": "",
            }
        )
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    preprocess_public("ptbxl", "ecg", root, tmp_path / "processed", str(tmp_path / "cards"), 1)
    processed = tmp_path / "processed" / "ptbxl"
    tasks, views = resolve_label_sources(default_zero_shot_tasks(), more_views(), processed)
    task = tasks["ecg_diagnoses"]
    dataset = StudyDataset(processed, "test", views)
    got = _labels_by_record(root, task_labels(dataset, [task], views)["ecg"], dataset)
    picked = ("NSR", "SB", "STach", "AF", "LBBB", "LVH", "STE", "STD")
    assert {r: {k: v[k] for k in picked} for r, v in got.items()} == {
        "00001_lr": {"NSR": 1, "SB": 0, "STach": 0, "AF": 0, "LBBB": 0, "LVH": 0, "STE": 0, "STD": 0},
        "00002_lr": {"NSR": 0, "SB": 0, "STach": 0, "AF": 1, "LBBB": 0, "LVH": 1, "STE": 0, "STD": 0},
        "00003_lr": {"NSR": 0, "SB": 1, "STach": 0, "AF": 0, "LBBB": 1, "LVH": 0, "STE": 0, "STD": 0},
        # LVH at likelihood 15: uncertain (-1), which scoring excludes.
        "00004_lr": {"NSR": 0, "SB": 0, "STach": 1, "AF": 0, "LBBB": 0, "LVH": -1, "STE": 1, "STD": 0},
    }


def test_header_dx_comments_with_scp_or_our_codes_label_records_without_an_adapter(tmp_path):
    """A PTB-XL-style header that carries SCP codes in ``# Dx:`` (and one with the demo's own codes),
    read by the plain folder reader: the reader's ``dx`` column is all the evaluation needs."""
    raw = tmp_path / "raw"
    _write_record(raw, "r1", "SBRAD,CLBBB", seed=1)
    _write_record(raw, "r2", "AF,LVH", seed=2)
    _write_record(raw, "r3", None, seed=3)  # no codes: unknown, not negative
    preprocess_public("folder", "ecg", raw, tmp_path / "processed", str(tmp_path / "cards"), 1)
    processed = tmp_path / "processed" / "folder"
    task = resolve_label_sources(default_zero_shot_tasks(), more_views(), processed)[0]["ecg_diagnoses"]
    dataset = StudyDataset(processed, ["train", "val", "test"], ECG_VIEWS)
    got = _labels_by_record(raw, task_labels(dataset, [task], ECG_VIEWS)["ecg"], dataset)
    assert {k: got["r1"][k] for k in ("SB", "LBBB", "NSR", "AF")} == {"SB": 1, "LBBB": 1, "NSR": 0, "AF": 0}
    assert {k: got["r2"][k] for k in ("AF", "LVH", "SB", "STE")} == {"AF": 1, "LVH": 1, "SB": 0, "STE": 0}
    assert all(np.isnan(v) for v in got["r3"].values())


@pytest.mark.parametrize(
    ("dx", "scp", "positives"),
    [
        ("426177001;164909002", "", {"SB", "LBBB"}),
        ("733534002", "", {"LBBB"}),  # CinC equivalent class of LBBB
        (426783006.0, "", {"NSR"}),  # one code read from CSV as a number
        ("", "SR;LVH", {"NSR", "LVH"}),
        ("NSR,STE", "", {"NSR", "STE"}),  # the demo cohort's own codes
        ("99999999 UNKNOWN", "", set()),  # codes outside the vocabulary: every label negative
    ],
)
def test_header_code_cells(dx, scp, positives):
    cells = header_code_cells(dx, scp)
    assert {k for k, v in cells.items() if v == 1} == positives
    assert set(cells.values()) <= {0.0, 1.0} and len(cells) > 20


def test_no_codes_means_unknown():
    assert header_code_cells("", "") == {} and header_code_cells(float("nan")) == {}
