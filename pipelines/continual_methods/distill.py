"""ZSCL-style reference distillation (Zheng et al. 2023, "Preventing Zero-Shot Transfer Degradation in
Continual Learning of Vision-Language Models", Sec. 3.2, Eq. 2-4).

A frozen copy of the starting model (the teacher) and an unlabeled reference set: inputs of the
non-text towers (X-rays, ECGs) and reference sentences (the zero-shot prompt texts). On every step the
student's similarity distribution between reference inputs and sentences is pulled towards the
teacher's, in both directions:

    p_T(i, .) = softmax_j(cos(x_i^T, t_j^T) / tau),  p_S(i, .) likewise with the student's features
    L = KL(p_T || p_S) over rows (input -> sentences) + the same over columns (sentence -> inputs)

which keeps the geometry that zero-shot classification relies on without any label.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from encoders import MultimodalModel
from pipelines.data.dataset import StudyDataset, ViewSpec, collate_studies
from pipelines.evaluation.prompts import load_prompt_set
from pipelines.training import ViewEncoder, move_batch


def similarity_kl(
    student_a: torch.Tensor,
    student_b: torch.Tensor,
    teacher_a: torch.Tensor,
    teacher_b: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Mean over rows of KL(teacher || student) of ``softmax(a @ b.T / temperature)``; [N, D] x [M, D]."""
    student_logits = F.normalize(student_a.float(), dim=-1) @ F.normalize(student_b.float(), dim=-1).T
    teacher_logits = F.normalize(teacher_a.float(), dim=-1) @ F.normalize(teacher_b.float(), dim=-1).T
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def reference_distillation_loss(
    student_inputs: torch.Tensor,
    student_texts: torch.Tensor,
    teacher_inputs: torch.Tensor,
    teacher_texts: torch.Tensor,
    temperature: float = 0.05,
    direction: str = "both",
) -> torch.Tensor:
    """ZSCL's distillation term: input->sentence (rows) and sentence->input (columns) KLs, averaged.

    Zero when the student's features equal the teacher's; ``direction`` in {both, a2b, b2a}.
    """
    terms = []
    if direction in ("both", "a2b"):
        terms.append(similarity_kl(student_inputs, student_texts, teacher_inputs, teacher_texts, temperature))
    if direction in ("both", "b2a"):
        terms.append(similarity_kl(student_texts, student_inputs, teacher_texts, teacher_inputs, temperature))
    if not terms:
        raise ValueError(f"direction must be both, a2b or b2a, got {direction!r}")
    return torch.stack(terms).mean()


@dataclasses.dataclass
class DistillConfig:
    weight: float = 1.0
    temperature: float = dataclasses.field(default=0.05, metadata={"help": "softmax temperature of cosines"})
    direction: Literal["both", "a2b", "b2a"] = "both"
    views: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"xray": "cxr_findings", "ecg": "ecg_diagnoses"},
        metadata={"help": "reference view -> prompt set whose sentences are the reference texts"},
    )
    reference_split: str = dataclasses.field(
        default="train", metadata={"help": "unlabeled reference inputs are drawn from this split"}
    )
    reference_size: int = 64
    batch_size: int = 8
    max_sentences: int = dataclasses.field(default=24, metadata={"help": "reference sentences per step"})


@dataclasses.dataclass
class ReferenceSet:
    """ZSCL's unlabeled reference data: items per reference view, teacher features of inputs and sentences."""

    items: dict[str, list[dict[str, Any]]]
    sentences: dict[str, list[str]]
    teacher_sentences: dict[str, torch.Tensor]


def build_reference_set(
    cfg: DistillConfig,
    all_views: dict[str, ViewSpec],
    data_root: str,
    key: str,
    seed: int,
    teacher: MultimodalModel,
) -> ReferenceSet:
    """Reference inputs (``cfg.reference_size`` per reference view, seeded) and the teacher's features
    of every sentence of the view's prompt set."""
    views = {v: all_views[v] for v in cfg.views}
    dataset = StudyDataset(data_root, cfg.reference_split, views, key=key)
    rng = np.random.default_rng(seed + 17)
    items: dict[str, list[dict[str, Any]]] = {}
    sentences: dict[str, list[str]] = {}
    teacher_sentences: dict[str, torch.Tensor] = {}
    for view, prompt_name in cfg.views.items():
        have = [i for i, k in enumerate(dataset.keys) if dataset.view_row(view, k) is not None]
        chosen = sorted(rng.choice(have, size=min(cfg.reference_size, len(have)), replace=False).tolist())
        items[view] = [{**dataset[i], **{v: None for v in views if v != view}} for i in chosen]
        prompt_set = load_prompt_set(prompt_name)
        texts = sorted(
            {t for label in prompt_set.labels for side in prompt_set.texts_for(label) for t in side}
        )
        sentences[view] = texts
        with torch.no_grad():
            teacher_sentences[view] = teacher.encode("text", texts).float()
    return ReferenceSet(items, sentences, teacher_sentences)


def distillation_term(
    model: MultimodalModel,
    teacher: MultimodalModel,
    reference: ReferenceSet,
    cfg: DistillConfig,
    views: dict[str, ViewSpec],
    rng: np.random.Generator,
    device: torch.device,
) -> torch.Tensor:
    """ZSCL loss on one reference mini-batch per reference view (inputs and sentences sampled by ``rng``)."""
    terms = []
    for view, pool in reference.items.items():
        if len(pool) < 2:
            continue
        picks = rng.choice(len(pool), size=min(cfg.batch_size, len(pool)), replace=False)
        chosen = [
            reference.sentences[view][i]
            for i in sorted(
                rng.choice(
                    len(reference.sentences[view]),
                    size=min(cfg.max_sentences, len(reference.sentences[view])),
                    replace=False,
                )
            )
        ]
        sentence_rows = torch.tensor([reference.sentences[view].index(s) for s in chosen])
        batch = move_batch(
            collate_studies([pool[int(i)] for i in sorted(picks)], {view: views[view]}), device
        )
        student_inputs = ViewEncoder(model, {view: views[view]})(batch)[0][view]
        with torch.no_grad():
            teacher_inputs = ViewEncoder(teacher, {view: views[view]})(batch)[0][view]
        student_texts = model.encode("text", chosen)
        teacher_texts = reference.teacher_sentences[view][sentence_rows].to(device)
        terms.append(
            reference_distillation_loss(
                student_inputs,
                student_texts,
                teacher_inputs,
                teacher_texts,
                cfg.temperature,
                cfg.direction,
            )
        )
    return torch.stack(terms).mean() if terms else torch.zeros((), device=device)


def frozen_copy(model: MultimodalModel) -> MultimodalModel:
    """The teacher: a copy of the starting model in eval mode, no parameter trainable."""
    teacher = copy.deepcopy(model).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher
