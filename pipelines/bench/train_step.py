"""Benchmark one training step of the default towers, and CWCL against CLIP loss time.

``make bench-train-step [ARGS="batch_sizes=8,32 task=speech precision=bf16"]``

Part 1: samples/s and memory of a full optimiser step (encode every view, frozen text reference
features, pairwise CWCL, backward, AdamW, logit-scale clamp) of ``default_more_config()`` (or the
speech config) on synthetic inputs of the real shapes, at a few batch sizes. Memory is the growth of
the process's peak resident set (``ru_maxrss``) over the loaded model, so read it as an upper bound
per batch size (batch sizes run in increasing order).

Part 2: forward + backward time of the loss alone at large batches: ``clip_loss``, ``cwcl_loss``
(both directions from one logits matmul), a naive symmetric CWCL (two logits and two weight
matmuls) and open_clip's ``ClipLoss`` when installed, all timed in the same run; the table prints
the ratios to CLIP. Timings are medians of ``repeats`` after one warm-up.
"""

from __future__ import annotations

import dataclasses
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from encoders import (
    ContrastiveObjective,
    MultimodalModel,
    PairSpec,
    clip_loss,
    cwcl_loss,
    default_more_config,
    default_speech_config,
)


@dataclasses.dataclass
class Config:
    task: Literal["more", "speech"] = dataclasses.field(
        default="more", metadata={"help": "which default towers"}
    )
    batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [4, 16, 32])
    loss_batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [256, 1024, 4096])
    embed_dim: int = 256
    reference_dim: int = dataclasses.field(default=384, metadata={"help": "MiniLM width (CWCL reference)"})
    repeats: int = 3
    precision: Literal["fp32", "bf16"] = dataclasses.field(
        default="fp32", metadata={"help": "bf16 = CPU autocast"}
    )
    speech_s: float = 2.0
    threads: int | None = None
    seed: int = 0


def _rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, lazy init, oneDNN kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


_WORDS = [
    "no",
    "acute",
    "cardiopulmonary",
    "process",
    "heart",
    "size",
    "normal",
    "small",
    "left",
    "pleural",
    "effusion",
    "with",
    "basilar",
    "atelectasis",
    "sinus",
    "rhythm",
    "left",
    "bundle",
    "branch",
    "block",
    "atrial",
    "fibrillation",
    "rate",
    "controlled",
]


def _reports(n: int, generator: torch.Generator) -> list[str]:
    lengths = torch.randint(8, 30, (n,), generator=generator).tolist()
    return [
        " ".join(_WORDS[i] for i in torch.randint(len(_WORDS), (k,), generator=generator).tolist())
        for k in lengths
    ]


def _views(task: str) -> tuple[dict[str, str], list[PairSpec]]:
    if task == "more":
        views = {"xray": "image", "ecg": "ecg", "radiology_report": "text", "cardiology_report": "text"}
        pairs = [
            PairSpec("xray", "radiology_report", "radiology_report"),
            PairSpec("ecg", "cardiology_report", "cardiology_report"),
            PairSpec("xray", "ecg", None, 0.5),
        ]
    else:
        views = {"speech": "audio", "transcript": "text"}
        pairs = [PairSpec("speech", "transcript", "transcript")]
    return views, pairs


def _batch(
    cfg: Config, model: MultimodalModel, views: dict[str, str], n: int, generator: torch.Generator
) -> dict:
    batch = {}
    for view, tower in views.items():
        tc = model.config.towers[tower]
        if tower == "image":
            batch[view] = torch.rand(n, 1, tc.image_size_px, tc.image_size_px, generator=generator)
        elif tower == "ecg":
            batch[view] = torch.randn(n, tc.n_leads, tc.max_len, generator=generator)
            batch[f"{view}_lead_mask"] = torch.rand(n, tc.n_leads, generator=generator) > 0.05
        elif tower == "audio":
            batch[view] = torch.randn(n, int(cfg.speech_s * 16000), generator=generator)
        else:
            batch[view] = _reports(n, generator)
    return batch


def bench_train_step(cfg: Config) -> list[dict]:
    config = default_more_config() if cfg.task == "more" else default_speech_config()
    config.embed_dim = cfg.embed_dim
    model = MultimodalModel(config).train()
    views, pairs = _views(cfg.task)
    objective = ContrastiveObjective(pairs, kind="cwcl")
    optimizer = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4)
    generator = torch.Generator().manual_seed(cfg.seed)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    rows = []
    for n in sorted(cfg.batch_sizes):
        batch = _batch(cfg, model, views, n, generator)
        present = {view: torch.ones(n, dtype=torch.bool) for view in views}

        def step(batch: dict = batch, present: dict = present) -> None:
            with autocast:
                features = {
                    view: model.encode(tower, batch[view], lead_mask=batch.get(f"{view}_lead_mask"))
                    for view, tower in views.items()
                }
                reference = {
                    p.weights_from: model.reference_text_features(batch[p.weights_from])
                    for p in pairs
                    if p.weights_from
                }
                loss, _ = objective(features, present, model.logit_scale, reference)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.clamp_logit_scale()

        rss_before = _rss_mib()
        seconds = _median_time(step, cfg.repeats)
        rows.append(
            {
                "batch": n,
                "step_s": seconds,
                "samples_per_s": n / seconds,
                "peak_rss_mib": _rss_mib(),
                "rss_growth_mib": _rss_mib() - rss_before,
            }
        )
    return rows


def _naive_symmetric_cwcl(a, b, log_scale, reference):
    """Two logits matmuls and two weight matmuls: the straightforward symmetric CWCL, for comparison."""
    r = F.normalize(reference, dim=-1)
    w_ab = (1 + r @ r.T) / 2
    w_ba = (1 + r @ r.T) / 2
    a2b = -(w_ab / w_ab.sum(1, keepdim=True) * F.log_softmax(log_scale.exp() * a @ b.T, dim=1)).sum(1).mean()
    b2a = -(w_ba / w_ba.sum(1, keepdim=True) * F.log_softmax(log_scale.exp() * b @ a.T, dim=1)).sum(1).mean()
    return (a2b + b2a) / 2


def bench_losses(cfg: Config) -> list[dict]:
    try:
        from open_clip.loss import ClipLoss
    except ImportError:
        ClipLoss = None  # noqa: N806
    generator = torch.Generator().manual_seed(cfg.seed)
    rows = []
    for n in cfg.loss_batch_sizes:
        a = F.normalize(torch.randn(n, cfg.embed_dim, generator=generator), dim=-1).requires_grad_(True)
        b = F.normalize(torch.randn(n, cfg.embed_dim, generator=generator), dim=-1).requires_grad_(True)
        reference = torch.randn(n, cfg.reference_dim, generator=generator)
        log_scale = torch.tensor(2.659, requires_grad=True)
        losses: dict[str, Callable[[], torch.Tensor]] = {
            "clip": lambda a=a, b=b, s=log_scale: clip_loss(a, b, s),
            "cwcl": lambda a=a, b=b, s=log_scale, r=reference: cwcl_loss(a, b, s, r),
            "cwcl_chunk1024": lambda a=a, b=b, s=log_scale, r=reference: cwcl_loss(
                a, b, s, r, chunk_size=1024
            ),
            "cwcl_naive": lambda a=a, b=b, s=log_scale, r=reference: _naive_symmetric_cwcl(a, b, s, r),
        }
        if ClipLoss is not None:
            open_clip_loss = ClipLoss()
            losses["open_clip"] = lambda a=a, b=b, s=log_scale, f=open_clip_loss: f(a, b, s.exp())
        row = {"batch": n}
        for name, fn in losses.items():
            row[name] = _median_time(lambda fn=fn: fn().backward(), cfg.repeats)
        rows.append(row)
    return rows


def run(cfg: Config) -> int:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, precision {cfg.precision}, task {cfg.task}"
    )
    steps = bench_train_step(cfg)
    print(f"\nTraining step of default_{cfg.task}_config() (encode all views + CWCL + backward + AdamW)")
    print(f"{'batch':>6} {'step s':>9} {'samples/s':>10} {'peak RSS MiB':>13} {'RSS growth MiB':>15}")
    for r in steps:
        print(
            f"{r['batch']:>6} {r['step_s']:>9.3f} {r['samples_per_s']:>10.1f} {r['peak_rss_mib']:>13.0f} "
            f"{r['rss_growth_mib']:>15.0f}"
        )
    losses = bench_losses(cfg)
    names = [k for k in losses[0] if k != "batch"]
    print(
        f"\nLoss forward+backward, D={cfg.embed_dim}, reference R={cfg.reference_dim} (ms; ratio to clip_loss)"
    )
    print(f"{'batch':>6} " + " ".join(f"{n:>22}" for n in names))
    for r in losses:
        cells = [f"{r[n] * 1e3:>12.1f} ({r[n] / r['clip']:>5.2f}x)" for n in names]
        print(f"{r['batch']:>6} " + " ".join(f"{c:>22}" for c in cells))
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines.config import load_config

    return run(load_config(Config, None, list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
