"""The continual stage: distillation and weight ensembling behave as their papers define, a tiny task
sequence runs every method end to end, and a resumed run ends exactly like an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.config import load_config
from pipelines.continual import ContinualConfig, continual, load_start_model
from pipelines.continual_methods.distill import reference_distillation_loss
from pipelines.continual_methods.metrics import macro_auroc
from pipelines.continual_methods.replay import BUFFER_COLUMNS
from pipelines.continual_methods.tasks import TaskSpec, read_task_map, task_keys
from pipelines.continual_methods.training import method_parts
from pipelines.continual_methods.weights import l2_to_initial, wise_ft
from pipelines.data import ids
from pipelines.data.dataset import StudyDataset, more_views
from pipelines.errors import StageError
from pipelines.evaluation.embeddings import SplitEmbeddings
from pipelines.evaluation.metrics import binarise_labels
from pipelines.evaluation.task_sequence import zero_shot_probabilities
from pipelines.evaluation.tasks import ZeroShotTaskConfig
from pipelines.evaluation.zero_shot import TaskPrompts, ZeroShotScoringConfig, evaluate_task, task_prompts
from pipelines.training import TrainingSettings, embed_dataset, trainable_state
from tests.pipelines.processed_fixture import write_processed_dataset
from tests.pipelines.train_helpers import tiny_more_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_processed_dataset(tmp_path_factory.mktemp("processed") / "demo", n_studies=48)
    studies = pd.read_csv(root / "reports" / "manifest.csv")["study_id"].drop_duplicates()
    # Two tasks: even and odd studies (the processed demo gets its tasks from truth.csv the same way).
    tasks = pd.DataFrame({"study_id": studies, "task": [str(1 + int(s[2:]) % 2) for s in studies]})
    tasks.to_csv(root / "tasks.csv", index=False)
    return root


def _config(data_root: Path, tmp_path: Path, **overrides) -> ContinualConfig:
    tiny = tiny_more_config(data_root, tmp_path)
    per_task = {f.name for f in dataclasses.fields(TrainingSettings)}
    train = TrainingSettings(
        **{
            "views": tiny.views,
            "model": tiny.model,
            "objective": tiny.objective,
            "epochs": 1,
            "max_steps": 2,
            "batch_size": 8,
            "eval_batch_size": 16,
        }
        | {k: overrides.pop(k) for k in list(overrides) if k in per_task}
    )
    values = dict(
        data_root=str(data_root),
        train=train,
        start_from="scratch",
        tasks=[
            TaskSpec("even", {"task": "1"}, {"xray_findings": ["cardiomegaly"]}),
            TaskSpec("odd", {"task": "2"}, {"xray_findings": ["cardiomegaly"]}),
        ],
        task_map=str(data_root / "tasks.csv"),
        eval_split=["val", "test"],
        threads=1,
        checkpoint_dir=str(tmp_path / "ckpt"),
        bootstrap_resamples=50,
        register=False,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    values.update(overrides)
    cfg = ContinualConfig(**values)
    cfg.replay.capacity, cfg.replay.batch_size = 6, 4
    cfg.distill.reference_size, cfg.distill.batch_size, cfg.distill.max_sentences = 6, 4, 6
    return cfg


# --------------------------------------------------------------------------- pure pieces


def test_distillation_loss_is_zero_when_student_equals_teacher_and_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    inputs, texts = torch.randn(6, 16, generator=g), torch.randn(5, 16, generator=g)
    assert float(reference_distillation_loss(inputs, texts, inputs, texts, 0.05)) == pytest.approx(
        0.0, abs=1e-6
    )
    drifted = inputs + 0.5 * torch.randn(6, 16, generator=g)
    for direction in ("both", "a2b", "b2a"):
        assert float(reference_distillation_loss(drifted, texts, inputs, texts, 0.05, direction)) > 1e-3


def test_distillation_gradient_pulls_the_student_towards_the_teacher() -> None:
    g = torch.Generator().manual_seed(1)
    teacher_inputs, texts = torch.randn(6, 8, generator=g), torch.randn(4, 8, generator=g)
    student = (teacher_inputs + torch.randn(6, 8, generator=g)).requires_grad_(True)
    before = float(reference_distillation_loss(student, texts, teacher_inputs, texts, 0.1).detach())
    reference_distillation_loss(student, texts, teacher_inputs, texts, 0.1).backward()
    with torch.no_grad():
        student -= 0.5 * student.grad
    assert float(reference_distillation_loss(student, texts, teacher_inputs, texts, 0.1).detach()) < before


def test_wise_ft_alpha_zero_is_the_initial_model_and_one_the_finetuned() -> None:
    initial = {"w": torch.zeros(3), "b": torch.ones(2), "steps": torch.tensor(4)}
    tuned = {"w": torch.full((3,), 2.0), "b": torch.full((2,), 3.0), "steps": torch.tensor(9)}
    assert torch.equal(wise_ft(initial, tuned, 0.0)["w"], initial["w"])
    assert torch.equal(wise_ft(initial, tuned, 1.0)["b"], tuned["b"])
    half = wise_ft(initial, tuned, 0.5)
    assert torch.allclose(half["w"], torch.ones(3)) and torch.allclose(half["b"], torch.full((2,), 2.0))
    assert int(half["steps"]) == 9  # integer buffers are not interpolated
    with pytest.raises(ValueError):
        wise_ft(initial, tuned, 1.5)


def test_l2_pull_is_zero_at_the_initial_weights_and_grows_with_distance() -> None:
    layer = torch.nn.Linear(3, 2)
    initial = {k: v.detach().clone() for k, v in layer.named_parameters()}
    assert float(l2_to_initial(layer, initial).detach()) == 0.0
    with torch.no_grad():
        layer.weight += 1.0
    assert float(l2_to_initial(layer, initial).detach()) == pytest.approx(0.5 * 6)


def test_methods_combine_with_plus_and_unknown_parts_are_rejected() -> None:
    assert method_parts("replay+distill") == {"replay", "distill"}
    with pytest.raises(StageError, match="unknown"):
        method_parts("replay+magic")


def test_raw_task_map_is_hashed_like_preprocessing(tmp_path: Path) -> None:
    path = tmp_path / "truth.csv"
    pd.DataFrame({"mrn": ["MRN1", "MRN2"], "accession": ["ACC1", "ACC2"], "task": ["1", "2"]}).to_csv(
        path, index=False
    )
    mapping = read_task_map(path, salt="s3cret")
    assert mapping == {
        ids.study_id("MRN1", "ACC1", "s3cret"): "1",
        ids.study_id("MRN2", "ACC2", "s3cret"): "2",
    }


def test_tasks_select_studies_by_manifest_columns_or_the_task_map(data_root: Path) -> None:
    dataset = StudyDataset(data_root, "train", more_views())
    by_map = task_keys(dataset, TaskSpec("odd", {"task": "2"}), read_task_map(data_root / "tasks.csv"))
    assert by_map and all(int(k[2:]) % 2 == 1 for k in by_map)
    by_column = task_keys(dataset, TaskSpec("cardiomegaly", {"cardiomegaly": "1"}), None)
    assert by_column and all(dataset.view_row("radiology_report", k)["cardiomegaly"] == 1 for k in by_column)


def test_demo_config_file_loads() -> None:
    cfg = load_config(ContinualConfig, REPO / "configs" / "continual.yaml")
    assert cfg.compare_methods == ["finetune", "replay+distill"] and len(cfg.tasks) == 3


def _unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.normal(size=shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_zero_shot_r_entry_is_make_evaluates_macro_auroc_on_the_tasks_studies() -> None:
    rng = np.random.default_rng(0)
    n = 24
    labels = {
        "cardiomegaly": rng.choice([1.0, 0.0, np.nan, -1.0], size=n, p=[0.4, 0.4, 0.1, 0.1]),
        "pneumothorax": rng.choice([1.0, 0.0, np.nan], size=n, p=[0.3, 0.6, 0.1]),
    }
    present = np.ones(n, dtype=bool)
    present[[2, 9]] = False
    split = SplitEmbeddings(
        [f"st{i}" for i in range(n)],
        {"xray": _unit(rng, (n, 8))},
        {"xray": present},
        {"radiology_report": labels},
    )
    task = ZeroShotTaskConfig(view="xray", prompt_set="cxr_findings", labels_from="radiology_report")
    prompts = TaskPrompts(
        {k: _unit(rng, (3, 8)) for k in labels}, {k: _unit(rng, (2, 8)) for k in labels}, {}
    )
    rows = np.array([0, 2, 3, 5, 7, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23])
    findings = [("xray_findings", "cardiomegaly"), ("xray_findings", "pneumothorax")]
    probs = zero_shot_probabilities(
        split, rows, findings, {"xray_findings": task}, {"xray_findings": prompts}, 20.0
    )
    targets = np.full(probs.shape, np.nan)
    for c, (_, label) in enumerate(findings):
        y, keep, _ = binarise_labels(labels[label][rows])
        keep &= present[rows]
        targets[keep, c] = y[keep]
    reference = evaluate_task(
        split.rows(rows), None, task, prompts, 20.0, ZeroShotScoringConfig(bootstrap_resamples=20)
    )
    assert np.isfinite(probs).sum() == np.isfinite(targets).sum()
    assert macro_auroc(targets, probs) == pytest.approx(reference.result.macro["auroc"], abs=1e-12)
    for c, (_, label) in enumerate(findings):
        per_class = reference.result.per_class[label].metrics["auroc"]
        assert macro_auroc(targets[:, c], probs[:, c]) == pytest.approx(per_class, abs=1e-12)


# --------------------------------------------------------------------------- the stage


def test_r_matrix_start_row_equals_make_evaluates_figure_per_task(data_root: Path, tmp_path: Path) -> None:
    cfg = _config(data_root, tmp_path, methods="finetune", max_steps=1)
    (result,) = continual(cfg)
    summary = result.summary
    assert summary["measure"] == "zero_shot_auroc"
    # The same start model embedded and scored independently, through make evaluate's functions.
    model, _ = load_start_model(_config(data_root, tmp_path))
    dataset = StudyDataset(data_root, cfg.eval_split, cfg.views)
    feats, present = embed_dataset(model, dataset, cfg.views, 16, torch.device("cpu"))
    table = dataset.labels("radiology_report", ["cardiomegaly"])
    split = SplitEmbeddings(
        list(dataset.keys),
        {v: f.numpy().astype(np.float64) for v, f in feats.items()},
        {v: m.numpy() for v, m in present.items()},
        {"radiology_report": {"cardiomegaly": table["cardiomegaly"].to_numpy(dtype=float)}},
    )
    task = cfg.zero_shot_tasks["xray_findings"]
    prompts = task_prompts(model, task)
    prompts = TaskPrompts(
        {"cardiomegaly": prompts.positive["cardiomegaly"]}, {"cardiomegaly": prompts.negative["cardiomegaly"]}
    )
    task_map = read_task_map(cfg.task_map)
    position = {k: i for i, k in enumerate(dataset.keys)}
    for j, spec in enumerate(cfg.tasks):
        rows = np.array([position[k] for k in task_keys(dataset, spec, task_map)])
        figure = evaluate_task(
            split.rows(rows),
            None,
            task,
            prompts,
            float(model.logit_scale.detach().exp()),
            ZeroShotScoringConfig(),
        ).result.macro["auroc"]
        assert np.isfinite(figure)
        assert summary["start_row"][j] == pytest.approx(figure, abs=1e-9)
    assert 0.0 <= summary["zs_auroc_start"] <= 1.0
    assert (
        summary["zs_retention_delta_ci"][0]
        <= summary["zs_retention_delta"]
        <= summary["zs_retention_delta_ci"][1]
    )


def test_retrieval_remains_available_as_the_r_measure(data_root: Path, tmp_path: Path) -> None:
    (result,) = continual(
        _config(data_root, tmp_path, methods="finetune", max_steps=1, r_measure="retrieval")
    )
    assert result.summary["measure"] == "retrieval"
    assert all(0.0 <= v <= 1.0 for v in result.summary["start_row"])


def test_zero_shot_measure_needs_findings_per_task(data_root: Path, tmp_path: Path) -> None:
    cfg = _config(data_root, tmp_path, tasks=[TaskSpec("even", {"task": "1"})])
    with pytest.raises(StageError, match="findings"):
        continual(cfg)


def test_every_method_runs_the_sequence_and_writes_matrix_buffer_and_summary(
    data_root: Path, tmp_path: Path
) -> None:
    cfg = _config(data_root, tmp_path, compare_methods=["finetune", "replay+distill+wise+l2"])
    results = continual(cfg)
    assert [r.method for r in results] == ["finetune", "replay+distill+wise+l2"]
    for result in results:
        summary = json.loads((result.out_dir / "forgetting.json").read_text())
        assert len(summary["matrix"]) == 2 and all(len(row) == 2 for row in summary["matrix"])
        assert summary["bwt_ci"][0] <= summary["bwt"] <= summary["bwt_ci"][1]
        assert (result.out_dir / "matrix.png").stat().st_size > 0
        assert (result.out_dir / "task-1.pt").is_file() and (result.out_dir / "task-2.pt").is_file()
    assert results[0].buffer is None
    buffer = pd.read_csv(results[1].out_dir / "replay_buffer.csv", dtype=str)
    assert list(buffer.columns) == list(BUFFER_COLUMNS) and 0 < len(buffer) <= 6
    assert buffer["a_sample_id"].str.len().gt(0).all() and buffer["b_sample_id"].str.len().gt(0).all()


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(data_root: Path, tmp_path: Path) -> None:
    cfg = _config(data_root, tmp_path, methods="replay+distill")
    (full,) = continual(cfg)
    reference_state = trainable_state(full.model)
    reference_summary = json.loads((full.out_dir / "forgetting.json").read_text())
    reference_buffer = full.buffer.to_frame()
    # As if killed during task 2: only the checkpoint after task 1 survives.
    (full.out_dir / "task-2.pt").unlink()
    (resumed,) = continual(_config(data_root, tmp_path, methods="replay+distill", resume=True))
    state = trainable_state(resumed.model)
    assert state.keys() == reference_state.keys()
    for name, value in reference_state.items():
        assert torch.equal(state[name], value), name
    pd.testing.assert_frame_equal(resumed.buffer.to_frame(), reference_buffer)
    assert json.loads((resumed.out_dir / "forgetting.json").read_text()) == reference_summary
