"""CPU time per utterance of the pretrained speech tower (Whisper tiny.en), on one core, against Whisper's 30 s window.

    .venv/bin/python scripts/speech_embedding_time.py [--fsdd ../shared/data/fsdd] [--batch 16]

Each figure is process CPU time (``time.process_time``) divided by utterances, with torch on one thread,
so it holds on a shared machine where wall time does not. Rows: the tower as configured for speech
(``whisper_input: longest``, 0.5 s of silence per utterance) on FSDD recordings and on synthetic 1 s and
3 s utterances; and the same encoder through ``WhisperEncoder.forward`` on the full 30 s window (what
``WhisperFeatureExtractor`` + transformers' Whisper cost a user), on the 3 s utterances.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from encoders.config import LoraSettings, TowerConfig
from encoders.towers import build_tower

SAMPLE_RATE_HZ = 16000


def cpu_seconds_per_utterance(encode, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    encode(*batches[0])  # warm-up: first-call allocations and kernel selection
    start = time.process_time()
    with torch.no_grad():
        for waveform, lengths in batches:
            encode(waveform, lengths)
    return (time.process_time() - start) / sum(len(lengths) for _, lengths in batches)


def batched(waves: list[torch.Tensor], batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i in range(0, len(waves), batch):
        group = waves[i : i + batch]
        lengths = torch.tensor([len(w) for w in group])
        padded = torch.zeros(len(group), int(lengths.max()))
        for row, wave in enumerate(group):
            padded[row, : len(wave)] = wave
        out.append((padded, lengths))
    return out


def fsdd_waves(root: Path, count: int) -> list[torch.Tensor]:
    import soundfile as sf
    import torchaudio

    waves = []
    for path in sorted((root / "recordings").glob("*.wav"))[:count]:
        audio, fs_hz = sf.read(path, dtype="float32")
        waves.append(torchaudio.functional.resample(torch.from_numpy(audio), fs_hz, SAMPLE_RATE_HZ))
    return waves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fsdd", type=Path, default=Path("../shared/data/fsdd"))
    parser.add_argument("--count", type=int, default=160, help="utterances per row")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = TowerConfig(
        kind="audio",
        pretrained="whisper-tiny.en",
        audio_arch="whisper",
        whisper_input="longest",
        max_source_positions=150,  # 3 s speech crop
        lora=LoraSettings(mode="frozen"),
    )
    tower = build_tower(config).eval()
    generator = torch.Generator().manual_seed(0)
    rows: dict[str, tuple] = {}
    if args.fsdd.is_dir():
        waves = fsdd_waves(args.fsdd, args.count)
        mean_s = sum(len(w) for w in waves) / len(waves) / SAMPLE_RATE_HZ
        rows[f"FSDD recordings (mean {mean_s:.2f} s), longest"] = (tower, waves)
    for seconds in (1, 3):
        waves = [0.1 * torch.randn(seconds * SAMPLE_RATE_HZ, generator=generator) for _ in range(args.count)]
        rows[f"synthetic {seconds} s, longest"] = (tower, waves)
    results = {}
    for name, (model, waves) in rows.items():
        results[name] = cpu_seconds_per_utterance(
            lambda w, n, model=model: model(w, lengths=n), batched(waves, args.batch)
        )
    # The peer: transformers' WhisperEncoder.forward on its 30 s window, features from the same front end.
    window = tower.log_mel
    encoder = tower.base_model
    three_s = [0.1 * torch.randn(3 * SAMPLE_RATE_HZ, generator=generator) for _ in range(args.count // 4)]
    results["synthetic 3 s, Whisper's 30 s window"] = cpu_seconds_per_utterance(
        lambda w, n: encoder(input_features=window(w, n, n_frames=3000)[0]).last_hidden_state,
        batched(three_s, args.batch // 4 or 1),
    )
    for name, seconds in results.items():
        print(f"{name:45s} {seconds:.4f} CPU s per utterance (1 thread)")


if __name__ == "__main__":
    main()
