"""Zero-shot prompt ensembling with unsupervised prompt weights (ZPE; Allingham et al. 2023, "A Simple
Zero-shot Prompt Weighting Technique to Improve Prompt Ensembling in Text-Image Models", Alg. 1).

Each prompt template ``p`` gives one text embedding per class ``c`` (for a finding: the positive and
the negative phrasing). Templates are scored on *unlabelled* test embeddings by how confidently the
model picks a class with them: ``score_p = mean_i max_c (l_icp - mean_x l_xcp)``, where ``l_icp`` is
the cosine logit of sample ``i``. Subtracting the per-(class, template) mean over a reference set
removes the template's "pretraining bias" (some phrasings score high for every input, which is
frequency, not evidence); the paper uses a sample of pretraining images and notes the test set itself
as the label-free fallback, which is our default. Weights are ``softmax(score / tau)`` over templates;
class embeddings are the weighted mean of template embeddings, re-normalised. Equal weights are the
``tau -> inf`` limit and the usual prompt ensemble (Radford et al. 2021), reported side by side.
"""

from __future__ import annotations

import numpy as np

from pipelines.evaluation.metrics import l2_normalise


def template_scores(
    embeddings: np.ndarray, text_embeddings: np.ndarray, reference: np.ndarray | None = None
) -> np.ndarray:
    """ZPE score per template.

    ``embeddings`` ``[N, D]`` unlabelled samples (normalised), ``text_embeddings`` ``[P, C, D]``
    (templates x classes), ``reference`` ``[M, D]`` for the bias correction (default: ``embeddings``).
    Returns ``[P]``.
    """
    x = l2_normalise(np.asarray(embeddings, dtype=np.float64))
    t = l2_normalise(np.asarray(text_embeddings, dtype=np.float64))
    if t.ndim != 3 or t.shape[-1] != x.shape[-1]:
        raise ValueError(f"text embeddings must be [templates, classes, {x.shape[-1]}], got {t.shape}")
    ref = x if reference is None else l2_normalise(np.asarray(reference, dtype=np.float64))
    logits = np.einsum("nd,pcd->pnc", x, t)
    bias = np.einsum("md,pcd->pc", ref, t) / ref.shape[0]
    return (logits - bias[:, None, :]).max(axis=2).mean(axis=1)


def zpe_weights(
    embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    reference: np.ndarray | None = None,
    temperature: float = 0.01,
) -> np.ndarray:
    """Softmax over template scores (``[P]``, sums to 1). Cosine logits live in [-1, 1], so the
    temperature is on that scale (0.01 corresponds to CLIP's logit scale of 100)."""
    scores = template_scores(embeddings, text_embeddings, reference) / temperature
    scores = scores - scores.max()
    w = np.exp(scores)
    return w / w.sum()


def weighted_class_embeddings(text_embeddings: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``[P, C, D]`` -> ``[C, D]``: weighted mean of normalised template embeddings, re-normalised.
    ``weights=None`` is the equal-weight ensemble."""
    t = l2_normalise(np.asarray(text_embeddings, dtype=np.float64))
    w = np.full(t.shape[0], 1.0 / t.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (t.shape[0],):
        raise ValueError(f"{w.size} weights for {t.shape[0]} templates")
    return l2_normalise(np.einsum("p,pcd->cd", w, t))
