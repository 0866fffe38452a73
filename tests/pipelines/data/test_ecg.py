"""ECG reader on wfdb-written records, pydicom-written waveform DICOMs and the real shared samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import wfdb
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pipelines.data.ecg import EcgConfig, ecg_normalisation, parse_comments, read_ecg
from pipelines.data.signal import CANONICAL_LEADS
from pipelines.errors import RejectedInput

CFG = EcgConfig(dtype="float32")
TWELVE_LEAD_ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"


def tones(n: int, fs_hz: float, leads: list[str]) -> np.ndarray:
    """One in-band sine per lead, frequency 2 + canonical index Hz, amplitude 1 mV: identifies each lead."""
    t = np.arange(n) / fs_hz
    return np.stack([np.sin(2 * np.pi * (2 + CANONICAL_LEADS.index(name)) * t) for name in leads], axis=1)


def dominant_hz(row: np.ndarray, fs_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(row.astype(np.float64)))
    return float(np.fft.rfftfreq(len(row), 1 / fs_hz)[np.argmax(spectrum)])


def write_wfdb(
    folder: Path, name: str, signals: np.ndarray, leads: list[str], fs_hz: float, comments=()
) -> Path:
    wfdb.wrsamp(
        name,
        fs=fs_hz,
        units=["mV"] * len(leads),
        sig_name=list(leads),
        p_signal=signals,
        fmt=["16"] * len(leads),
        adc_gain=[1000.0] * len(leads),
        baseline=[0] * len(leads),
        comments=list(comments),
        write_dir=str(folder),
    )
    return folder / f"{name}.hea"


def write_ecg_dicom(path: Path, signals_uv: np.ndarray, fs_hz: float, labels: list[str], **tags) -> Path:
    """A 12-lead ECG Waveform Storage file: one RHYTHM multiplex group, int16 samples in microvolts."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = TWELVE_LEAD_ECG
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = TWELVE_LEAD_ECG
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "ECG"
    group = Dataset()
    group.MultiplexGroupLabel = "RHYTHM"
    group.SamplingFrequency = fs_hz
    group.NumberOfWaveformChannels = len(labels)
    group.NumberOfWaveformSamples = signals_uv.shape[0]
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    channels = []
    for label in labels:
        source, unit, channel = Dataset(), Dataset(), Dataset()
        source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning = "0", "SCPECG", label
        unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning = "uV", "UCUM", "microvolt"
        channel.ChannelSourceSequence = [source]
        channel.ChannelSensitivity = "1"
        channel.ChannelSensitivityUnitsSequence = [unit]
        channel.ChannelSensitivityCorrectionFactor = "1"
        channel.ChannelBaseline = "0"
        channel.WaveformBitsStored = 16
        channels.append(channel)
    group.ChannelDefinitionSequence = channels
    group.WaveformData = np.ascontiguousarray(signals_uv, dtype="<i2").tobytes()
    ds.WaveformSequence = [group]
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_leads_are_reordered_from_a_shuffled_header(tmp_path):
    leads = ["V6", "aVL", "II", "V1", "I", "V3", "aVF", "V2", "III", "V5", "aVR", "V4"]
    hea = write_wfdb(tmp_path, "shuffled", tones(5000, 500, leads), leads, 500)
    (crop,) = read_ecg(hea, CFG)
    assert crop.meta["lead_mask"] == "1" * 12 and crop.meta["derived_leads"] == ""
    for index in range(12):
        assert dominant_hz(crop.array[index], 500) == pytest.approx(2 + index, abs=0.15)


def test_missing_limb_leads_are_derived(tmp_path):
    leads = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    rng = np.random.default_rng(0)
    hea = write_wfdb(tmp_path, "eight", rng.standard_normal((5000, 8)), leads, 500)
    (crop,) = read_ecg(hea, CFG)
    assert crop.meta["lead_mask"] == "1" * 12
    assert crop.meta["derived_leads"] == "III;aVR;aVL;aVF"
    # The derivation is linear, so before z-scoring lead III = II - I; check it on restored amplitudes.
    mean, std = (np.array(json.loads(crop.meta[k]), dtype=float) for k in ("lead_mean_mv", "lead_std_mv"))
    mv = crop.array * std[:, None] + mean[:, None]
    np.testing.assert_allclose(mv[2], mv[1] - mv[0], atol=1e-3)
    np.testing.assert_allclose(mv[3], -(mv[0] + mv[1]) / 2, atol=1e-3)


def test_short_nan_gap_is_interpolated_and_long_gap_masks_the_lead(tmp_path):
    leads = list(CANONICAL_LEADS)
    signals = tones(5000, 500, leads)
    signals[1000:1010, 6] = np.nan  # V1: 20 ms
    signals[2000:2500, 7] = np.nan  # V2: 1 s
    hea = write_wfdb(tmp_path, "gaps", signals, leads, 500)
    (crop,) = read_ecg(hea, CFG)
    assert crop.meta["lead_mask"][6] == "1" and crop.meta["lead_mask"][7] == "0"
    assert np.isfinite(crop.array).all() and np.all(crop.array[7] == 0)


def test_two_lead_holter_is_windowed_with_masked_leads(tmp_path):
    fs = 360
    signals = tones(25 * fs, fs, ["II", "V5"])
    hea = write_wfdb(tmp_path, "holter", signals, ["MLII", "V5"], fs)
    crops = read_ecg(hea, CFG)
    assert [c.crop_index for c in crops] == [0, 1]  # 25 s -> two 10 s windows, tail dropped
    assert all(c.meta["lead_mask"] == "000000000010" for c in crops)
    assert crops[1].meta["crop_start_s"] == 10.0
    assert crops[0].array.shape == (12, 5000) and np.all(crops[0].array[:10] == 0)


def test_short_record_is_padded_and_its_length_recorded(tmp_path):
    hea = write_wfdb(tmp_path, "short", tones(3000, 500, ["I", "II"]), ["I", "II"], 500)
    (crop,) = read_ecg(hea, CFG)
    assert crop.meta["n_samples"] == 3000 and crop.array.shape == (12, 5000)
    assert np.all(crop.array[:, 3000:] == 0) and crop.array[0, :3000].std() > 0.5


def test_flat_lead_is_masked(tmp_path):
    leads = ["I", "II", "V1"]
    signals = tones(5000, 500, leads)
    signals[:, 2] = 0.3  # electrode off: constant
    (crop,) = read_ecg(write_wfdb(tmp_path, "flat", signals, leads, 500), CFG)
    assert crop.meta["lead_mask"][6] == "0" and np.all(crop.array[6] == 0)


def test_header_comments_give_age_sex_dx_and_ids_but_no_identifiers(tmp_path):
    comments = ["Patient: Jane Roe", "MRN: MRN-7", "DOB: 1950-02-03", "Accession: ACC-9", "Age: 74", "Sex: Female",
                "Dx: AF, LBBB"]  # fmt: skip
    hea = write_wfdb(tmp_path, "demo", tones(5000, 500, ["I", "II"]), ["I", "II"], 500, comments)
    (crop,) = read_ecg(hea, CFG)
    assert (crop.raw_subject, crop.raw_study) == ("MRN-7", "ACC-9")
    assert (crop.meta["age"], crop.meta["sex"], crop.meta["dx"]) == (74, "F", "AF;LBBB")
    text = str(crop.meta)
    assert "Jane" not in text and "1950" not in text and "MRN-7" not in text and "ACC-9" not in text


def test_comment_formats_of_physionet_sources():
    assert parse_comments(["69 M 1085 1629 x1", "Aldomet, Inderal"])["age"] == 69
    tagged = parse_comments(["<age>: 25  <sex>: M  <diagnoses>: (none)  <medications>: (none)"])
    assert (tagged["age"], tagged["sex"], tagged["dx"]) == (25, "M", "")
    ptb = parse_comments(["age: 95", "ECG date: 01/10/1990", "Reason for admission: Myocardial infarction",
                          "Catheterization date: 16-Oct-90", "Smoker: n/a"])  # fmt: skip
    assert ptb["age"] == 90  # ages over 89 are aggregated (HIPAA Safe Harbor)
    assert ptb["report"] == "Reason for admission: Myocardial infarction"


def test_dicom_waveform_is_read_in_millivolts_and_resampled(tmp_path):
    leads = list(CANONICAL_LEADS)
    signals_uv = np.rint(tones(10_000, 1000, leads) * 1000).astype(np.int16)
    path = write_ecg_dicom(tmp_path / "ecg.dcm", signals_uv, 1000, [f"Lead {n}" for n in leads],
                           PatientID="P1", AccessionNumber="A1", PatientAge="042Y", PatientSex="M")  # fmt: skip
    (crop,) = read_ecg(path, CFG)
    assert crop.array.shape == (12, 5000) and crop.meta["source_fs_hz"] == 1000.0
    assert (crop.raw_subject, crop.raw_study, crop.meta["age"], crop.meta["sex"]) == ("P1", "A1", 42, "M")
    std = np.array(json.loads(crop.meta["lead_std_mv"]), dtype=float)
    np.testing.assert_allclose(std, 1 / np.sqrt(2), rtol=0.05)  # 1 mV sine, uV -> mV applied
    assert dominant_hz(crop.array[4], 500) == pytest.approx(6, abs=0.15)


def test_sampling_rate_below_minimum_is_rejected(tmp_path):
    hea = write_wfdb(tmp_path, "slow", tones(500, 50, ["I"]), ["I"], 50)
    with pytest.raises(RejectedInput, match="sampling rate 50 Hz"):
        read_ecg(hea, CFG)


def test_broken_corpus_is_rejected_with_a_reason_never_a_crash(tmp_path):
    good = write_wfdb(tmp_path, "good", tones(5000, 500, ["I", "II"]), ["I", "II"], 500)
    cases: dict[str, tuple[Path, str]] = {}
    (tmp_path / "empty.hea").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.hea", "0 bytes")
    (tmp_path / "nodat.hea").write_text(good.read_text().replace("good", "nodat"))
    cases["missing dat"] = (tmp_path / "nodat.hea", "missing signal file nodat.dat")
    (tmp_path / "short.hea").write_text(good.read_text().replace("good", "short"))
    (tmp_path / "short.dat").write_bytes((tmp_path / "good.dat").read_bytes()[:7000])
    cases["length mismatch"] = (tmp_path / "short.hea", "mismatch")
    (tmp_path / "garbage.hea").write_bytes(np.random.default_rng(0).bytes(300))
    cases["garbage header"] = (tmp_path / "garbage.hea", "header")
    (tmp_path / "garbage.dcm").write_bytes(np.random.default_rng(1).bytes(3000))
    cases["garbage dicom"] = (tmp_path / "garbage.dcm", "not a DICOM")
    (tmp_path / "record.txt").write_text("I,II\n1,2\n")
    cases["wrong extension"] = (tmp_path / "record.txt", "not an ECG record")
    ecg_dcm = write_ecg_dicom(tmp_path / "ok.dcm", np.zeros((5000, 2), np.int16), 500, ["Lead I", "Lead II"])
    (tmp_path / "cut.dcm").write_bytes(ecg_dcm.read_bytes()[:-4000])
    cases["truncated dicom"] = (tmp_path / "cut.dcm", "")
    (tmp_path / "names.hea").write_text(good.read_text().replace("good", "names").replace(" I\n", " ECG1\n")
                                        .replace(" II\n", " ECG2\n"))  # fmt: skip
    (tmp_path / "names.dat").write_bytes((tmp_path / "good.dat").read_bytes())
    cases["no 12-lead names"] = (tmp_path / "names.hea", "no standard 12-lead")
    for name, (path, expected) in cases.items():
        with pytest.raises(RejectedInput) as info:
            read_ecg(path, CFG)
        assert expected in info.value.reason, (name, info.value.reason)


def test_normalisation_record_describes_shape_and_scheme():
    record = ecg_normalisation(EcgConfig())
    assert record["shape"] == [12, 5000] and record["leads"][3] == "aVR" and "z-score" in record["per_lead"]


def test_real_dicom_waveform_reads_12_leads_at_1000_hz_to_500(shared_data):
    (crop,) = read_ecg(shared_data / "dicom_samples" / "waveform_ecg.dcm", EcgConfig())
    assert crop.array.shape == (12, 5000) and crop.array.dtype == np.float16
    assert crop.meta["lead_mask"] == "1" * 12 and crop.meta["source_fs_hz"] == 1000.0
    assert "RITMO SINUSALE" in crop.meta["report"]


@pytest.mark.parametrize("record", ["HR06000", "E07500", "JS20000"])
def test_real_cinc2021_records_read_with_snomed_dx(shared_data, record):
    (crop,) = read_ecg(shared_data / "cinc2021_sample_ecg" / f"{record}.hea", EcgConfig())
    assert crop.array.shape == (12, 5000) and crop.meta["lead_mask"] == "1" * 12
    assert crop.meta["dx"] and all(code.isdigit() for code in crop.meta["dx"].split(";"))
    assert crop.meta["sex"] in ("M", "F") and isinstance(crop.meta["age"], int)


def test_real_mitbih_100_is_windowed_with_masked_leads(shared_data):
    crops = read_ecg(shared_data / "wfdb_python_sample_ecg" / "100.hea", EcgConfig(max_crops=3))
    assert len(crops) == 3 and crops[2].meta["crop_start_s"] == 20.0
    assert crops[0].meta["lead_mask"] == "000000000010"  # V5 only: MLII is a modified lead
    assert crops[0].meta["source_fs_hz"] == 360.0 and (crops[0].meta["age"], crops[0].meta["sex"]) == (
        69,
        "M",
    )


def test_real_ptb_15_leads_give_12_canonical(shared_data):
    crops = read_ecg(shared_data / "wfdb_python_sample_ecg" / "s0010_re.hea", EcgConfig())
    assert len(crops) == 3 and all(c.meta["lead_mask"] == "1" * 12 for c in crops)
    assert "Myocardial infarction" in crops[0].meta["report"] and "1990" not in str(crops[0].meta)


def test_label_maps_load_with_libyaml_as_with_the_pure_python_loader():
    from importlib import resources

    import yaml

    from pipelines.data import ecg

    maps = resources.files("pipelines.resources") / "label_maps"
    snomed = yaml.safe_load((maps / "ecg_snomed.yaml").read_text(encoding="utf-8"))
    scp = yaml.safe_load((maps / "ptbxl_scp.yaml").read_text(encoding="utf-8"))
    expected = frozenset(code.lower() for code in [*snomed["labels"], *scp["scp_to_snomed"]])
    ecg._known_dx_abbreviations.cache_clear()
    assert ecg._known_dx_abbreviations() == expected


def test_preprocessing_fills_the_label_map_cache_before_workers_fork():
    from pipelines.data import ecg, registry
    from pipelines.data.preprocessing import _import_reader

    ecg._known_dx_abbreviations.cache_clear()
    _import_reader(registry.get("ecg"), EcgConfig())
    assert ecg._known_dx_abbreviations.cache_info().currsize == 1


def _reference_crops(path: Path, cfg: EcgConfig) -> list[tuple[np.ndarray, list[float], str]]:
    """The crop chain spelled out with the signal functions, each computing its own statistics:
    place, derive, repair, resample, band-pass, then per crop flat-lead mask and z-score."""
    from pipelines.data import signal as sig

    record = wfdb.rdrecord(str(path.with_suffix("")), physical=True)
    leads, recorded = sig.place_leads(record.p_signal, record.sig_name)
    leads, present = sig.derive_limb_leads(leads, recorded)
    leads, present, _ = sig.repair_gaps(leads, present, float(record.fs), cfg.max_gap_s)
    columns = np.flatnonzero(present)
    filtered = sig.bandpass(
        sig.resample(leads[:, columns], float(record.fs), cfg.fs_hz), cfg.fs_hz, cfg.low_hz, cfg.high_hz
    )
    full = np.zeros((filtered.shape[0], len(CANONICAL_LEADS)), order="F")
    full[:, columns] = filtered
    window_n = round(cfg.duration_s * cfg.fs_hz)
    crops = []
    for start in sig.crop_starts(full.shape[0], window_n, cfg.window_policy, cfg.max_crops):
        crop = full[start : start + window_n]
        mask = present & ~sig.flat_leads(crop, cfg.flat_std_mv)
        normalised, _, std = sig.zscore_leads(crop, mask)
        array = sig.fit_length(normalised, window_n).T.astype(cfg.dtype)
        crops.append(
            (
                array,
                [None if np.isnan(v) else round(float(v), 5) for v in std],
                "".join("1" if m else "0" for m in mask),
            )
        )
    return crops


@pytest.mark.parametrize(
    ("leads", "fs_hz", "seconds"),
    [(list(CANONICAL_LEADS), 500.0, 25.0), (["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"], 360.0, 21.0)],
)
def test_crops_equal_the_chain_of_signal_functions_computed_step_by_step(tmp_path, leads, fs_hz, seconds):
    n = int(seconds * fs_hz)
    signals = tones(n, fs_hz, leads) + np.random.default_rng(7).normal(0, 0.05, (n, len(leads)))
    signals[:, leads.index("V3")] = 0.0  # an electrode off: flat, masked
    path = write_wfdb(tmp_path, "rec", signals, leads, fs_hz)
    cfg = EcgConfig(dtype="float16")
    decoded = read_ecg(path, cfg)
    expected = _reference_crops(path, cfg)
    assert len(decoded) == len(expected) > 1
    for sample, (array, std, mask) in zip(decoded, expected, strict=True):
        assert sample.array.tobytes() == array.tobytes()
        assert json.loads(sample.meta["lead_std_mv"]) == std and sample.meta["lead_mask"] == mask
