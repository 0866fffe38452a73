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

import torch
import torch.nn.functional as F


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
