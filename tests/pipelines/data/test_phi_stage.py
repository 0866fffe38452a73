"""PHI end to end: canaries planted in WFDB comments (keys damaged every way), DICOM tags (identifying,
free-text, private, hostile code strings) and folder names reach no output of a real preprocessing
run: manifest, shard CSVs, shards, rejections, summary, normalisation record, data card, console.

The preprocessing stage logs nothing to MLflow, so its outputs are all files under ``out`` and
``cards_dir`` plus what it prints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import wfdb

from pipelines import preprocess
from tests.pipelines.data.test_phi import CANARIES, HOSTILE_COMMENTS, IDENTIFYING_TAGS
from tests.pipelines.data.test_xray import ramp, write_dicom

SUBJECT_FOLDER = "CANARYSUBJECT-MRN-998877"
CANARY_MARKERS = [*CANARIES, "Canary", "998877", "12345678"]


def _config(tmp_path: Path) -> preprocess.PreprocessConfig:
    return preprocess.PreprocessConfig(
        root=str(tmp_path / "raw"),
        out=str(tmp_path / "out"),
        cards_dir=str(tmp_path / "cards"),
        workers=1,
        shard_size=4,
        progress=False,
        salt="phi-stage-test-salt",
    )


def _ecg_records(root: Path) -> None:
    folder = root / "ecg" / SUBJECT_FOLDER
    folder.mkdir(parents=True)
    t = np.arange(5000) / 500
    signals = np.stack([np.sin(2 * np.pi * 3 * t), np.sin(2 * np.pi * 5 * t)], axis=1)
    for name, leads in (("kept", ["I", "II"]), ("no_leads", ["CANARYLEAD1", "CANARYLEAD2"])):
        wfdb.wrsamp(name, fs=500, units=["mV", "mV"], sig_name=leads, p_signal=signals, fmt=["16", "16"],
                    comments=HOSTILE_COMMENTS, write_dir=str(folder))  # fmt: skip
    # A header that lies about its length, with the same comments: rejected before decoding.
    lying = (folder / "kept.hea").read_text().replace("kept 2 500 5000", "lying 2 500 9000000000")
    (folder / "lying.hea").write_text(lying.replace("kept.dat", "lying.dat"))
    (folder / "lying.dat").write_bytes((folder / "kept.dat").read_bytes())


def _xray_files(root: Path) -> None:
    folder = root / "xray" / SUBJECT_FOLDER
    folder.mkdir(parents=True)
    cases = {
        "kept": {},
        "ct": {"Modality": "CT"},
        "hostile_view": {"ViewPosition": "CANARYVIEW"},
        "hostile_part": {"BodyPartExamined": "CANARYPART"},
        "hostile_modality": {"Modality": "CANARYMOD"},
        "huge": {},
    }
    for name, tags in cases.items():
        path = write_dicom(
            folder / f"{name}.dcm", ramp(), bits_stored=12, **{"BodyPartExamined": "CHEST", **tags}
        )
        ds = pydicom.dcmread(path)
        for keyword, value in IDENTIFYING_TAGS.items():
            setattr(ds, keyword, value)
        ds.add_new((0x0009, 0x0010), "LO", "CANARY PRIVATE CREATOR")
        ds.add_new((0x0009, 0x1001), "LO", "CANARY PRIVATE VALUE")
        if name == "huge":
            ds.Rows = ds.Columns = 65535
        ds.save_as(path)


def _assert_no_canary_in_outputs(cfg: preprocess.PreprocessConfig, printed: str) -> None:
    outputs = [p for root in (cfg.out_dir, Path(cfg.cards_dir)) for p in root.rglob("*") if p.is_file()]
    assert outputs
    for where, text in [("console", printed)] + [(str(p), p.read_bytes().decode("latin-1")) for p in outputs]:
        for canary in CANARY_MARKERS:
            assert canary not in text, f"{canary!r} leaked into {where}"


@pytest.mark.parametrize("modality", ["ecg", "xray"])
def test_no_planted_identifier_reaches_any_stage_output(tmp_path, capsys, modality):
    (_ecg_records if modality == "ecg" else _xray_files)(tmp_path / "raw")
    cfg = _config(tmp_path)
    assert getattr(preprocess, f"run_{modality}")(cfg) == 0
    printed = capsys.readouterr()
    _assert_no_canary_in_outputs(cfg, printed.out + printed.err)
    manifest = (cfg.out_dir / modality / "manifest.csv").read_text()
    rejections = (cfg.out_dir / modality / "rejections.csv").read_text()
    if modality == "ecg":
        assert "NSR;164889003" in manifest and "patient [NAME], MRN [ID]" in manifest
        assert "header declares 9000000000 samples" in rejections and "no standard 12-lead" in rejections
    else:
        assert manifest.count(".dcm") == 1
        for reason in ("modality CT is not a radiograph", "view (unrecognised value) skipped",
                       "body part (unrecognised value) skipped", "modality (unrecognised value)",
                       "65535 x 65535 pixels"):  # fmt: skip
            assert reason in rejections, reason
