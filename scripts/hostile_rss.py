"""Peak RSS of each reader on files whose headers lie about their size, one fresh process per file.

    python scripts/hostile_rss.py --work /tmp/hostile_rss [--repo PATH] [--real-wav]

Writes the hostile inputs under ``--work`` (sparse where possible: the declared bytes exist but
occupy no disk), then for each one starts ``python -c`` with ``--repo`` first on ``sys.path`` (point it
at a checkout of an older commit to measure "before"), calls the modality's reader with its default
config and prints the outcome and ``ru_maxrss`` after the imports and after the read. ``--real-wav``
also writes a real 4-hour 16 kHz mono recording (about 460 MB, a tone in noise).
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

_CHILD = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import importlib
module, function, config = sys.argv[2].split(":")
reader_module = importlib.import_module(module)
from pipelines.errors import RejectedInput
cfg = getattr(reader_module, config)()
imports_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    samples = getattr(reader_module, function)(Path(sys.argv[3]), cfg)
    outcome = f"decoded {len(samples)} sample(s)"
except RejectedInput as err:
    outcome = f"rejected [{err.stage}]: {err.reason}"
except Exception as err:
    outcome = f"crashed: {type(err).__name__}: {str(err)[:160]}"
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "imports_mb": imports_kb / 1024, "peak_mb": peak_kb / 1024}))
"""

# The measuring loop runs in its own small process: Linux carries a process's RSS high-water mark
# across fork and exec, so children forked from this script (which has built 72 MB images) would
# report the script's RSS as theirs.
_MEASURE = r"""
import json, subprocess, sys
child, repo, timeout_s, inputs = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
for label, reader, path in inputs:
    try:
        done = subprocess.run([sys.executable, "-c", child, repo, reader, path], capture_output=True, text=True,
                              timeout=timeout_s)
        line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        result = json.loads(line) if line.startswith("{") else {"outcome": f"exit {done.returncode}: "
                                                                           + done.stderr.strip()[-200:]}
    except subprocess.TimeoutExpired:
        result = {"outcome": f"timed out after {timeout_s:g} s"}
    peak = (f"{result['peak_mb']:7.0f} MB (after imports {result['imports_mb']:.0f} MB)"
            if "peak_mb" in result else "    n/a")
    print(f"{label:40s} peak RSS {peak}  {result['outcome'][:220]}", flush=True)
"""

READERS = {
    "speech": "pipelines.data.audio:read_speech:SpeechConfig",
    "ecg": "pipelines.data.ecg:read_ecg:EcgConfig",
    "xray": "pipelines.data.xray:read_xray:XrayConfig",
}


def sparse_wav(path: Path, frames: int, fs_hz: int, channels: int = 1) -> Path:
    """16-bit PCM WAV header declaring ``frames``; the data is a hole (zeros) on disk."""
    data_bytes = frames * channels * 2
    header = b"RIFF" + struct.pack("<I", min(36 + data_bytes, 0xFFFFFFFF)) + b"WAVE"
    header += b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, fs_hz, fs_hz * channels * 2, channels * 2, 16
    )
    header += b"data" + struct.pack("<I", data_bytes)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(len(header) + data_bytes)
    return path


def real_wav(path: Path, duration_s: float, fs_hz: int = 16000) -> Path:
    """A real recording (220 Hz tone in noise), written in one-minute blocks."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    block = 60 * fs_hz
    with sf.SoundFile(path, "w", samplerate=fs_hz, channels=1, subtype="PCM_16") as handle:
        for start in range(0, int(duration_s * fs_hz), block):
            t = (start + np.arange(block)) / fs_hz
            handle.write(
                (0.2 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(block)).astype(np.float32)
            )
    return path


def lying_wfdb(folder: Path, samples: int = 9_000_000_000, n_sig: int = 12) -> Path:
    """A 12-lead format-16 header declaring ``samples`` per lead, with 10 s of real data behind it."""
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"][:n_sig]
    lines = [f"lying {n_sig} 500 {samples}"]
    lines += [f"lying.dat 16 1000/mV 16 0 0 0 0 {lead}" for lead in leads]
    (folder / "lying.hea").write_text("\n".join(lines) + "\n")
    t = np.arange(5000) / 500
    data = np.stack([np.rint(1000 * np.sin(2 * np.pi * 3 * t))] * n_sig, axis=1).astype("<i2")
    (folder / "lying.dat").write_bytes(data.tobytes())
    return folder / "lying.hea"


def lying_dicom(path: Path, side_px: int = 65535, rle: bool = False) -> Path:
    """A CR chest radiograph whose Rows/Columns claim ``side_px`` over 64 x 64 pixels of data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "CR", "PA", "CHEST"
    ds.set_pixel_data(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096, "MONOCHROME2", 12)
    if rle:
        ds.compress(RLELossless)
    ds.Rows = ds.Columns = side_px
    ds.save_as(path, enforce_file_format=True)
    return path


def long_wfdb(folder: Path, duration_s: float = 3600.0, fs_hz: int = 500) -> Path:
    """An honest 12-lead format-16 record of ``duration_s`` (a Holter hour): valid, only partly decoded."""
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    n = int(duration_s * fs_hz)
    lines = [f"holter 12 {fs_hz} {n}"] + [f"holter.dat 16 1000/mV 16 0 0 0 0 {lead}" for lead in leads]
    (folder / "holter.hea").write_text("\n".join(lines) + "\n")
    t = np.arange(n) / fs_hz
    beat = np.rint(1000 * np.sin(2 * np.pi * 1.2 * t)).astype("<i2")
    (folder / "holter.dat").write_bytes(np.repeat(beat[:, None], 12, axis=1).tobytes())
    return folder / "holter.hea"


def large_dicom(path: Path, side_px: int = 6000) -> Path:
    """A real ``side_px``-square 12-bit CR chest radiograph: the largest size the default config decodes."""
    path = lying_dicom(path, side_px=64)
    import pydicom

    ds = pydicom.dcmread(path)
    ramp = (np.arange(side_px, dtype=np.uint32)[:, None] + np.arange(side_px, dtype=np.uint32)) % 4096
    ds.set_pixel_data(ramp.astype(np.uint16), "MONOCHROME2", 12)
    ds.save_as(path, enforce_file_format=True)
    return path


def lying_ecg_dicom(path: Path, samples: int = 4_000_000_000) -> Path:
    """A 12-lead ECG DICOM whose rhythm group declares ``samples`` over 10 s of data."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import pydicom

    from tests.pipelines.data.test_ecg import write_ecg_dicom

    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    write_ecg_dicom(path, np.zeros((5000, 12), np.int16), 500, [f"Lead {n}" for n in leads])
    ds = pydicom.dcmread(path)
    ds.WaveformSequence[0].NumberOfWaveformSamples = samples
    ds.save_as(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/hostile_rss"))
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--real-wav", action="store_true", help="also a real 4 h WAV (~460 MB in --work)")
    parser.add_argument("--at-limit", action="store_true", help="also valid inputs at the default limits")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    inputs: list[tuple[str, str, Path]] = []
    wav = args.work / "declares_4.4h.wav"
    if not wav.exists():
        sparse_wav(wav, int(4.4 * 3600 * 16000), 16000)
    inputs.append(("WAV header declaring 4.4 h (sparse)", "speech", wav))
    if args.real_wav:
        real = args.work / "real_4h.wav"
        if not real.exists():
            real_wav(real, 4 * 3600)
        inputs.append(("real 4 h 16 kHz mono WAV", "speech", real))
    inputs.append(("WFDB header declaring 9e9 samples x 12", "ecg", lying_wfdb(args.work)))
    inputs.append(
        ("ECG DICOM declaring 4e9 samples x 12", "ecg", lying_ecg_dicom(args.work / "lying_ecg.dcm"))
    )
    inputs.append(("DICOM claiming 65535 x 65535 (raw)", "xray", lying_dicom(args.work / "huge_raw.dcm")))
    inputs.append(
        ("DICOM claiming 65535 x 65535 (RLE)", "xray", lying_dicom(args.work / "huge_rle.dcm", rle=True))
    )
    if args.at_limit:
        stereo = args.work / "stereo_60s_48k.wav"
        if not stereo.exists():
            import soundfile as sf

            t = np.arange(60 * 48000) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
            sf.write(stereo, np.stack([tone, tone], axis=1), 48000, subtype="PCM_16")
        inputs.append(("WAV 60 s 48 kHz stereo (at the limit)", "speech", stereo))
        mono96 = args.work / "mono_60s_96k.wav"
        if not mono96.exists():
            import soundfile as sf

            t = np.arange(60 * 96000) / 96000
            sf.write(mono96, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 96000, subtype="PCM_16")
        inputs.append(("WAV 60 s 96 kHz mono (at the limit)", "speech", mono96))
        inputs.append(("WFDB 1 h x 12 leads at 500 Hz (honest)", "ecg", long_wfdb(args.work)))
        inputs.append(("DICOM 6000 x 6000 real pixels", "xray", large_dicom(args.work / "large_6000.dcm")))
    print(f"repo: {args.repo}", flush=True)
    listed = [(label, READERS[modality], str(path)) for label, modality, path in inputs]
    subprocess.run(
        [sys.executable, "-c", _MEASURE, _CHILD, str(args.repo), str(args.timeout_s), json.dumps(listed)],
        check=True,
    )


if __name__ == "__main__":
    main()
