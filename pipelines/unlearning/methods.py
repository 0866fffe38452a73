"""Model unlearning methods for the contrastive multimodal model (no classifier head anywhere).

All methods start from a copy of the original model and run through the training library's one loop
(:func:`pipelines.training.loop.fit`) as tasks: only their loss differs, so the towers, LoRA adapters,
masks of missing views, mixed precision, clipping and the logit-scale clamp behave exactly as in
training.

- ``laf``: label-free forgetting adapted from LAF (Shen et al., ICLR 2024, "Label-Agnostic
  Forgetting"). LAF models the remaining data's representation distribution with a VAE, unlearns the
  extractor at the representation level, then re-aligns remaining representations with the original
  model's through a contrastive loss. Kept light here: the distribution of each view's retained
  embeddings is a Gaussian with Ledoit-Wolf shrinkage covariance (Ledoit & Wolf 2004), fitted on the
  original model's embeddings. One joint objective per step:

  ``L = w_f * mean_v relu(cos(z_v(x_f), z0_v(x_f)) - margin)``   push forget representations away from
  what the original gave them;
  ``  + w_d * mean_v relu(NLL_v(z_v(x_f)) - tau_v) / D``          ...while staying inside the retained
  distribution (tau_v = a quantile of retained NLLs), so they look like unseen data, not outliers;
  ``  + w_p * mean_(a,b) relu(cos(z_a(x_f), z_b(x_f)) - c_ab)``  bring the forget pairs' cross-modal
  cosine down to ``c_ab``, the original model's mean pair cosine on unseen studies (the pool split);
  ``  + w_r * mean_v InfoNCE(z_v(x_r), z0_v(x_r); T)``            LAF's representation-alignment term:
  each retained sample's new embedding must pick its own original embedding among the batch's.

  The pair term is our addition for contrastive models: what a contrastive model memorises is the
  alignment of a study's views, and pushing each view away from its original embedding can move
  both views together and keep that alignment (measured on a tiny model that memorised random
  pairs: with the push alone, forget pairs stayed 0.1-0.2 more aligned than unseen ones).

- ``finetune``: fine-tune on retained data only with the training objective ("FT", Warnecke et al. 2023
  baseline): forgetting by drift.
- ``gradient_ascent``: NegGrad+ (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"):
  ``w_r * L(x_r) - w_f * min(L(x_f), bound)`` with the training loss ``L``; the ascent stops paying once
  the forget batch's contrastive loss reaches ``bound = ascent_bound * log(batch)``, the loss of a model
  at chance, which keeps the ascent from diverging.
- ``retrain``: retraining from scratch on the retained data (the gold standard): the training stage's
  ``train()`` after the tombstones are written, which its loaders honour.

Verified early stopping: ``steps`` is a maximum. Every ``check_every`` steps from ``min_steps`` on (and
at the last step), ``unlearn_model`` calls the stage's check (the cheap part of the verification:
membership inference forget-vs-held-out and forget-set alignment on the current model) and stops at the
first one that passes. Checks run in eval mode and draw no random numbers, so a run stopped at step k
is the first k steps of the run without checks.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf
from torch import nn

from encoders import MultimodalModel
from pipelines.data.dataset import StudyDataset, collate_studies
from pipelines.training import (
    OptimConfig,
    ReferenceCache,
    TrainConfig,
    ViewEncoder,
    build_objective,
    build_reference_cache,
    embed_dataset,
    move_batch,
)
from pipelines.training.contrastive import ContrastiveTask
from pipelines.training.loop import (
    Callback,
    Engine,
    LoopSettings,
    LoopState,
    StepOutput,
    StepSource,
    Task,
    fit,
)

Method = Literal["laf", "finetune", "gradient_ascent", "retrain"]


@dataclasses.dataclass
class MethodConfig:
    """Settings of the approximate methods (``retrain`` uses the training config instead)."""

    steps: int = dataclasses.field(
        default=40, metadata={"help": "maximum optimizer steps of the unlearning (early stop may end sooner)"}
    )
    check_every: int = dataclasses.field(
        default=5, metadata={"help": "steps between early-stopping checks (0: no checks, run all steps)"}
    )
    min_steps: int = dataclasses.field(default=5, metadata={"help": "no early stop before this many steps"})
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 16
    max_grad_norm: float = 1.0
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    distribution_weight: float = dataclasses.field(
        default=0.1, metadata={"help": "laf: weight of the retained-distribution term"}
    )
    margin: float = dataclasses.field(
        default=0.0, metadata={"help": "laf: cosine to the original below which no push"}
    )
    distribution_quantile: float = 0.9
    pair_weight: float = dataclasses.field(
        default=1.0,
        metadata={"help": "laf: weight of the term bringing forget pairs to unseen pairs' cosine"},
    )
    match_temperature: float = dataclasses.field(
        default=0.1, metadata={"help": "laf: temperature of the representation-alignment InfoNCE"}
    )
    ascent_bound: float = dataclasses.field(
        default=1.0, metadata={"help": "gradient_ascent: stop at this multiple of the chance loss log(B)"}
    )
    warmup_steps: int = 0
    min_lr_ratio: float = dataclasses.field(
        default=1.0, metadata={"help": "cosine decay floor of the learning rate (1 = constant)"}
    )

    def optim(self) -> OptimConfig:
        """The loop's optimiser settings (AdamW's own betas and eps, as unlearning always used)."""
        return OptimConfig(
            lr=self.lr,
            weight_decay=self.weight_decay,
            betas=[0.9, 0.999],
            eps=1e-8,
            warmup_steps=self.warmup_steps,
            min_lr_ratio=self.min_lr_ratio,
            max_grad_norm=self.max_grad_norm,
        )


@dataclasses.dataclass
class Gaussian:
    """A view's retained-embedding distribution: mean ``[D]`` and precision ``[D, D]``."""

    mean: torch.Tensor
    precision: torch.Tensor
    threshold: float


StopCheck = Callable[[MultimodalModel, int], tuple[bool, dict[str, float]]]
"""``check(model, step) -> (passed, figures)``: the early-stopping criterion, called in eval mode."""


@dataclasses.dataclass
class UnlearnOutcome:
    model: MultimodalModel
    steps: int  # optimizer steps taken
    seconds: float  # everything, setup (copies, reference cache, Gaussians) and checks included
    history: list[dict[str, float]]
    step_seconds: float = math.nan  # the optimisation loop alone (checks excluded), per step
    stop_reason: str = "max_steps"  # "stop_check_passed": a check passed; "max_steps": ran them all
    checks: list[dict[str, float]] = dataclasses.field(default_factory=list)  # step, seconds, passed, ...
    check_seconds: float = 0.0


def is_check_step(step: int, settings: MethodConfig) -> bool:
    """Whether the early-stopping check runs after optimizer step ``step`` (1-based)."""
    if settings.check_every <= 0 or step < max(1, settings.min_steps):
        return False
    return step % settings.check_every == 0 or step == settings.steps


def fit_gaussian(embeddings: np.ndarray, quantile: float) -> Gaussian:
    """Ledoit-Wolf Gaussian of ``[N, D]`` embeddings; threshold = ``quantile`` of their own NLLs."""
    lw = LedoitWolf().fit(np.asarray(embeddings, dtype=np.float64))
    mean = torch.tensor(lw.location_, dtype=torch.float32)
    precision = torch.tensor(lw.precision_, dtype=torch.float32)
    nll = gaussian_nll(torch.tensor(embeddings, dtype=torch.float32), mean, precision)
    return Gaussian(mean, precision, float(torch.quantile(nll, quantile)))


def gaussian_nll(z: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood up to a constant: half the squared Mahalanobis distance, ``[N]``."""
    d = z - mean.to(z)
    return 0.5 * torch.einsum("nd,de,ne->n", d, precision.to(z), d)


def representation_match_loss(z_new: torch.Tensor, z_orig: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with the original model's embedding of the same sample as the positive and the batch's
    others as negatives (LAF's representation alignment, Shen et al. 2024, sec. 3.3)."""
    logits = (F.normalize(z_new, dim=-1) @ F.normalize(z_orig, dim=-1).T) / temperature
    return F.cross_entropy(logits, torch.arange(len(z_new), device=z_new.device))


def laf_forget_loss(
    z_new: dict[str, torch.Tensor],
    z_orig: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
    gaussians: dict[str, Gaussian],
    margin: float,
    distribution_weight: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Push-away + stay-in-distribution term of the forget batch, averaged over the present views."""
    terms, pushes, dists = [], [], []
    for view, z in z_new.items():
        mask = present[view]
        if not mask.any():
            continue
        cos = F.cosine_similarity(z[mask], z_orig[view][mask], dim=-1)
        push = F.relu(cos - margin).mean()
        term = push
        if view in gaussians and distribution_weight:
            g = gaussians[view]
            nll = gaussian_nll(z[mask].float(), g.mean, g.precision)
            dist = F.relu(nll - g.threshold).mean() / z.shape[-1]
            term = term + distribution_weight * dist
            dists.append(float(dist.detach()))
        terms.append(term)
        pushes.append(float(cos.detach().mean()))
    if not terms:
        return torch.zeros(()), {}
    parts = {"forget_cos_to_original": float(np.mean(pushes))}
    if dists:
        parts["forget_excess_nll"] = float(np.mean(dists))
    return torch.stack(terms).mean(), parts


def laf_retain_loss(
    z_new: dict[str, torch.Tensor],
    z_orig: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
    temperature: float,
) -> torch.Tensor:
    terms = []
    for view, z in z_new.items():
        mask = present[view]
        if int(mask.sum()) < 2:
            continue
        terms.append(representation_match_loss(z[mask], z_orig[view][mask], temperature))
    return torch.stack(terms).mean() if terms else torch.zeros(())


def fit_retained_gaussians(
    feats: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
    quantile: float,
    max_samples: int = 512,
    seed: int = 0,
) -> dict[str, Gaussian]:
    """Gaussians of the original model's retained embeddings per view (a seeded subsample)."""
    rng = np.random.default_rng(seed)
    out = {}
    for view, f in feats.items():
        rows = np.flatnonzero(present[view].numpy())
        if len(rows) < 3:
            continue
        if len(rows) > max_samples:
            rows = rng.choice(rows, max_samples, replace=False)
        out[view] = fit_gaussian(f[rows].numpy(), quantile)
    return out


def unseen_pair_cosines(
    original: MultimodalModel,
    unseen_set: Any,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[tuple[str, str], float]:
    """Per objective pair, the original model's mean cosine between the two views of unseen studies."""
    feats, present = embed_dataset(original, unseen_set, cfg.views, cfg.eval_batch_size, device)
    out = {}
    for pair in cfg.objective.pairs:
        both = present[pair.a] & present[pair.b]
        if int(both.sum()):
            out[(pair.a, pair.b)] = float(
                F.cosine_similarity(feats[pair.a][both], feats[pair.b][both]).mean()
            )
    return out


def laf_pair_loss(
    z_new: dict[str, torch.Tensor], present: dict[str, torch.Tensor], targets: dict[tuple[str, str], float]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Excess of the forget batch's cross-modal pair cosines over the unseen level, averaged over pairs."""
    terms, cosines = [], []
    for (a, b), target in targets.items():
        if a not in z_new or b not in z_new:
            continue
        both = present[a] & present[b]
        if not both.any():
            continue
        cos = F.cosine_similarity(z_new[a][both], z_new[b][both], dim=-1)
        terms.append(F.relu(cos - target).mean())
        cosines.append(float(cos.detach().mean()))
    if not terms:
        return torch.zeros(()), {}
    return torch.stack(terms).mean(), {"forget_pair_cos": float(np.mean(cosines))}


class _UnlearnTask(Task):
    """An unlearning method's loss on a step's ``{"retain": batch, "forget": batch}``."""

    metric_prefix = "unlearn"

    def __init__(self, objective: Any, references: ReferenceCache | None, settings: MethodConfig) -> None:
        self.contrastive = ContrastiveTask(objective, references)
        self.settings = settings

    def forward(self, encoder: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        return {side: self.contrastive.forward(encoder, b) for side, b in _sides(batch).items()}

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        return {side: self.contrastive.targets(b, device) for side, b in _sides(batch).items()}

    def side_loss(self, outputs: dict[str, Any], targets: dict[str, Any], side: str) -> torch.Tensor:
        return self.contrastive.loss(outputs[side], targets[side])[0]


def _sides(batch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {side: batch[side] for side in ("retain", "forget") if batch.get(side) is not None}


class FinetuneTask(_UnlearnTask):
    """FT: the training objective on retained data only."""

    def loss(self, outputs: dict[str, Any], targets: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        loss = self.side_loss(outputs, targets, "retain")
        return loss, {"retain_loss": loss.detach()}


class GradientAscentTask(_UnlearnTask):
    """NegGrad+: descend on retained data, ascend (bounded at the chance loss) on the forget batch."""

    def loss(self, outputs: dict[str, Any], targets: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        retain_loss = self.side_loss(outputs, targets, "retain")
        forget_loss = self.side_loss(outputs, targets, "forget")
        n_forget = len(next(iter(targets["forget"]["present"].values())))
        bound = self.settings.ascent_bound * math.log(max(2, n_forget))
        loss = self.settings.retain_weight * retain_loss - self.settings.forget_weight * torch.clamp(
            forget_loss, max=bound
        )
        return loss, {"retain_loss": retain_loss.detach(), "forget_loss": forget_loss.detach()}


class LafTask(Task):
    """LAF (see the module docstring): push forget representations away inside the retained distribution,
    bring forget pairs to the unseen pairs' cosine, keep retained representations where they were."""

    metric_prefix = "unlearn"

    def __init__(
        self,
        settings: MethodConfig,
        forget_ref: dict[str, torch.Tensor],
        retain_ref: dict[str, torch.Tensor],
        gaussians: dict[str, Gaussian],
        pair_targets: dict[tuple[str, str], float],
    ) -> None:
        self.settings = settings
        self.forget_ref, self.retain_ref = forget_ref, retain_ref
        self.gaussians, self.pair_targets = gaussians, pair_targets

    def forward(self, encoder: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        return {side: encoder(batch[side])[0] for side in ("forget", "retain")}

    def targets(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        out = {}
        for side, ref in (("forget", self.forget_ref), ("retain", self.retain_ref)):
            rows = batch[f"{side}_rows"]
            out[side] = {
                "present": batch[side]["present"],
                "original": {v: f[rows].to(device) for v, f in ref.items()},
            }
        return out

    def loss(self, outputs: dict[str, Any], targets: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        s = self.settings
        forget, retain = targets["forget"], targets["retain"]
        forget_term, forget_parts = laf_forget_loss(
            outputs["forget"],
            forget["original"],
            forget["present"],
            self.gaussians,
            s.margin,
            s.distribution_weight,
        )
        pair_term, pair_parts = laf_pair_loss(outputs["forget"], forget["present"], self.pair_targets)
        retain_term = laf_retain_loss(
            outputs["retain"], retain["original"], retain["present"], s.match_temperature
        )
        loss = s.forget_weight * forget_term + s.pair_weight * pair_term + s.retain_weight * retain_term
        return loss, forget_parts | pair_parts | {"retain_match": retain_term.detach()}


class SampledBatches(StepSource):
    """Every step draws a retained batch (and, except for ``finetune``, a forget batch) from one seeded
    generator: the draws do not depend on checks, so a run stopped at step k is the first k steps."""

    def __init__(
        self,
        forget_items: list[dict[str, Any]],
        retain_set: StudyDataset,
        cfg: TrainConfig,
        settings: MethodConfig,
        with_forget: bool,
        device: torch.device,
        seed: int,
    ) -> None:
        self.forget_items, self.retain_set, self.cfg = forget_items, retain_set, cfg
        self.settings, self.with_forget, self.device = settings, with_forget, device
        self.rng = np.random.default_rng(seed)

    def positions(self, epoch: int) -> list[int]:
        return list(range(self.settings.steps))

    def _batch(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return move_batch(collate_studies(items, self.cfg.views), self.device)

    def micro_batches(self, epoch: int, position: int) -> list[dict[str, Any]]:
        size = self.settings.batch_size
        retain_rows = _sample(len(self.retain_set), size, self.rng)
        step = {"retain": self._batch([self.retain_set[i] for i in retain_rows]), "retain_rows": retain_rows}
        step["key"] = list(step["retain"]["key"])
        if self.with_forget:
            forget_rows = _sample(len(self.forget_items), size, self.rng)
            step["forget"] = self._batch([self.forget_items[i] for i in forget_rows])
            step["forget_rows"] = forget_rows
            step["key"] += step["forget"]["key"]
        return [step]


class CheckEvery(Callback):
    """Verified early stopping: the stage's check every ``check_every`` steps; stop at the first pass."""

    def __init__(
        self, model: MultimodalModel, check: StopCheck, settings: MethodConfig, tracker: Any | None
    ) -> None:
        self.model, self.check, self.settings, self.tracker = model, check, settings, tracker
        self.history: list[dict[str, float]] = []
        self.checks: list[dict[str, float]] = []
        self.seconds = 0.0
        self.passed = False

    def after_step(self, state: LoopState, output: StepOutput) -> None:
        self.history.append(output.parts | {"loss": output.loss})
        if not is_check_step(state.step, self.settings):
            return
        tick = time.perf_counter()
        passed, figures = self.check(self.model, state.step)
        self.model.train()
        spent = time.perf_counter() - tick
        self.seconds += spent
        record = {"step": float(state.step), "passed": float(passed), "seconds": spent, **figures}
        self.checks.append(record)
        if self.tracker is not None:
            self.tracker.log_metrics(
                {f"unlearn.check.{k}": v for k, v in record.items() if k != "step" and math.isfinite(v)},
                state.step,
            )
        if passed:
            self.passed = state.stop = True


def _sample(n: int, size: int, rng: np.random.Generator) -> list[int]:
    return rng.choice(n, size=min(size, n), replace=False).tolist()


def unlearn_model(
    original: MultimodalModel,
    forget_items: list[dict[str, Any]],
    retain_set: StudyDataset,
    cfg: TrainConfig,
    method: Method,
    settings: MethodConfig,
    device: torch.device,
    seed: int = 0,
    tracker: Any | None = None,
    progress: bool = True,
    check: StopCheck | None = None,
    unseen_set: Any | None = None,
) -> UnlearnOutcome:
    """Run an approximate method (``laf``, ``finetune``, ``gradient_ascent``) from a copy of ``original``.

    ``forget_items`` are the withdrawn studies as ``StudyDataset`` items, materialised before the data
    purge; ``retain_set`` is the training split after it; ``unseen_set`` (studies never trained on, the
    pool split) sets LAF's pair-cosine targets. With ``check``, stops at the first passing
    check (see the module docstring); each check's figures go to ``tracker`` as ``unlearn.check.*``.
    """
    if method not in ("laf", "finetune", "gradient_ascent"):
        raise ValueError(f"unlearn_model runs laf/finetune/gradient_ascent, not {method!r}")
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = copy.deepcopy(original).to(device)
    model.train()
    encoder = ViewEncoder(model, cfg.views)
    task: Task
    if method == "laf":
        task = _laf_task(original, forget_items, retain_set, cfg, settings, device, seed, unseen_set)
    else:
        objective = build_objective(cfg.objective, distributed=False)
        references = build_reference_cache(model, cfg, retain_set)
        kind = FinetuneTask if method == "finetune" else GradientAscentTask
        task = kind(objective, references, settings)
    engine = Engine(model, encoder, settings.optim(), settings.steps, device, cfg.precision)
    source = SampledBatches(forget_items, retain_set, cfg, settings, method != "finetune", device, seed)
    checks = CheckEvery(model, check, settings, tracker) if check is not None else None
    recorder = checks or _History()
    loop_start = time.perf_counter()
    state = fit(
        engine,
        task,
        source,
        callbacks=[recorder],
        tracker=tracker,
        settings=LoopSettings(log_every=1, progress=progress, description=f"unlearn ({method})"),
    )
    model.eval()
    end = time.perf_counter()
    check_seconds = checks.seconds if checks is not None else 0.0
    per_step = (end - loop_start - check_seconds) / max(1, state.step)
    return UnlearnOutcome(
        model,
        state.step,
        end - start,
        recorder.history,
        per_step,
        "stop_check_passed" if checks is not None and checks.passed else "max_steps",
        checks.checks if checks is not None else [],
        check_seconds,
    )


class _History(Callback):
    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def after_step(self, state: LoopState, output: StepOutput) -> None:
        self.history.append(output.parts | {"loss": output.loss})


def _laf_task(
    original: MultimodalModel,
    forget_items: list[dict[str, Any]],
    retain_set: StudyDataset,
    cfg: TrainConfig,
    settings: MethodConfig,
    device: torch.device,
    seed: int,
    unseen_set: Any | None,
) -> LafTask:
    """LAF's fixed targets. The original model's embeddings never change: computed once here, they are
    both the retained distribution's sample and every step's targets (the frozen copy is eval-mode,
    deterministic). The other methods never look at the original, so only LAF pays for the copy."""
    frozen = copy.deepcopy(original).to(device).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    retain_ref, retain_present = embed_dataset(frozen, retain_set, cfg.views, cfg.eval_batch_size, device)
    forget_ref, _ = embed_dataset(
        frozen, ItemList(forget_items, cfg.views), cfg.views, cfg.eval_batch_size, device
    )
    gaussians: dict[str, Gaussian] = {}
    if settings.distribution_weight:
        gaussians = fit_retained_gaussians(
            retain_ref, retain_present, settings.distribution_quantile, seed=seed
        )
    pair_targets: dict[tuple[str, str], float] = {}
    if settings.pair_weight and unseen_set is not None:
        pair_targets = unseen_pair_cosines(frozen, unseen_set, cfg, device)
    return LafTask(settings, forget_ref, retain_ref, gaussians, pair_targets)


def outcome_metrics(outcome: UnlearnOutcome, settings: MethodConfig) -> dict[str, float]:
    """The run's step counts and timings as tracker metrics."""
    return {
        "unlearn.steps": float(outcome.steps),
        "unlearn.max_steps": float(settings.steps),
        "unlearn.checks": float(len(outcome.checks)),
        "unlearn.stopped_early": float(outcome.stop_reason == "stop_check_passed"),
        "time.unlearn_step_s": outcome.step_seconds,
        "time.checks_s": outcome.check_seconds,
    }


def time_training_steps(
    original: MultimodalModel,
    retain_set: StudyDataset,
    cfg: TrainConfig,
    device: torch.device,
    n_steps: int = 5,
    seed: int = 0,
) -> float:
    """Seconds per training step (the training stage's step on retained batches, from a copy, setup
    excluded), for estimating retraining time when retraining is not run: ``epochs * len(retained) //
    batch`` steps."""
    settings = MethodConfig(steps=n_steps, batch_size=cfg.batch_size, lr=cfg.optim.lr)
    outcome = unlearn_model(original, [], retain_set, cfg, "finetune", settings, device, seed, progress=False)
    return outcome.step_seconds


class ItemList(list):
    """Materialised ``StudyDataset`` items that ``embed_dataset`` can iterate (it needs ``views``)."""

    def __init__(self, items: list[dict[str, Any]], views: dict[str, Any]) -> None:
        super().__init__(items)
        self.views = views
        self.keys = [it["key"] for it in items]


class StudySubset:
    """Rows ``indices`` of a ``StudyDataset``, with its ``views`` and ``keys`` (what ``embed_dataset``
    and the stage's embedding helpers read)."""

    def __init__(self, dataset: StudyDataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        self.views = dataset.views
        self.keys = [dataset.keys[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[self.indices[index]]


def materialise(dataset: StudyDataset) -> list[dict[str, Any]]:
    """Every item of ``dataset`` in memory (the forget set must outlive its tombstoning and erasure)."""
    items = []
    for i in range(len(dataset)):
        item = dataset[i]
        items.append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in item.items()})
    return items
