"""The demo-data stage writes a tiny cohort in the documented layout, readable by real libraries."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import soundfile as sf
import wfdb

from pipelines.data.datacard import validate_card
from pipelines.demo_data import DemoDataConfig as Config
from pipelines.demo_data import run


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path, Config]:
    base = tmp_path_factory.mktemp("demo")
    config = Config(
        output_dir=str(base / "raw"),
        seed=11,
        n_subjects=6,
        image_size_px=96,
        n_utterances=3,
        n_speakers=2,
        workers=2,
        cards_dir=str(base / "cards"),
        progress=False,
    )
    assert run(config) == 0
    return base / "raw", base / "cards", config


def test_every_dicom_decodes_with_phi_tags_and_compressed_ones_round_trip(cohort):
    root, _, _ = cohort
    files = sorted((root / "xray").rglob("*.dcm"))
    assert files
    for path in files:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        assert pixels.shape == (96, 96) and pixels.max() <= 2**ds.BitsStored - 1
        assert ds.Modality in {"CR", "DX"} and ds.PhotometricInterpretation in {"MONOCHROME1", "MONOCHROME2"}
        assert path.name == f"{ds.AccessionNumber}_{ds.ViewPosition}.dcm"
        assert path.parent.name == ds.PatientID and str(ds.PatientName) and ds.PatientBirthDate


def test_all_compression_and_variant_kinds_occur_and_round_trip_exactly(tmp_path):
    from pipelines.demo.cohort import TRANSFER_SYNTAXES, XrayPlan, plan_cohort, write_xray

    study = next(s for s in plan_cohort(5, 3) if s.xrays)
    for compression, uid in TRANSFER_SYNTAXES.items():
        for bits in (10, 12, 16):
            plan = XrayPlan(
                f"x/{compression}{bits}.dcm",
                "PA",
                "DX",
                "MONOCHROME1",
                bits,
                compression,
                "lut",
                study.xrays[0].phantom,
            )
            raw = XrayPlan(f"x/raw{bits}.dcm", "PA", "DX", "MONOCHROME1", bits, "none", "lut", plan.phantom)
            ds = pydicom.dcmread(write_xray(tmp_path, study, plan, 1, 64))
            assert ds.file_meta.TransferSyntaxUID == uid
            reference = pydicom.dcmread(write_xray(tmp_path, study, raw, 1, 64)).pixel_array
            assert np.array_equal(ds.pixel_array, reference)


def test_ecg_records_read_with_header_comments(cohort):
    root, _, _ = cohort
    headers = sorted((root / "ecg").rglob("*.hea"))
    assert headers
    for hea in headers:
        record = wfdb.rdrecord(str(hea.with_suffix("")))
        assert record.sig_len == 10 * record.fs and record.n_sig in (11, 12)
        comments = dict(c.split(": ", 1) for c in record.comments)
        assert set(comments) >= {"Patient", "MRN", "DOB", "Accession", "Age", "Sex", "Dx"}
        assert comments["MRN"] == hea.parent.name and comments["Accession"] == hea.stem
        assert np.abs(record.p_signal).max() < 10


def test_truth_reports_and_speech_follow_the_layout(cohort):
    root, cards, config = cohort
    truth = list(csv.DictReader((root / "truth.csv").open()))
    reports = list(csv.DictReader((root / "reports" / "reports.csv").open()))
    assert {r["task"] for r in truth} == {"1", "2", "3"}  # 6 subjects cover conditions of all tasks
    keys = {(r["mrn"], r["accession"]) for r in truth}
    assert {(r["mrn"], r["accession"]) for r in reports} <= keys
    assert all("FINDINGS:" in r["text"] and "IMPRESSION:" in r["text"] for r in reports)
    transcripts = list(csv.DictReader((root / "speech" / "transcripts.csv").open()))
    for row in transcripts:
        info = sf.info(root / "speech" / row["file"])
        assert info.samplerate == int(row["sample_rate_hz"]) and row["intent"]
    cohort_json = json.loads((root / "cohort.json").read_text())
    assert cohort_json["seed"] == config.seed and cohort_json["counts"]["studies"] == len(truth)
    assert validate_card(cards / "demo-raw.md") == []


def test_same_seed_gives_identical_files_with_any_worker_count(cohort, tmp_path):
    root, _, config = cohort
    again = Config(
        **{
            **config.__dict__,
            "output_dir": str(tmp_path / "raw"),
            "workers": 1,
            "cards_dir": str(tmp_path / "cards"),
        }
    )
    assert run(again) == 0
    assert _tree_digest(root) == _tree_digest(tmp_path / "raw")


def test_parallel_fast_run_equals_the_sequential_reference_run(cohort, tmp_path):
    """The cohort of 2 worker processes with the fast ECGSYN derivative is byte for byte the cohort of
    one process integrating with neurokit2's own derivative (hashes of every file)."""
    from pipelines.demo.ecg import reference_ecgsyn

    root, _, config = cohort
    assert config.workers == 2
    reference = Config(
        **{
            **config.__dict__,
            "output_dir": str(tmp_path / "raw"),
            "workers": 1,
            "cards_dir": str(tmp_path / "c"),
        }
    )
    with reference_ecgsyn():
        assert run(reference) == 0
    assert _tree_digest(root) == _tree_digest(tmp_path / "raw")
    assert any(p.suffix == ".dat" for p in (tmp_path / "raw").rglob("*"))


def test_withdrawn_list_names_a_seeded_share_of_real_subjects(cohort):
    from pipelines.demo.cohort import plan_cohort
    from pipelines.demo.writers import withdrawn_subjects as _withdrawn_subjects
    from pipelines.unlearning.resolve import read_forget_list

    root, _, config = cohort
    mrns = {r["mrn"] for r in csv.DictReader((root / "truth.csv").open())}
    listed = [e.text for e in read_forget_list(root / "withdrawn.txt")]
    assert len(listed) == 1 and set(listed) <= mrns  # 5% of 6 subjects rounds up to one
    studies = plan_cohort(3, 200)
    chosen = _withdrawn_subjects(studies, 3, 0.05)
    assert len(chosen) == 10 and len(set(chosen)) == 10 and chosen == sorted(chosen)
    assert chosen == _withdrawn_subjects(studies, 3, 0.05) != _withdrawn_subjects(studies, 4, 0.05)
    assert _withdrawn_subjects(studies, 3, 0.0) == []
