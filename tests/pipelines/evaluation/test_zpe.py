"""Specification of zero-shot prompt weighting (Allingham et al. 2023)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.zpe import template_scores, weighted_class_embeddings, zpe_weights


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _setup(seed: int = 0):
    rng = np.random.default_rng(seed)
    d = 16
    class_dirs = _unit(rng.normal(size=(2, d)))
    labels = rng.integers(0, 2, 200)
    samples = _unit(class_dirs[labels] + 0.3 * rng.normal(size=(200, d)))
    good = class_dirs
    noise = _unit(rng.normal(size=(2, d)))  # a template unrelated to the classes
    return samples, labels, np.stack([good, noise])


def test_informative_template_scores_above_an_unrelated_one():
    samples, _, text = _setup()
    scores = template_scores(samples, text)
    assert scores[0] > scores[1]
    w = zpe_weights(samples, text, temperature=0.01)
    assert w.sum() == pytest.approx(1.0) and w[0] > 0.9


def test_bias_correction_ranks_an_uninformative_but_high_scoring_template_last():
    # Samples share a strong common direction (all chest X-rays look alike) plus a small class part.
    # A generic template ("a chest x-ray" / "a chest x-ray.") matches the common direction, so its raw
    # logits are high for every sample; only after subtracting the reference mean does the
    # class-specific template win.
    rng = np.random.default_rng(1)
    d = 16
    centre = _unit(rng.normal(size=d))
    class_dirs = _unit(rng.normal(size=(2, d)))
    labels = rng.integers(0, 2, 300)
    samples = _unit(3 * centre + 0.5 * class_dirs[labels] + 0.1 * rng.normal(size=(300, d)))
    generic = _unit(centre + 0.01 * rng.normal(size=(2, d)))
    text = np.stack([class_dirs, generic])
    raw = np.einsum("nd,pcd->pnc", samples, text).max(2).mean(1)
    assert raw[1] > raw[0]
    scores = template_scores(samples, text)
    assert scores[0] > scores[1]


def test_infinite_temperature_gives_equal_weights_and_the_plain_ensemble():
    samples, _, text = _setup(2)
    w = zpe_weights(samples, text, temperature=1e9)
    assert w == pytest.approx([0.5, 0.5])
    assert weighted_class_embeddings(text, w) == pytest.approx(weighted_class_embeddings(text))


def test_weighted_embeddings_are_unit_norm_and_follow_the_weights():
    _, _, text = _setup(3)
    emb = weighted_class_embeddings(text, np.array([1.0, 0.0]))
    assert np.linalg.norm(emb, axis=1) == pytest.approx([1.0, 1.0])
    assert emb == pytest.approx(_unit(text[0]))


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="templates, classes"):
        template_scores(np.ones((3, 4)), np.ones((2, 4)))
