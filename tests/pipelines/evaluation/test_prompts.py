"""Prompt sets and zero-shot scoring helpers (pipelines/evaluation/prompts.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.data.reports import load_vocabulary
from pipelines.errors import StageError
from pipelines.evaluation.prompts import (
    ensemble,
    load_prompt_set,
    multiclass_probabilities,
    pair_probabilities,
)


@pytest.mark.parametrize("name", ["cxr_findings", "ecg_diagnoses"])
def test_packaged_sets_use_vocabulary_labels_with_several_prompts_each(name):
    prompts = load_prompt_set(name)
    vocab = load_vocabulary()
    assert prompts.version and len(prompts.sha256) == 64
    assert prompts.labels and all(label in vocab for label in prompts.labels)
    for label in prompts.labels:
        positives, negatives = prompts.texts_for(label)
        assert len(positives) >= 3 and len(negatives) >= 3
        assert not set(positives) & set(negatives)


def test_sets_cover_the_demo_labels():
    from pipelines.demo.ecg import ECG_CODES
    from pipelines.demo.reports import XRAY_FINDINGS

    assert set(XRAY_FINDINGS) <= set(load_prompt_set("cxr_findings").labels)
    assert set(ECG_CODES) <= set(load_prompt_set("ecg_diagnoses").labels)


def test_every_public_dataset_xray_label_has_prompts():
    """CheXpert/MIMIC-CXR and NIH ChestX-ray14 label columns can all be scored zero-shot."""
    from pipelines.data.adapters._common import label_map

    mapping = label_map("cxr_findings")
    ours = set(mapping["chexpert"].values()) | {name for names in mapping["nih"].values() for name in names}
    assert ours <= set(load_prompt_set("cxr_findings").labels)


def test_templates_are_filled_with_display_words():
    positives, negatives = load_prompt_set("cxr_findings").texts_for("pleural_effusion")
    assert "findings consistent with pleural effusion" in positives
    assert "there is pleural effusion" in positives
    # Negatives describe a normal study (no placeholder), the same for every templated finding.
    assert "normal chest radiograph" in negatives and not any("{" in text for text in negatives)
    assert negatives == load_prompt_set("cxr_findings").texts_for("edema")[1]


def test_generic_set_applies_templates_to_given_labels():
    prompts = load_prompt_set("speech_intents").with_labels(["turn_on_lights"])
    positives, _ = prompts.texts_for("turn_on_lights")
    assert "turn on lights" in positives and "a request to turn on lights" in positives


def test_xray_findings_is_another_name_of_the_cxr_set_and_params_identify_it():
    prompts = load_prompt_set("xray_findings")
    assert prompts.sha256 == load_prompt_set("cxr_findings").sha256
    params = prompts.mlflow_params("xray.")
    assert params == {
        "xray.prompt_set": "cxr_findings",
        "xray.prompt_set_version": prompts.version,
        "xray.prompt_set_sha256": prompts.sha256,
    }


def test_set_from_a_file_and_its_hash_follows_content(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        'version: "2"\ntemplates: {positive: ["{display}"], negative: ["no {display}"]}\nlabels: {edema: {}}\n'
    )
    first = load_prompt_set(path)
    assert first.labels == ["edema"] and first.texts_for("edema") == (
        ["pulmonary edema"],
        ["no pulmonary edema"],
    )
    path.write_text(path.read_text().replace('"2"', '"3"'))
    assert load_prompt_set(path).sha256 != first.sha256


def test_unknown_label_or_set_is_a_readable_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text('version: "1"\ntemplates: {positive: ["{display}"]}\nlabels: {broken_bone: {}}\n')
    with pytest.raises(StageError, match="broken_bone"):
        load_prompt_set(path)
    with pytest.raises(StageError, match="no prompt set named"):
        load_prompt_set("no_such_set")


def test_ensemble_of_identical_embeddings_is_that_embedding_normalised():
    e = np.array([3.0, 4.0, 0.0])
    np.testing.assert_allclose(ensemble(np.stack([e, e, 2 * e])), e / 5.0)


def test_ensemble_is_unit_norm_and_weights_templates_equally_whatever_their_norm():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 8))
    out = ensemble(emb * rng.uniform(0.1, 10, size=(5, 1)))
    assert np.linalg.norm(out) == pytest.approx(1.0)
    normalised = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    np.testing.assert_allclose(out, normalised.mean(0) / np.linalg.norm(normalised.mean(0)))


def test_pair_probabilities_sum_to_one_and_match_a_hand_computation():
    x = np.array([[1.0, 0.0], [0.6, 0.8]])
    pos, neg = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    p = pair_probabilities(x, pos, neg, logit_scale=10.0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # row 0: cos = (1, 0) -> softmax(10, 0); row 1: cos = (0.6, 0.8) -> sigmoid(10 * (0.6 - 0.8))
    assert p[0, 0] == pytest.approx(np.exp(10) / (np.exp(10) + 1))
    assert p[1, 0] == pytest.approx(1 / (1 + np.exp(2.0)))


def test_multiclass_probabilities_are_a_softmax_over_classes():
    x = np.array([[0.0, 2.0]])
    classes = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    p = multiclass_probabilities(x, classes, logit_scale=2.0)
    expected = np.exp([0.0, 2.0, 0.0]) / np.exp([0.0, 2.0, 0.0]).sum()
    np.testing.assert_allclose(p[0], expected)


def test_torch_inputs_give_torch_outputs_equal_to_the_numpy_results_and_keep_gradients():
    rng = np.random.default_rng(1)
    templates, x = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    pos, neg = ensemble(templates[:2]), ensemble(templates[2:])
    t_templates = torch.tensor(templates, dtype=torch.float32, requires_grad=True)
    t_pos, t_neg = ensemble(t_templates[:2]), ensemble(t_templates[2:])
    assert isinstance(t_pos, torch.Tensor) and t_pos.dtype == torch.float32
    np.testing.assert_allclose(t_pos.detach().numpy(), pos, rtol=1e-5)
    scale = torch.tensor(5.0, requires_grad=True)
    p = pair_probabilities(torch.tensor(x, dtype=torch.float32), t_pos, t_neg, scale)
    np.testing.assert_allclose(p.detach().numpy(), pair_probabilities(x, pos, neg, 5.0), rtol=1e-5)
    p[:, 0].sum().backward()
    assert t_templates.grad is not None and scale.grad is not None
    q = multiclass_probabilities(torch.tensor(x[0]), torch.tensor(templates), 3.0)
    assert q.shape == (1, 4)
    np.testing.assert_allclose(q.numpy(), multiclass_probabilities(x[:1], templates, 3.0))


def test_ensemble_rejects_an_empty_template_list():
    with pytest.raises(ValueError, match="n_templates"):
        ensemble(np.zeros((0, 4)))
