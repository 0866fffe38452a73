"""Verification of an unlearned model: membership inference, forget-set alignment, retained performance.

Embeddings come in as :class:`pipelines.evaluation.embeddings.SplitEmbeddings` (rows = studies) for four groups:
*members* (retained training studies), *held-out* (the test split: never trained on), *forget* (the
withdrawn training studies) and a *pool* (the validation split) that serves as shared negatives.

**Membership inference** (Shokri et al. 2017; a "loss/similarity threshold" attack in the style of
Yeom et al. 2018, learned): per study and objective pair (a, b) three features, the cosine of the pair
and the InfoNCE loss in both directions against the pool's candidates (the per-sample training signal
of a contrastive model). A logistic regression learns members (1) vs held-out (0); its out-of-fold
AUC is the attack's power on this model. Fitted on all of them, it then scores the forget set: after
unlearning, forget studies should be indistinguishable from held-out ones, i.e. the AUC of
forget-vs-held-out scores is near 0.5 (or, with a retrained gold standard, near the retrained
model's AUC). Both sides get percentile-bootstrap CIs.

**Alignment**: mean cosine of the forget set's pairs minus the held-out set's (should be <= tolerance:
the model aligns forgotten pairs no better than unseen ones).

**Retained performance**: mean R@1 of every objective pair in both directions on retained training
studies and on the test split, unlearned vs original; drops must stay within tolerance.

**Two draws: one decides, the other confirms.** The early stop of the unlearning loop fires at the first
check whose attack passes; a noisy estimate passes by chance sooner or later, so the statistic that
stopped the run is biased towards passing and cannot also be the evidence that it worked (a winner's
curse: selection and estimation on the same sample). :func:`attack_draws` therefore partitions the
members, the held-out studies and the pool once, with ``seed``: the *stopping* draw feeds every early
stopping check, the disjoint *confirming* draw (``confirm_fraction`` of each group) feeds the final
verification, a fresh attack fitted on rows the stop never looked at. The forget set is in both: it is
not a sample but the very studies whose removal is verified. A run whose confirming attack fails is
reported failed, however its stopping check went.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipelines.errors import StageError
from pipelines.evaluation import metrics as M
from pipelines.evaluation.embeddings import SplitEmbeddings
from pipelines.evaluation.metrics import l2_normalise
from pipelines.evaluation.retrieval import mean_r_at_1


@dataclasses.dataclass
class VerifyConfig:
    """Tolerances of the verification (absolute)."""

    mia_tolerance: float = dataclasses.field(
        default=0.15, metadata={"help": "|forget-vs-held-out attack AUC - reference| allowed"}
    )
    alignment_tolerance: float = dataclasses.field(
        default=0.05, metadata={"help": "forget mean pair cosine may exceed held-out by this much"}
    )
    retained_tolerance: float = dataclasses.field(
        default=0.1, metadata={"help": "allowed drop of retained/test mean R@1 vs the original"}
    )
    bootstrap_resamples: int = 500
    max_members: int = dataclasses.field(
        default=512, metadata={"help": "members subsampled for each attack (stopping and confirming)"}
    )
    confirm_fraction: float = dataclasses.field(
        default=0.5,
        metadata={
            "help": "share of the held-out, member and pool studies kept for the confirming attack; the "
            "early-stopping checks attack the rest (the two draws are disjoint)"
        },
    )
    folds: int = 5
    seed: int = dataclasses.field(
        default=0,
        metadata={"help": "partition into the two draws; the stopping attack's folds and bootstrap"},
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.confirm_fraction < 1.0:
            raise StageError(
                f"verify.confirm_fraction must lie strictly between 0 and 1, got {self.confirm_fraction}"
            )


@dataclasses.dataclass
class Verification:
    metrics: dict[str, float]
    checks: dict[str, bool]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    @property
    def outcome(self) -> str:
        return "passed" if self.passed else "failed"


def pair_features(
    group: SplitEmbeddings,
    pool: SplitEmbeddings,
    pairs: Sequence[tuple[str, str]],
    logit_scale: float,
) -> np.ndarray:
    """``[N, 3 * len(pairs)]``: per pair the pair cosine and the InfoNCE loss a->b and b->a of each
    study against its own partner plus the pool's partners; NaN where the study lacks the pair."""
    n = len(group.keys)
    out = np.full((n, 3 * len(pairs)), np.nan)
    for p, (a, b) in enumerate(pairs):
        if a not in group.embeddings or b not in group.embeddings:
            continue
        rows = np.flatnonzero(group.present[a] & group.present[b])
        if not len(rows):
            continue
        ea, eb = l2_normalise(group.embeddings[a][rows]), l2_normalise(group.embeddings[b][rows])
        pool_a = (
            l2_normalise(pool.embeddings[a][pool.present[a]])
            if a in pool.embeddings
            else np.zeros((0, ea.shape[1]))
        )
        pool_b = (
            l2_normalise(pool.embeddings[b][pool.present[b]])
            if b in pool.embeddings
            else np.zeros((0, eb.shape[1]))
        )
        own = np.sum(ea * eb, axis=1)
        losses = []
        for q, pool_side in ((ea, pool_b), (eb, pool_a)):
            logits = logit_scale * np.concatenate([own[:, None], q @ pool_side.T], axis=1)
            losses.append(logsumexp(logits, axis=1) - logits[:, 0])
        out[rows, 3 * p] = own
        out[rows, 3 * p + 1] = losses[0]
        out[rows, 3 * p + 2] = losses[1]
    return out


def _attack():
    return make_pipeline(
        SimpleImputer(strategy="median"),
        StandardScaler(),
        LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000),
    )


def bootstrap_auc_ci(
    y_true: np.ndarray, y_score: np.ndarray, n_resamples: int, seed: int
) -> tuple[float, float]:
    """Stratified percentile-bootstrap 95% CI of the AUROC (``metrics.bootstrap_ci``)."""
    ci, used = M.bootstrap_ci(y_true, y_score, n_resamples=n_resamples, seed=seed)
    return ci["auroc"] if used >= 2 else (math.nan, math.nan)


@dataclasses.dataclass
class AttackResult:
    power_auc: float
    forget_auc: float
    forget_auc_ci: tuple[float, float]
    forget_membership: float
    heldout_membership: float


STOPPING, CONFIRMING = "stopping", "confirming"
# Rows each attack needs per class: StratifiedKFold with 2 folds needs 2 members and 2 held-out studies.
MIN_ATTACK_ROWS = 2


@dataclasses.dataclass(frozen=True)
class AttackDraw:
    """The rows one membership attack uses: indices into the members, held-out and pool groups (the
    forget set is always whole); ``seed`` seeds its folds and bootstrap, ``partition_seed`` drew the
    rows (shared by the two draws of one partition)."""

    role: str
    seed: int
    partition_seed: int
    members: np.ndarray
    heldout: np.ndarray
    pool: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"members": len(self.members), "heldout": len(self.heldout), "pool": len(self.pool)}

    def describe(self, n_forget: int) -> dict[str, Any]:
        """What a record says about this draw: its role, seeds and sizes (no row identities)."""
        seeds = {"partition_seed": int(self.partition_seed), "attack_seed": int(self.seed)}
        return {"draw": self.role} | seeds | self.sizes() | {"forget": int(n_forget)}

    def disjoint_from(self, other: AttackDraw) -> bool:
        """No member, held-out or pool row in both draws."""
        return all(
            not set(getattr(self, g).tolist()) & set(getattr(other, g).tolist())
            for g in ("members", "heldout", "pool")
        )


def attack_draws(
    n_members: int, n_heldout: int, n_pool: int, cfg: VerifyConfig, stopping: bool = True
) -> dict[str, AttackDraw]:
    """``{"stopping": ..., "confirming": ...}``: one seeded partition of each group into two disjoint
    draws (the confirming one gets ``ceil(confirm_fraction * n)`` rows, members capped at
    ``max_members`` per draw). Without ``stopping`` (no early-stopping checks will run) the confirming
    draw takes every row. Raises :class:`StageError` when a draw would have too few studies to attack."""
    sizes = {"members": n_members, "heldout": n_heldout, "pool": n_pool}
    rng = np.random.default_rng(cfg.seed)
    order = {name: rng.permutation(n) for name, n in sizes.items()}
    cut = {name: math.ceil(cfg.confirm_fraction * n) if stopping else n for name, n in sizes.items()}
    for name in ("members", "heldout"):
        smallest = min(cut[name], sizes[name] - cut[name]) if stopping else sizes[name]
        if smallest < MIN_ATTACK_ROWS:
            raise StageError(
                f"{sizes[name]} {name} studies leave {smallest} to one membership attack, which needs "
                f"{MIN_ATTACK_ROWS}"
                + (" (the early-stopping and the confirming attack use disjoint halves)" if stopping else "")
            )

    def rows(name: str, confirming: bool) -> np.ndarray:
        chosen = order[name][: cut[name]] if confirming else order[name][cut[name] :]
        return np.sort(chosen[: cfg.max_members] if name == "members" else chosen)

    draws = {CONFIRMING: AttackDraw(CONFIRMING, cfg.seed + 1, cfg.seed, **{n: rows(n, True) for n in sizes})}
    if stopping:
        stop = AttackDraw(STOPPING, cfg.seed, cfg.seed, **{n: rows(n, False) for n in sizes})
        draws = {STOPPING: stop} | draws
    return draws


def membership_attack(
    members: np.ndarray, heldout: np.ndarray, forget: np.ndarray, cfg: VerifyConfig, seed: int | None = None
) -> AttackResult:
    """Fit members-vs-held-out on per-study features; score the forget set (see module docstring).
    ``seed`` (default ``cfg.seed``) seeds the folds and the bootstrap."""
    seed = cfg.seed if seed is None else seed
    x = np.concatenate([members, heldout])
    y = np.concatenate([np.ones(len(members), int), np.zeros(len(heldout), int)])
    folds = max(2, min(cfg.folds, len(heldout), len(members)))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    out_of_fold = cross_val_predict(_attack(), x, y, cv=cv, method="predict_proba")[:, 1]
    attack = _attack().fit(x, y)
    forget_scores = attack.predict_proba(forget)[:, 1]
    heldout_scores = out_of_fold[len(members) :]
    y_fh = np.concatenate([np.ones(len(forget_scores), int), np.zeros(len(heldout_scores), int)])
    s_fh = np.concatenate([forget_scores, heldout_scores])
    return AttackResult(
        power_auc=M.auroc(y, out_of_fold),
        forget_auc=M.auroc(y_fh, s_fh),
        forget_auc_ci=bootstrap_auc_ci(y_fh, s_fh, cfg.bootstrap_resamples, seed),
        forget_membership=float(np.mean(forget_scores >= 0.5)),
        heldout_membership=float(np.mean(heldout_scores >= 0.5)),
    )


def mean_pair_cosine(group: SplitEmbeddings, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """Per study, the mean cosine over the objective pairs it has (NaN if none)."""
    feats = pair_features(group, group, pairs, 1.0)[:, 0::3]
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.where(np.isnan(feats), np.nan, feats), axis=1) if feats.size else feats


def bootstrap_mean_diff(
    a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int
) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its percentile-bootstrap 95% CI (independent resampling of each side)."""
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not len(a) or not len(b):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(a), (n_resamples, len(a)))
    ib = rng.integers(0, len(b), (n_resamples, len(b)))
    diffs = a[ia].mean(axis=1) - b[ib].mean(axis=1)
    return float(a.mean() - b.mean()), float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


@dataclasses.dataclass
class ModelEmbeddings:
    """One model's embeddings of the four groups, and its logit scale (``exp`` of the stored log)."""

    members: SplitEmbeddings
    heldout: SplitEmbeddings
    forget: SplitEmbeddings
    pool: SplitEmbeddings
    logit_scale: float

    def take(self, draw: AttackDraw) -> ModelEmbeddings:
        """The draw's rows of members, held-out and pool; the whole forget set."""
        return dataclasses.replace(
            self,
            members=self.members.rows(draw.members),
            heldout=self.heldout.rows(draw.heldout),
            pool=self.pool.rows(draw.pool),
        )


def attack_on(
    model: ModelEmbeddings, pairs: Sequence[tuple[str, str]], cfg: VerifyConfig, seed: int | None = None
) -> AttackResult:
    """The attack on every row of ``model``'s groups (pass ``model.take(draw)`` and ``draw.seed``)."""
    feats = {
        name: pair_features(getattr(model, name), model.pool, pairs, model.logit_scale)
        for name in ("members", "heldout", "forget")
    }
    return membership_attack(feats["members"], feats["heldout"], feats["forget"], cfg, seed)


def attack_metrics(name: str, result: AttackResult) -> dict[str, float]:
    return {
        f"mia.{name}.attack_auc_members_vs_heldout": result.power_auc,
        f"mia.{name}.auc_forget_vs_heldout": result.forget_auc,
        f"mia.{name}.auc_forget_vs_heldout_ci_low": result.forget_auc_ci[0],
        f"mia.{name}.auc_forget_vs_heldout_ci_high": result.forget_auc_ci[1],
        f"mia.{name}.forget_predicted_member_rate": result.forget_membership,
        f"mia.{name}.heldout_predicted_member_rate": result.heldout_membership,
    }


def alignment_metrics(
    name: str,
    model: ModelEmbeddings,
    pairs: Sequence[tuple[str, str]],
    cfg: VerifyConfig,
    seed: int | None = None,
) -> dict[str, float]:
    diff, low, high = bootstrap_mean_diff(
        mean_pair_cosine(model.forget, pairs),
        mean_pair_cosine(model.heldout, pairs),
        cfg.bootstrap_resamples,
        cfg.seed if seed is None else seed,
    )
    return {
        f"alignment.{name}.forget_minus_heldout": diff,
        f"alignment.{name}.forget_minus_heldout_ci_low": low,
        f"alignment.{name}.forget_minus_heldout_ci_high": high,
    }


def forgetting_checks(
    metrics: dict[str, float], name: str, reference_auc: float, cfg: VerifyConfig
) -> dict[str, bool]:
    """The forget set looks unseen: attack AUC within tolerance of the reference, alignment no better."""
    diff = metrics[f"alignment.{name}.forget_minus_heldout"]
    return {
        "membership_inference": abs(metrics[f"mia.{name}.auc_forget_vs_heldout"] - reference_auc)
        <= cfg.mia_tolerance,
        "forget_alignment": not math.isnan(diff) and diff <= cfg.alignment_tolerance,
    }


def check_forgetting(
    model: ModelEmbeddings,
    pairs: Sequence[tuple[str, str]],
    cfg: VerifyConfig,
    reference_auc: float = 0.5,
    seed: int | None = None,
) -> Verification:
    """The cheap part of the verification on every row of ``model`` (attack + alignment, no original
    needed): the early-stopping criterion of the unlearning loop, on the stopping draw's rows. Same
    functions and tolerances as :func:`verify_unlearning`, which repeats them on the confirming draw."""
    m = attack_metrics("unlearned", attack_on(model, pairs, cfg, seed)) | alignment_metrics(
        "unlearned", model, pairs, cfg, seed
    )
    return Verification(m, forgetting_checks(m, "unlearned", reference_auc, cfg))


def verify_unlearning(
    original: ModelEmbeddings,
    unlearned: ModelEmbeddings,
    pairs: Sequence[tuple[str, str]],
    cfg: VerifyConfig,
    retrained: ModelEmbeddings | None = None,
    draw: AttackDraw | None = None,
) -> Verification:
    """Metrics and pass/fail checks (see module docstring). ``retrained`` is the gold standard when run.

    Membership inference and alignment run on ``draw`` (default: the confirming draw of
    :func:`attack_draws`, disjoint from the rows the early-stopping checks attacked); the retained
    retrieval checks use every member and held-out study."""
    if draw is None:
        draw = attack_draws(
            len(original.members.keys), len(original.heldout.keys), len(original.pool.keys), cfg
        )[CONFIRMING]
    models = {"original": original, "unlearned": unlearned} | (
        {"retrained": retrained} if retrained is not None else {}
    )
    drawn = {name: model.take(draw) for name, model in models.items()}
    m: dict[str, float] = {}
    attacks = {name: attack_on(model, pairs, cfg, draw.seed) for name, model in drawn.items()}
    for name, result in attacks.items():
        m.update(attack_metrics(name, result))
    reference = attacks["retrained"].forget_auc if retrained is not None else 0.5
    m["mia.reference_auc"] = reference
    for name in ("original", "unlearned"):
        m.update(alignment_metrics(name, drawn[name], pairs, cfg, draw.seed))
    checks = forgetting_checks(m, "unlearned", reference, cfg)

    for group in ("members", "heldout"):
        before = mean_r_at_1(getattr(original, group), pairs)
        after = mean_r_at_1(getattr(unlearned, group), pairs)
        label = "retained_train" if group == "members" else "test"
        m[f"retained.{label}.mean_r@1.original"] = before
        m[f"retained.{label}.mean_r@1.unlearned"] = after
        if retrained is not None:
            m[f"retained.{label}.mean_r@1.retrained"] = mean_r_at_1(getattr(retrained, group), pairs)
        checks[f"retained_{label}_retrieval"] = not math.isnan(after) and (
            math.isnan(before) or before - after <= cfg.retained_tolerance
        )
    return Verification(m, checks)
