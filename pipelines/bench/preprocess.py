"""``make bench-preprocess``: preprocessing files/s per modality against the floor of its own signal processing.

For each modality whose reader is installed and each set of files (``demo``: the demo cohort under
``root``, or a small one generated with the demo library when it is absent; ``shared``: the real
samples in ../shared/data when present; generated WAVs if speech has nothing else), it measures on
the same files, in the same run:

- the floor, on 1 core, in-process: decode **plus the processing the stage must do**, with the
  library calls alone (no hashing, sharding or bookkeeping):
  X-ray ``pydicom.dcmread().pixel_array`` + ``apply_modality_lut`` + ``apply_voi_lut`` + a Pillow
  resize of the longer side to ``size_px``; ECG ``wfdb.rdrecord`` + ``scipy.signal.resample_poly`` to
  500 Hz + zero-phase Butterworth band-pass (``sosfiltfilt``) + per-lead z-score; speech
  ``soundfile.read`` + ``resample_poly`` to 16 kHz + RMS silence trim + BS.1770 loudness gain (the
  faster of pyloudnorm and the project's ``loudness_lufs``, which must agree within 0.1 LU);
- the bare decode, for reference;
- the peer a user would pick instead, where installed: torchxrayvision's DICOM path
  (``read_xray_dcm`` + ``XRayCenterCrop`` + ``XRayResizer``) for X-ray;
- the stage: ``preprocess-<modality>`` with ``workers`` processes into an empty temporary folder
  (hashing, decoding, cleaning, normalising, sharding, manifests, rejections),

and prints files/s and the per-core ratio ``floor files/s / (stage files/s / workers)`` (target
<= 1.25), its CPU-time twin (stage CPU s per file / floor CPU s per file, robust to other processes on
a shared machine) and our per-core time as a ratio to the peer's. Each side is the best of ``passes``
(2) complete passes.
Usage: ``python -m pipelines.bench.preprocess [key=value ...]`` with ``workers``, ``max_files``,
``passes``, ``root``, ``sets`` (``demo,shared``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipelines.config import parse_overrides
from pipelines.data import registry
from pipelines.data.audio import SpeechConfig, loudness_lufs
from pipelines.data.ecg import EcgConfig
from pipelines.data.xray import XrayConfig

SHARED = Path(os.environ.get("SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
SHARED_FOLDERS = {
    "xray": ["dicom_samples"],
    "ecg": ["cinc2021_sample_ecg", "wfdb_python_sample_ecg"],
    "speech": ["fsdd/recordings"],
}
# Loudness implementations may stand in for each other only when they agree this closely (LU).
LOUDNESS_TOLERANCE_LU = 0.1


# --------------------------------------------------------------------------- floors (library calls alone)


def decode_only(modality: str, path: Path) -> None:
    """The bare decode call of each format."""
    if modality == "xray":
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            np.asarray(Image.open(path))
        else:
            import pydicom

            pydicom.dcmread(path).pixel_array  # noqa: B018 - decoding is the point
    elif modality == "ecg":
        _read_ecg(path)
    else:
        import soundfile as sf

        sf.read(path)


def _read_ecg(path: Path) -> tuple[np.ndarray, float]:
    if path.suffix.lower() == ".hea":
        import wfdb

        record = wfdb.rdrecord(str(path.with_suffix("")))
        return record.p_signal, float(record.fs)
    import pydicom

    dataset = pydicom.dcmread(path)
    return dataset.waveform_array(0), float(dataset.WaveformSequence[0].SamplingFrequency)


def xray_floor(path: Path, cfg: XrayConfig) -> np.ndarray:
    """Decode, modality LUT (rescale), VOI LUT (window), resize the longer side to ``size_px``."""
    from PIL import Image

    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        image = Image.open(path).convert("L")
    else:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut

        dataset = pydicom.dcmread(path)
        pixels = apply_modality_lut(dataset.pixel_array, dataset)
        if cfg.apply_voi:
            with warnings.catch_warnings():  # "VOI LUT on a float input": the rescaled values are exact
                warnings.simplefilter("ignore", UserWarning)
                pixels = apply_voi_lut(pixels, dataset)
        image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32))
    scale = cfg.size_px / max(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR))


@functools.lru_cache(maxsize=8)
def _band_pass_sos(order: int, low_hz: float, high_hz: float, fs_hz: float) -> np.ndarray:
    from scipy import signal

    return signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=fs_hz, output="sos")


def _resample_poly(x: np.ndarray, fs_in_hz: float, fs_out_hz: float) -> np.ndarray:
    from fractions import Fraction

    from scipy import signal

    if fs_in_hz == fs_out_hz:
        return x
    ratio = Fraction(int(round(fs_out_hz)), int(round(fs_in_hz)))
    return signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=0)


def ecg_floor(path: Path, cfg: EcgConfig) -> np.ndarray:
    """Decode, resample to ``fs_hz``, zero-phase band-pass (filtfilt of a Butterworth), z-score per lead."""
    from scipy import signal

    leads, fs_hz = _read_ecg(path)
    leads = _resample_poly(np.nan_to_num(leads), fs_hz, cfg.fs_hz)
    sos = _band_pass_sos(cfg.filter_order, cfg.low_hz or 0.5, cfg.high_hz or 40.0, float(cfg.fs_hz))
    leads = signal.sosfiltfilt(sos, leads, axis=0)
    return (leads - leads.mean(axis=0)) / np.maximum(leads.std(axis=0), 1e-6)


def _pyloudnorm_lufs(audio: np.ndarray, fs_hz: int) -> float:
    """pyloudnorm measuring what BS.1770-4 defines, as ``loudness_lufs`` does.

    ``filter_class="DeMan"`` is its K-weighting from the standard's analogue prototypes (the default,
    RBJ shelf at 1500 Hz, reads 0.1-0.3 LU low at 8-16 kHz); the audio is cut to whole 400 ms blocks
    because pyloudnorm rounds the block count and measures a partial last block as if it were a full
    one (0.3-1.2 LU low on FSDD clips), which the standard excludes; a clip shorter than one block is
    one block over its length (pyloudnorm refuses it at the standard block size).
    """
    import pyloudnorm

    audio = np.asarray(audio, dtype=np.float64)
    block = int(round(0.4 * fs_hz))
    if audio.size < block:
        meter = pyloudnorm.Meter(fs_hz, filter_class="DeMan", block_size=audio.size / fs_hz)
        return float(meter.integrated_loudness(audio))
    whole = block + (audio.size - block) // (block // 4) * (block // 4)
    return float(pyloudnorm.Meter(fs_hz, filter_class="DeMan").integrated_loudness(audio[:whole]))


def _trim(audio: np.ndarray, fs_hz: int, cfg: SpeechConfig) -> np.ndarray:
    """RMS trim as librosa.effects.trim does it: frames more than top_db below the loudest are silence."""
    frame = max(1, int(round(cfg.trim_frame_s * fs_hz)))
    hop = max(1, frame // 2)
    if audio.size <= frame:
        return audio
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop]
    power = np.mean(np.square(frames, dtype=np.float64), axis=1)
    loud = np.flatnonzero(power > power.max() * 10 ** (-cfg.trim_top_db / 10))
    keep = int(round(cfg.trim_keep_s * fs_hz))
    return audio[max(0, loud[0] * hop - keep) : min(audio.size, loud[-1] * hop + frame + keep)]


def speech_floor(path: Path, cfg: SpeechConfig, lufs: Callable[[np.ndarray, int], float]) -> np.ndarray:
    """Decode, downmix, resample to ``fs_hz``, trim silence, gain to the BS.1770 loudness target."""
    import soundfile as sf

    audio, fs_hz = sf.read(path, dtype="float32", always_2d=True)
    audio = _resample_poly(audio.mean(axis=1), fs_hz, cfg.fs_hz)
    audio = _trim(audio, cfg.fs_hz, cfg)
    measured = lufs(audio, cfg.fs_hz)
    return audio * 10 ** ((cfg.target_lufs - measured) / 20) if math.isfinite(measured) else audio


def choose_loudness(paths: list[Path], cfg: SpeechConfig) -> tuple[str, Callable, float, dict[str, float]]:
    """The faster of pyloudnorm and ``loudness_lufs`` on these files, if they agree within 0.1 LU.

    Returns (name, function, largest disagreement in LU, seconds per implementation).
    """
    import soundfile as sf

    signals = []
    for path in paths[:50]:
        with contextlib.suppress(Exception):
            audio, fs_hz = sf.read(path, dtype="float32", always_2d=True)
            signals.append(_trim(_resample_poly(audio.mean(axis=1), fs_hz, cfg.fs_hz), cfg.fs_hz, cfg))
    candidates = {"project loudness_lufs": loudness_lufs}
    try:
        import pyloudnorm  # noqa: F401

        candidates["pyloudnorm"] = _pyloudnorm_lufs
    except ImportError:
        pass
    values: dict[str, list[float]] = {name: [] for name in candidates}
    seconds: dict[str, float] = {}
    for name, function in candidates.items():
        start = time.process_time()
        for audio in signals:
            try:
                values[name].append(float(function(audio, cfg.fs_hz)))
            except ValueError:
                values[name].append(float("nan"))
        seconds[name] = time.process_time() - start
    disagreement = 0.0
    if "pyloudnorm" in values:
        pairs = [
            abs(a - b)
            for a, b in zip(values["pyloudnorm"], values["project loudness_lufs"], strict=True)
            if math.isfinite(a) and math.isfinite(b)
        ]
        disagreement = max(pairs, default=0.0)
        if disagreement <= LOUDNESS_TOLERANCE_LU and seconds["pyloudnorm"] < seconds["project loudness_lufs"]:
            return "pyloudnorm", _pyloudnorm_lufs, disagreement, seconds
    return "project loudness_lufs", loudness_lufs, disagreement, seconds


def xrv_peer(path: Path) -> np.ndarray:
    """torchxrayvision's DICOM path: read_xray_dcm (-1024..1024) + XRayCenterCrop + XRayResizer(224)."""
    import torchxrayvision as xrv

    image = xrv.utils.read_xray_dcm(path)[None]
    image = xrv.datasets.XRayCenterCrop()(image)
    return xrv.datasets.XRayResizer(XrayConfig().size_px)(image)


# --------------------------------------------------------------------------- timing


class _Clock:
    """Wall seconds and CPU seconds (this process and its finished children, e.g. the stage's workers)."""

    def __enter__(self) -> _Clock:
        self._wall, self._cpu = time.perf_counter(), self._cpu_now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = self._cpu_now() - self._cpu

    @staticmethod
    def _cpu_now() -> float:
        children = os.times()  # clock ticks (10 ms): fine for workers, too coarse for the floor
        return time.process_time() + children.children_user + children.children_system


@contextlib.contextmanager
def _one_core():
    """Floors and peers run on one core: torch (if a library uses it) gets one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _time_each(fn: Callable[[Path], object], paths: list[Path]) -> tuple[_Clock, int]:
    done = 0
    with _one_core(), _Clock() as clock:
        for path in paths:
            try:
                fn(path)
                done += 1
            except Exception:  # noqa: BLE001 - a floor times what decodes; the stage rejects the rest
                pass
    return clock, done


def _generated_speech(folder: Path, n: int) -> None:
    import soundfile as sf

    (folder / "speech").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        fs = 8000 if i % 2 else 16000
        t = np.arange(int(rng.uniform(0.5, 2.0) * fs)) / fs
        wave = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + rng.normal(0, 0.01, t.size)
        sf.write(folder / "speech" / f"gen{i:04d}.wav", wave.astype(np.float32), fs, subtype="PCM_16")


def generate_demo(root: Path, n_subjects: int = 24, n_utterances: int = 40, seed: int = 1234) -> Path:
    """A small demo cohort from the demo library (same generator as ``make demo-data``, fewer subjects)."""
    from pipelines.demo import cohort, speech, writers

    studies = cohort.plan_cohort(seed, n_subjects, 0.4, 0.1)
    utterances = speech.plan_utterances(seed, n_utterances, 4) if speech.espeak_available() else []
    for _ in writers.run_jobs(writers.file_jobs(root, studies, utterances, seed, 320), 1):
        pass
    return root


def _collect(modality: str, work: Path, folders: list[Path], max_files: int) -> Path:
    """Link the benchmark's files of one modality from ``folders`` under ``work/<modality>/``; return ``work``."""
    target = work / modality
    target.mkdir(parents=True)
    count = 0
    for index, folder in enumerate(folders):
        if not folder.is_dir():
            continue
        link = target / f"{index}-{folder.name}"
        link.symlink_to(folder.resolve(), target_is_directory=True)
        count += len(registry.get(modality).list_items(work))
    if modality == "speech" and count == 0:
        _generated_speech(work, 200)
    items = registry.get(modality).list_items(work)
    if len(items) > max_files:
        # keep the benchmark short: a deterministic subset
        keep = {item.rel for item in items[:: max(1, len(items) // max_files)][:max_files]}
        trimmed = work.parent / f"{work.name}-subset"
        for item in items:
            if item.rel in keep:
                for member in item.members:
                    dest = trimmed / member.relative_to(work)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if not dest.exists():
                        dest.symlink_to(member.resolve())
        return trimmed
    return work


def _time_stage(modality: str, root: Path, out: Path, workers: int) -> _Clock:
    """Time of one complete ``preprocess-<modality>`` run into the empty folder ``out``."""
    from pipelines.data.preprocessing import PreprocessConfig, process_modality

    cfg = PreprocessConfig(
        dataset=f"bench-{modality}",
        root=str(root),
        out=str(out / "processed"),
        cards_dir=str(out / "cards"),
        workers=workers,
        progress=False,
        hash_paths=False,  # the benchmark's own files: plain paths tell which inputs the stage kept
    )
    with _Clock() as clock:
        process_modality(cfg, modality)  # what preprocess-<modality> runs; its workers are joined on return
    return clock


def _floor_function(modality: str, paths: list[Path]) -> tuple[Callable[[Path], object], str]:
    if modality == "xray":
        cfg = XrayConfig()
        return functools.partial(xray_floor, cfg=cfg), f"dcmread + modality/VOI LUT + resize to {cfg.size_px}"
    if modality == "ecg":
        cfg = EcgConfig()
        return (
            functools.partial(ecg_floor, cfg=cfg),
            f"rdrecord + resample to {cfg.fs_hz} Hz + sosfiltfilt band-pass + z-score",
        )
    cfg = SpeechConfig()
    name, lufs, disagreement, seconds = choose_loudness(paths, cfg)
    timing = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in seconds.items())
    note = (
        f"sf.read + resample to {cfg.fs_hz} Hz + trim + {name} gain "
        f"(on {min(50, len(paths))} files: {timing}; largest disagreement {disagreement:.3f} LU)"
    )
    return functools.partial(speech_floor, cfg=cfg, lufs=lufs), note


def _accepted(out: Path, modality: str) -> set[str]:
    """Relative paths of the inputs a stage run kept (its manifest's sources)."""
    import pandas as pd

    manifest = out / "processed" / modality / "manifest.csv"
    return set(pd.read_csv(manifest)["source"].astype(str)) if manifest.is_file() else set()


def bench_modality(
    modality: str, workers: int, folders: list[Path], max_files: int, passes: int = 2
) -> dict[str, float] | None:
    """Stage, floor, bare decode and peer on one modality's files from ``folders``.

    The floor and the peer process the inputs the stage kept (a rejected lateral view or a non-chest
    DICOM is no work the stage must do in full); the ratios compare totals: the stage's core-seconds
    for all its inputs over the floor's seconds for the kept ones.
    """
    with tempfile.TemporaryDirectory(prefix=f"bench-{modality}-") as tmp:
        root = _collect(modality, Path(tmp) / "raw", folders, max_files)
        items = registry.get(modality).list_items(root)
        if not items:
            return None
        # Every stage pass starts from an empty output folder, so each one does all the work.
        stages = [_time_stage(modality, root, Path(tmp) / f"run{i}", workers) for i in range(passes)]
        kept = _accepted(Path(tmp) / "run0", modality)
        paths = [item.path for item in items if item.rel in kept]
        if not paths:
            return None
        floor_fn, floor_note = _floor_function(modality, paths)
        floors = [_time_each(floor_fn, paths) for _ in range(passes)]
        decodes = [_time_each(functools.partial(decode_only, modality), paths) for _ in range(passes)]
        peers = []
        if modality == "xray" and _installed("torchxrayvision"):
            dicoms = [p for p in paths if p.suffix.lower() not in (".png", ".jpg", ".jpeg")]
            peers = [_time_each(xrv_peer, dicoms) for _ in range(passes)] if dicoms else []
    floor, n_floor = min(floors, key=lambda pair: pair[0].wall_s)
    decode, n_decode = min(decodes, key=lambda pair: pair[0].wall_s)
    stage = min(stages, key=lambda clock: clock.wall_s)
    stage_cpu = min(c.cpu_s for c in stages)
    result = {
        "files": len(items),
        "kept": len(paths),
        "floor_files": n_floor,
        "floor": floor_note,
        "floor_files_per_s": n_floor / floor.wall_s,
        "decode_files_per_s": n_decode / decode.wall_s,
        "stage_files_per_s": len(items) / stage.wall_s,
        # Core-seconds of the whole stage over the floor's seconds (1 core) for the same work.
        "per_core_ratio": stage.wall_s * workers / floor.wall_s,
        # CPU seconds, stage (parent + workers) over floor: what the ratio would be with the workers
        # never idle and no other process on the cores; stable where the wall-clock ratio is not.
        "cpu_ratio": stage_cpu / min(c.cpu_s for c, _ in floors),
    }
    if peers:
        peer, n_peer = min(peers, key=lambda pair: pair[0].wall_s)
        result["peer_files_per_s"] = n_peer / peer.wall_s
        # Our per-core seconds per kept file over the peer's (< 1: we are faster).
        result["peer_ratio"] = (stage.wall_s * workers / len(paths)) / (peer.wall_s / n_peer)
        result["peer_cpu_ratio"] = (stage_cpu / len(paths)) / (min(c.cpu_s for c, _ in peers) / n_peer)
    return result


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def file_sets(names: list[str], demo_root: Path, scratch: Path) -> dict[str, dict[str, list[Path]]]:
    """Folders per set and modality: the demo cohort (generated small when absent) and the shared samples."""
    sets: dict[str, dict[str, list[Path]]] = {}
    if "demo" in names:
        if not any((demo_root / m).is_dir() for m in SHARED_FOLDERS):
            print(f"{demo_root} has no cohort: generating a small one (24 subjects, 40 utterances)")
            demo_root = generate_demo(scratch / "demo")
        sets["demo"] = {m: [demo_root / m] for m in SHARED_FOLDERS}
    if "shared" in names and SHARED.is_dir():
        sets["shared"] = {m: [SHARED / f for f in folders] for m, folders in SHARED_FOLDERS.items()}
    return sets


def main(argv: list[str] | None = None) -> int:
    options = parse_overrides(list(sys.argv[1:] if argv is None else argv))
    workers = int(options.get("workers", 2))
    max_files = int(options.get("max_files", 300))
    passes = max(1, int(options.get("passes", 2)))
    demo_root = Path(str(options.get("root", "data/raw/demo")))
    names = str(options.get("sets", "demo,shared")).replace("[", "").replace("]", "").split(",")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-sets-") as scratch:
        for set_name, folders in file_sets([n.strip() for n in names], demo_root, Path(scratch)).items():
            for modality in ("xray", "ecg", "speech"):
                if not registry.reader_available(modality):
                    print(f"{modality}: reader not installed, skipped")
                    continue
                result = bench_modality(modality, workers, folders[modality], max_files, passes)
                if result is None:
                    print(f"{set_name}/{modality}: no files, skipped")
                    continue
                results[(set_name, modality)] = result
    print(
        f"\npreprocessing ({workers} workers) vs the floor: decode + required processing, library calls "
        f"only, 1 core, same files, same run; best of {passes} passes each"
    )
    print(
        f"{'set':<7} {'modality':<8} {'files':>6} {'kept':>5} {'stage f/s':>10} {'floor f/s':>10} {'decode f/s':>11} "
        f"{'per-core ratio':>15} {'cpu ratio':>10} {'xrv f/s':>8} {'vs xrv':>7} {'vs xrv cpu':>11}"
    )
    for (set_name, modality), r in results.items():
        peer = (
            f"{r['peer_files_per_s']:>8.1f} {r['peer_ratio']:>6.2f}x {r['peer_cpu_ratio']:>10.2f}x"
            if "peer_ratio" in r
            else f"{'-':>8} {'-':>7} {'-':>11}"
        )
        print(
            f"{set_name:<7} {modality:<8} {r['files']:>6} {r['kept']:>5} {r['stage_files_per_s']:>10.1f} "
            f"{r['floor_files_per_s']:>10.1f} {r['decode_files_per_s']:>11.1f} {r['per_core_ratio']:>14.2f}x "
            f"{r['cpu_ratio']:>9.2f}x {peer}"
        )
    print("floors:")
    for modality in ("xray", "ecg", "speech"):
        notes = {r["floor"] for (_, m), r in results.items() if m == modality}
        for note in sorted(notes):
            print(f"  {modality}: {note}")
    print(
        "per-core ratio = stage wall s x workers (all inputs) / floor s (1 core, the inputs the stage kept); "
        "target <= 1.25"
    )
    print(
        "cpu ratio = stage CPU s (parent + workers, all inputs) / floor CPU s (kept inputs): the same without "
        "idle workers or other processes competing for the cores"
    )
    print("vs xrv = our per-core s per file / torchxrayvision's (read_xray_dcm + crop + resize), 1 core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
