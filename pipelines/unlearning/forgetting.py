"""What unlearning measures on a model while and after it forgets: embeddings of the verification groups
and the early-stopping check (membership inference and forget-set alignment on the current model, on
the stopping draw: the final verification attacks the disjoint confirming draw)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from encoders import MultimodalModel
from pipelines.data.dataset import StudyDataset
from pipelines.errors import StageError
from pipelines.evaluation.embeddings import SplitEmbeddings
from pipelines.training import TrainConfig, embed_dataset
from pipelines.unlearning import resolve
from pipelines.unlearning.methods import StudySubset, materialise
from pipelines.unlearning.verify import (
    STOPPING,
    AttackDraw,
    ModelEmbeddings,
    Verification,
    VerifyConfig,
    attack_draws,
    check_forgetting,
)


def split_embeddings(
    model: MultimodalModel, dataset: Any, cfg: TrainConfig, device: torch.device
) -> SplitEmbeddings:
    feats, present = embed_dataset(model, dataset, cfg.views, cfg.eval_batch_size, device)
    return SplitEmbeddings(
        list(dataset.keys),
        {v: f.numpy().astype(np.float64) for v, f in feats.items()},
        {v: m.numpy().astype(bool) for v, m in present.items()},
    )


def model_embeddings(
    model: MultimodalModel, groups: dict[str, Any], cfg: TrainConfig, device: torch.device
) -> ModelEmbeddings:
    model = model.to(device).eval()
    out = {name: split_embeddings(model, data, cfg, device) for name, data in groups.items()}
    return ModelEmbeddings(logit_scale=float(model.logit_scale.detach().exp()), **out)


def objective_pairs(cfg: TrainConfig) -> list[tuple[str, str]]:
    return [(p.a, p.b) for p in cfg.objective.pairs]


class ForgettingCheck:
    """The early-stopping criterion: the cheap part of the verification (membership inference and
    forget-set alignment, :func:`check_forgetting`) on the model being unlearned, on the stopping
    ``draw`` alone (default: the stopping draw of :func:`attack_draws`). Only that draw's members,
    held-out and pool studies are embedded, so no check ever sees a row of the confirming draw that
    the final verification attacks afresh."""

    def __init__(
        self,
        groups: dict[str, Any],
        train_cfg: TrainConfig,
        device: torch.device,
        verify_cfg: VerifyConfig,
        reference_auc: float,
        draw: AttackDraw | None = None,
    ) -> None:
        if draw is None:
            sizes = (len(groups[name]) for name in ("members", "heldout", "pool"))
            draw = attack_draws(*sizes, verify_cfg)[STOPPING]
        self.draw = draw
        self.groups = {
            "members": StudySubset(groups["members"], draw.members),
            "heldout": StudySubset(groups["heldout"], draw.heldout),
            "pool": StudySubset(groups["pool"], draw.pool),
            "forget": groups["forget"],
        }
        self.train_cfg, self.device = train_cfg, device
        self.verify_cfg, self.reference_auc = verify_cfg, reference_auc

    def __call__(self, model: MultimodalModel, step: int) -> tuple[bool, dict[str, float]]:
        embeddings = model_embeddings(model, self.groups, self.train_cfg, self.device)
        result = check_forgetting(
            embeddings, objective_pairs(self.train_cfg), self.verify_cfg, self.reference_auc, self.draw.seed
        )
        return result.passed, check_figures(result)


def check_figures(result: Verification) -> dict[str, float]:
    """One early-stopping check's figures as logged per check (``unlearn.check.*``)."""
    m = result.metrics
    figures = {
        "mia_auc_forget_vs_heldout": m["mia.unlearned.auc_forget_vs_heldout"],
        "mia_auc_forget_vs_heldout_ci_low": m["mia.unlearned.auc_forget_vs_heldout_ci_low"],
        "mia_auc_forget_vs_heldout_ci_high": m["mia.unlearned.auc_forget_vs_heldout_ci_high"],
        "mia_attack_auc_members_vs_heldout": m["mia.unlearned.attack_auc_members_vs_heldout"],
        "alignment_forget_minus_heldout": m["alignment.unlearned.forget_minus_heldout"],
    }
    return figures | {f"{k}_passed": float(v) for k, v in result.checks.items()}


def forget_items(
    train_cfg: TrainConfig, table: pd.DataFrame, resolution: resolve.Resolution
) -> list[dict[str, Any]]:
    """The withdrawn training studies as loader items, read before the purge removes them."""
    new = set().union(*resolution.new_sample_ids.values()) if resolution.new_sample_ids else set()
    others = set(table["sample_id"]) - new
    try:
        dataset = StudyDataset(
            train_cfg.data_root, "train", train_cfg.views, key=train_cfg.key, exclude_sample_ids=others
        )
    except StageError:
        return []
    return materialise(dataset)
