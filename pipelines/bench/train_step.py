"""Benchmark one training step, against open_clip at equal sizes, and the contrastive losses alone.

``make bench-train-step [ARGS="mode=open_clip batch=8 steps=3"]``; ``mode`` is ``all`` (default),
``towers``, ``open_clip`` or ``loss``. All ratios are measured in one run; on a shared machine read
the CPU-time columns next to the wall-clock ones.

towers: samples/s and memory of a full optimiser step (encode every view, frozen text reference
features, pairwise CWCL, backward, AdamW, logit-scale clamp) of ``default_more_config()`` (or the
speech config) on synthetic inputs of the real shapes, at a few batch sizes. Memory is the growth of
the process's peak resident set (``ru_maxrss``) over the loaded model, so read it as an upper bound
per batch size (batch sizes run in increasing order).

open_clip: our image and text towers built at open_clip's sizes (ViT 224/16 width 384, 6 layers;
text width 384, 6 layers, i.e. MiniLM-L6; embed 256) and open_clip's own ``CLIP`` of the same sizes,
each trained fully with AdamW and a symmetric CLIP loss on the same images and reports, in fp32 and
under bf16 autocast (fp32 master weights). Printed: samples/s, our/their ratio, FLOPs per step
(``torch.utils.flop_counter``) and the achieved GFLOP/s next to a 2048^2 GEMM measured in the same
run. bf16 is timed only where the CPU runs it natively (``avx512_bf16``/``amx_bf16``): emulated bf16
is hundreds of times slower and would only make the run wait (``bf16=force`` times it anyway).

loss: forward + backward time of the loss alone at large batches: ``clip_loss``, ``cwcl_loss``
(paper weights and weight power 8, unchunked and chunked), a naive symmetric CWCL (two logits and
two weight matmuls) and open_clip's ``ClipLoss`` when installed, all timed in the same run; the table
prints the ratios to open_clip's ``ClipLoss`` (or to ``clip_loss`` without open_clip). Timings are
medians of ``repeats`` after one warm-up.
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
from encoders.config import LoraSettings, MultimodalConfig, TowerConfig
from pipelines.training.config import OptimConfig
from pipelines.training.loop import build_optimizer, optimizer_name
from pipelines.training.precision import native_bf16_flags


@dataclasses.dataclass
class Config:
    mode: Literal["all", "towers", "open_clip", "loss"] = dataclasses.field(
        default="all", metadata={"help": "which benchmarks: all, towers, open_clip or loss"}
    )
    task: Literal["more", "speech"] = dataclasses.field(
        default="more", metadata={"help": "which default towers (mode towers)"}
    )
    batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [4, 16, 32])
    batch: int = dataclasses.field(default=8, metadata={"help": "batch of the open_clip comparison"})
    steps: int = dataclasses.field(default=3, metadata={"help": "timed steps per side (open_clip mode)"})
    bf16: Literal["auto", "force", "off"] = dataclasses.field(
        default="auto", metadata={"help": "auto: time bf16 autocast only where the CPU has native bf16"}
    )
    loss_batch_sizes: list[int] = dataclasses.field(default_factory=lambda: [1024, 4096])
    loss_dims: list[int] = dataclasses.field(default_factory=lambda: [256, 512])
    loss_chunk: int = dataclasses.field(default=1024, metadata={"help": "chunk_size of the chunked losses"})
    their_fused: bool = dataclasses.field(
        default=False,
        metadata={
            "help": "open_clip's side also uses AdamW(fused=True) (open_clip mode; its trainer's default is "
            "the foreach AdamW)"
        },
    )
    embed_dim: int = 256
    reference_dim: int = dataclasses.field(default=384, metadata={"help": "MiniLM width (CWCL reference)"})
    repeats: int = 3
    precision: Literal["fp32", "bf16"] = dataclasses.field(
        default="fp32", metadata={"help": "bf16 = CPU autocast (mode towers)"}
    )
    speech_s: float = 2.0
    threads: int | None = None
    seed: int = 0


def _rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds (all threads of this process) of ``fn`` after one warm-up."""
    fn()  # warm-up: allocator, lazy init, oneDNN kernels
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def _interleaved_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Like :func:`_median_time` for several functions, timed in turns (a, b, a, b, ...) so that
    load from other processes on a shared machine falls on every side alike."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            samples[name].append((time.perf_counter() - start, time.process_time() - start_cpu))
    return {
        name: (statistics.median(w for w, _ in times), statistics.median(c for _, c in times))
        for name, times in samples.items()
    }


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
    optimizer = build_optimizer(model, OptimConfig(lr=1e-4, weight_decay=0.05))
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
        seconds, _ = _median_time(step, cfg.repeats)
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


# --------------------------------------------------------------------------- open_clip at equal sizes


def native_bf16() -> tuple[bool, str]:
    """Whether bf16 matmuls run natively here, and why: CUDA, or the CPU flags avx512_bf16 / amx_bf16."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(), "CUDA"
    found = sorted(native_bf16_flags())
    return bool(found), ", ".join(found) if found else "no avx512_bf16/amx_bf16 (bf16 emulated)"


def gemm_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 3) -> tuple[float, float]:
    """GFLOP per wall second and per CPU second of a size x size matmul in ``dtype``: the rate a
    step's matmuls could reach here."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    wall, cpu = _median_time(lambda: a @ b, repeats)
    return 2 * size**3 / wall / 1e9, 2 * size**3 / cpu / 1e9


def _open_clip_sizes_config(embed_dim: int) -> MultimodalConfig:
    """Our towers at open_clip's ViT-S-like sizes: ViT 224/16 width 384 x 6 layers; MiniLM-L6 (384 x 6)."""
    return MultimodalConfig(
        towers={
            "image": TowerConfig(
                kind="image",
                hidden_size=384,
                num_layers=6,
                num_heads=6,
                intermediate_size=1536,
                image_size_px=224,
                patch_size=16,
                pooling="cls",
                lora=LoraSettings(mode="full"),
            ),
            "text": TowerConfig(kind="text", pooling="mean", lora=LoraSettings(mode="full")),
        },
        embed_dim=embed_dim,
    )


def _open_clip_model(embed_dim: int, context_length: int):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    return CLIP(
        embed_dim=embed_dim,
        vision_cfg=CLIPVisionCfg(layers=6, width=384, head_width=64, patch_size=16, image_size=224),
        text_cfg=CLIPTextCfg(context_length=context_length, width=384, heads=6, layers=6),
    )


def _flops(step: Callable[[], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def bench_open_clip(cfg: Config) -> dict:
    """Our step and open_clip's step, same images, same reports, same batch; fp32 and bf16 autocast."""
    import open_clip
    from open_clip.loss import ClipLoss

    generator = torch.Generator().manual_seed(cfg.seed)
    images = torch.rand(cfg.batch, 3, 224, 224, generator=generator)
    reports = _reports(cfg.batch, generator)
    ours = MultimodalModel(_open_clip_sizes_config(cfg.embed_dim)).train()
    # Both text towers read the same number of tokens: open_clip's context is our padded length.
    context = int(ours.towers["text"].tokenize(reports)["input_ids"].shape[1])
    theirs = _open_clip_model(cfg.embed_dim, context).train()
    tokens = open_clip.tokenize(reports, context_length=context)
    their_loss = ClipLoss()
    # Our side: the training loop's own optimiser (fused AdamW where torch has it). Theirs: the
    # AdamW that open_clip_train/main.py builds (torch's default foreach kernel), unless their_fused.
    our_optimizer = build_optimizer(ours, OptimConfig(lr=1e-5, weight_decay=0.05))
    their_optimizer = torch.optim.AdamW(
        theirs.parameters(), lr=1e-5, weight_decay=0.05, fused=cfg.their_fused or None
    )

    def our_step(autocast: torch.autocast) -> None:
        with autocast:
            loss = clip_loss(ours.encode("image", images), ours.encode("text", reports), ours.logit_scale)
        our_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        our_optimizer.step()
        ours.clamp_logit_scale()

    def their_step(autocast: torch.autocast) -> None:
        with autocast:
            image_features, text_features, scale = theirs(images, tokens)
            loss = their_loss(image_features, text_features, scale)
        their_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        their_optimizer.step()
        with torch.no_grad():
            theirs.logit_scale.clamp_(0, 4.6052)

    native, why = native_bf16()
    precisions = {"fp32": torch.float32}
    if cfg.bf16 == "force" or (cfg.bf16 == "auto" and native):
        precisions["bf16"] = torch.bfloat16
    result = {
        "batch": cfg.batch,
        "context_tokens": context,
        "bf16_native": native,
        "bf16_why": why,
        "optimizers": (optimizer_name(our_optimizer), optimizer_name(their_optimizer)),
        "params_ours": sum(p.numel() for p in ours.parameters() if p.requires_grad),
        "params_theirs": sum(p.numel() for p in theirs.parameters() if p.requires_grad),
        "flops_ours": _flops(lambda: our_step(torch.autocast("cpu", enabled=False))),
        "flops_theirs": _flops(lambda: their_step(torch.autocast("cpu", enabled=False))),
        "rows": [],
    }
    for name, dtype in precisions.items():
        gemm = gemm_gflops(dtype)
        enabled = dtype != torch.float32
        timings = _interleaved_times(
            {
                side: lambda step=step, on=enabled: step(
                    torch.autocast("cpu", dtype=torch.bfloat16, enabled=on)
                )
                for side, step in (("ours", our_step), ("theirs", their_step))
            },
            cfg.steps,
        )
        result["rows"].append({"precision": name, "gemm_gflops": gemm, **timings})
    return result


def _print_open_clip(result: dict) -> None:
    print(
        f"\nTraining step at open_clip's sizes (ViT 224/16 w384 x6 + text w384 x6, embed 256), batch "
        f"{result['batch']}, {result['context_tokens']} text tokens, AdamW, both trained fully"
    )
    print(
        f"trainable parameters: ours {result['params_ours'] / 1e6:.1f} M, open_clip "
        f"{result['params_theirs'] / 1e6:.1f} M; FLOPs/step (fwd+bwd): ours "
        f"{result['flops_ours'] / 1e9:.0f} G, open_clip {result['flops_theirs'] / 1e9:.0f} G"
    )
    print(f"optimizers: ours {result['optimizers'][0]}, open_clip {result['optimizers'][1]}")
    print(f"bf16: {'native' if result['bf16_native'] else 'NOT native'} ({result['bf16_why']})")
    print(
        f"{'precision':>9} {'ours samples/s':>15} {'open_clip samples/s':>20} {'ours/theirs':>12} "
        f"{'cpu ratio':>10} {'ours GFLOP/s':>13} {'theirs GFLOP/s':>15} {'GEMM GFLOP/s':>13} {'ours/GEMM':>10} "
        f"{'per CPU s: ours':>16} {'theirs':>7} {'GEMM':>6} {'ours/GEMM':>10}"
    )
    for row in result["rows"]:
        (our_wall, our_cpu), (their_wall, their_cpu) = row["ours"], row["theirs"]
        gemm_wall, gemm_cpu = row["gemm_gflops"]
        ours_rate, ours_cpu_rate = result["flops_ours"] / our_wall / 1e9, result["flops_ours"] / our_cpu / 1e9
        print(
            f"{row['precision']:>9} {result['batch'] / our_wall:>15.2f} {result['batch'] / their_wall:>20.2f} "
            f"{their_wall / our_wall:>11.2f}x {their_cpu / our_cpu:>9.2f}x {ours_rate:>13.0f} "
            f"{result['flops_theirs'] / their_wall / 1e9:>15.0f} {gemm_wall:>13.0f} {ours_rate / gemm_wall:>9.0%} "
            f"{ours_cpu_rate:>16.0f} {result['flops_theirs'] / their_cpu / 1e9:>7.0f} {gemm_cpu:>6.0f} "
            f"{ours_cpu_rate / gemm_cpu:>9.0%}"
        )
    if not any(row["precision"] == "bf16" for row in result["rows"]):
        print("bf16 column skipped: this CPU emulates bf16 (bf16=force times it anyway)")
    print(
        "ours/theirs = our samples/s over open_clip's (target >= 1.2); cpu ratio: the same from CPU seconds. "
        "GFLOP/s per CPU s: FLOPs over CPU seconds of all threads, robust to other processes on the machine"
    )


# --------------------------------------------------------------------------- losses alone


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
    chunk = cfg.loss_chunk
    for dim in cfg.loss_dims:
        for n in cfg.loss_batch_sizes:
            a = F.normalize(torch.randn(n, dim, generator=generator), dim=-1).requires_grad_(True)
            b = F.normalize(torch.randn(n, dim, generator=generator), dim=-1).requires_grad_(True)
            reference = torch.randn(n, cfg.reference_dim, generator=generator)
            log_scale = torch.tensor(2.659, requires_grad=True)
            losses: dict[str, Callable[[], torch.Tensor]] = {}
            if ClipLoss is not None:
                open_clip_loss = ClipLoss()
                losses["open_clip"] = lambda a=a, b=b, s=log_scale, f=open_clip_loss: f(a, b, s.exp())
            losses |= {
                "clip": lambda a=a, b=b, s=log_scale: clip_loss(a, b, s),
                "cwcl": lambda a=a, b=b, s=log_scale, r=reference: cwcl_loss(a, b, s, r),
                "cwcl_p8": lambda a=a, b=b, s=log_scale, r=reference: cwcl_loss(a, b, s, r, weight_power=8.0),
                f"clip_c{chunk}": lambda a=a, b=b, s=log_scale: clip_loss(a, b, s, chunk_size=chunk),
                f"cwcl_c{chunk}": lambda a=a, b=b, s=log_scale, r=reference: cwcl_loss(
                    a, b, s, r, chunk_size=chunk
                ),
                f"cwcl_p8_c{chunk}": lambda a=a, b=b, s=log_scale, r=reference: cwcl_loss(
                    a, b, s, r, chunk_size=chunk, weight_power=8.0
                ),
                "cwcl_naive": lambda a=a, b=b, s=log_scale, r=reference: _naive_symmetric_cwcl(a, b, s, r),
            }
            timings = _interleaved_times(
                {name: lambda fn=fn: fn().backward() for name, fn in losses.items()}, cfg.repeats
            )
            rows.append({"batch": n, "dim": dim, **timings})
    return rows


def _print_losses(cfg: Config, losses: list[dict]) -> None:
    names = [k for k in losses[0] if k not in ("batch", "dim")]
    base = "open_clip" if "open_clip" in names else "clip"
    print(
        f"\nLoss forward+backward, reference R={cfg.reference_dim}: wall ms (ratio of wall, ratio of CPU s "
        f"to {'open_clip ClipLoss' if base == 'open_clip' else 'clip_loss'})"
    )
    print(f"{'D':>4} {'batch':>6} " + " ".join(f"{n:>24}" for n in names))
    for r in losses:
        cells = [
            f"{r[n][0] * 1e3:>8.1f} ({r[n][0] / r[base][0]:.2f}x {r[n][1] / r[base][1]:.2f}x)" for n in names
        ]
        print(f"{r['dim']:>4} {r['batch']:>6} " + " ".join(f"{c:>24}" for c in cells))
    print(
        f"target: symmetric CWCL <= 1.10x open_clip's ClipLoss; _c{cfg.loss_chunk}: chunk_size={cfg.loss_chunk}"
    )


def run(cfg: Config) -> int:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, mode {cfg.mode}; wall-clock "
        "and CPU seconds are medians; on a shared machine trust ratios measured in this run only"
    )
    if cfg.mode in ("all", "towers"):
        steps = bench_train_step(cfg)
        print(
            f"\nTraining step of default_{cfg.task}_config() (encode all views + CWCL + backward + AdamW), "
            f"precision {cfg.precision}"
        )
        print(f"{'batch':>6} {'step s':>9} {'samples/s':>10} {'peak RSS MiB':>13} {'RSS growth MiB':>15}")
        for r in steps:
            print(
                f"{r['batch']:>6} {r['step_s']:>9.3f} {r['samples_per_s']:>10.1f} {r['peak_rss_mib']:>13.0f} "
                f"{r['rss_growth_mib']:>15.0f}"
            )
    if cfg.mode in ("all", "open_clip"):
        try:
            import open_clip  # noqa: F401
        except ImportError:
            print("\nopen_clip comparison skipped: pip install '.[bench]' (open-clip-torch)")
        else:
            _print_open_clip(bench_open_clip(cfg))
    if cfg.mode in ("all", "loss"):
        _print_losses(cfg, bench_losses(cfg))
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines.config import load_config

    return run(load_config(Config, None, list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
