"""Stage test: preprocess-reports on a small reports.csv with planted identifiers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines import preprocess

_CANARIES = (
    "Zebulon Quixote",
    "MRN7719304",
    "ACC99812345",
    "(212) 555-0199",
    "1961-07-14",
    "2021-03-05",
    "zq@example.org",
)


def _reports_csv(root: Path) -> None:
    rows = [
        {
            "mrn": "MRN7719304",
            "accession": "ACC99812345",
            "kind": "radiology",
            "report_date": "2021-03-05",
            "text": "EXAMINATION: Chest radiograph.\nPATIENT: Zebulon Quixote, MRN MRN7719304, DOB 1961-07-14.\n"
            "FINDINGS: Left pleural effusion. No pneumothorax. Possible mild cardiomegaly.\n"
            "IMPRESSION: Effusion; call (212) 555-0199 or zq@example.org.",
        },
        {
            "mrn": "MRN7719305",
            "accession": "ACC99812346",
            "kind": "radiology",
            "report_date": "2021-03-06",
            "text": "FINDINGS: Heart size is normal. No pleural effusion.\nIMPRESSION: No acute cardiopulmonary process.",
        },
        {
            "mrn": "MRN7719304",
            "accession": "ACC99812345",
            "kind": "cardiology",
            "report_date": "2021-03-05",
            "text": "Patient Zebulon Quixote. Sinus tachycardia. Left bundle branch block. No ST elevation.",
        },
        {
            "mrn": "MRN7719306",
            "accession": "ACC99812347",
            "kind": "radiology",
            "report_date": "",
            "text": "  ",
        },
    ]
    (root / "reports").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "reports" / "reports.csv", index=False)


@pytest.fixture
def processed(tmp_path: Path) -> tuple[Path, Path]:
    raw, out = tmp_path / "raw", tmp_path / "out"
    _reports_csv(raw)
    cfg = preprocess.PreprocessConfig(
        dataset="tiny",
        root=str(raw),
        out=str(out),
        cards_dir=str(tmp_path / "cards"),
        workers=1,
        progress=False,
    )
    assert preprocess.run_reports(cfg) == 0
    return out / "reports", tmp_path / "cards"


def test_no_identifier_or_raw_id_column_reaches_any_output(processed):
    out_dir, cards = processed
    manifest = pd.read_csv(out_dir / "manifest.csv")
    assert not {"mrn", "accession", "report_date", "patient_id"} & set(manifest.columns)
    for path in [*out_dir.rglob("*"), *cards.rglob("*")]:
        if path.is_file():
            content = path.read_text(errors="replace")
            for canary in _CANARIES:
                assert canary not in content, (canary, path.name)


def test_labels_are_written_per_report(processed):
    out_dir, _ = processed
    manifest = pd.read_csv(out_dir / "manifest.csv")
    assert len(manifest) == 3
    radiology = manifest[manifest["kind"] == "radiology"].sort_values("text")
    abnormal = radiology[radiology["text"].str.contains("Left pleural effusion")].iloc[0]
    normal = radiology[radiology["text"].str.contains("Heart size is normal")].iloc[0]
    assert (abnormal["pleural_effusion"], abnormal["pneumothorax"], abnormal["cardiomegaly"]) == (1, 0, -1)
    assert abnormal["no_finding"] == 0 and pd.isna(abnormal["edema"])
    assert (normal["no_finding"], normal["cardiomegaly"], normal["pleural_effusion"]) == (1, 0, 0)
    ecg = manifest[manifest["kind"] == "cardiology"].iloc[0]
    assert (ecg["STach"], ecg["LBBB"], ecg["STE"]) == (1, 1, 0)
    assert (ecg["NSR"], ecg["SB"], ecg["AF"]) == (0, 0, 0)  # one stated rhythm rules out the others
    assert pd.isna(ecg["LVH"])  # not mentioned


def test_empty_report_is_rejected_with_a_reason(processed):
    out_dir, _ = processed
    rejections = pd.read_csv(out_dir / "rejections.csv")
    assert list(rejections["reason"]) == ["empty report text"]
