"""Generic folder sources: which files belong to a modality and the fallback subject/study IDs."""

from __future__ import annotations

from pathlib import PurePosixPath

from pipelines.data import sources


def test_ids_follow_the_subject_folder_and_study_file_layout():
    assert sources.derive_ids(PurePosixPath("MRN001/ACC9_PA.dcm")) == ("MRN001", "ACC9")
    assert sources.derive_ids(PurePosixPath("MRN001/ACC9.hea")) == ("MRN001", "ACC9")
    assert sources.derive_ids(PurePosixPath("0_george_1.wav")) == ("0_george_1", "0_george_1")


def test_wfdb_records_are_grouped_and_orphan_signal_files_are_rejected(tmp_path):
    ecg = tmp_path / "ecg" / "MRN1"
    ecg.mkdir(parents=True)
    (ecg / "A1.hea").write_text("A1 2 500 5000\nA1.dat 16 1000 16 0 0 0 0 I\nA1.dat 16 1000 16 0 0 0 0 II\n")
    (ecg / "A1.dat").write_bytes(b"\0" * 8)
    (ecg / "lost.dat").write_bytes(b"\0" * 8)
    (ecg / "notes.txt").write_text("not an ECG")
    items = {item.rel: item for item in sources.list_ecg(tmp_path)}
    assert sorted(items) == ["ecg/MRN1/A1.hea", "ecg/MRN1/lost.dat"]
    assert [p.name for p in items["ecg/MRN1/A1.hea"].members] == ["A1.hea", "A1.dat"]
    assert items["ecg/MRN1/lost.dat"].reject == "WFDB signal file without a header (.hea)"
    assert (items["ecg/MRN1/A1.hea"].raw_subject, items["ecg/MRN1/A1.hea"].raw_study) == ("MRN1", "A1")


def test_record_hash_covers_header_and_signal_but_not_the_name(tmp_path):
    for name in ("r1", "r2"):
        (tmp_path / f"{name}.hea").write_text("rec 1 500 10\n")
        (tmp_path / f"{name}.dat").write_bytes(b"\1" * 20)
    h1 = sources.source_sha256((tmp_path / "r1.hea", tmp_path / "r1.dat"))
    assert h1 == sources.source_sha256((tmp_path / "r2.hea", tmp_path / "r2.dat"))
    (tmp_path / "r2.dat").write_bytes(b"\2" * 20)
    assert h1 != sources.source_sha256((tmp_path / "r2.hea", tmp_path / "r2.dat"))


def test_suffixless_dicom_files_are_found_and_other_files_ignored(tmp_path):
    (tmp_path / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    (tmp_path / "README").write_text("hello")
    (tmp_path / "chest.PNG").write_bytes(b"png")
    (tmp_path / ".hidden.dcm").write_bytes(b"x")
    assert [item.rel for item in sources.list_xray(tmp_path)] == ["IM0001", "chest.PNG"]


def test_speech_takes_speaker_and_transcript_from_the_side_table(tmp_path):
    speech = tmp_path / "speech"
    (speech / "spk7").mkdir(parents=True)
    (speech / "spk7" / "u1.wav").write_bytes(b"RIFF")
    (speech / "transcripts.csv").write_text(
        "file,speaker,transcript,intent,sample_rate_hz\nspk7/u1.wav,voice-7,check pulse,check_pulse,16000\n"
    )
    (item,) = sources.list_speech(tmp_path)
    assert item.raw_subject == "voice-7" and item.raw_study == "u1"
    assert item.extra == {"transcript": "check pulse", "intent": "check_pulse"}


def test_pseudonymous_paths_hide_names_and_depend_on_the_salt():
    shown = sources.pseudonymous_path("xray/MRN0042/ACC7_PA.dcm", "salt-a")
    assert shown.startswith("xray/") and shown.endswith(".dcm") and "MRN0042" not in shown
    assert shown == sources.pseudonymous_path("xray/MRN0042/ACC7_PA.dcm", "salt-a")
    assert shown != sources.pseudonymous_path("xray/MRN0042/ACC7_PA.dcm", "salt-b")


def test_free_text_from_side_tables_is_scrubbed_labels_are_not(tmp_path):
    speech = tmp_path / "speech" / "spk1"
    speech.mkdir(parents=True)
    (speech / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "speech" / "transcripts.csv").write_text(
        "file,speaker,transcript,intent\nspk1/a.wav,spk1,call Dr. Canary Smith about MRN 12345678,call_MRN_1\n"
    )
    (item,) = sources.list_speech(tmp_path)
    assert item.extra["transcript"] == "call [NAME] about MRN [ID]"
    assert item.extra["intent"] == "call_MRN_1"  # a label, not free text
    adapter_item = sources.SourceItem(
        tmp_path / "x.hea",
        "x.hea",
        (tmp_path / "x.hea",),
        "s",
        "t",
        extra={"report": "Patient: Jane Canary. NSR."},
    )
    assert "Canary" not in adapter_item.extra["report"] and adapter_item.extra["report"].endswith("NSR.")
