"""Zero-shot evaluation of a registered model version: ``evaluate`` (metrics to MLflow) and ``report``
(the same, plus the self-contained HTML report under ``reports/`` logged as an artifact).

Loads ``model_name@model_ref`` (default the ``champion`` alias, falling back to the latest version),
embeds the processed test split (validation split for thresholds and temperature, train split for the
linear probe), and computes per-finding zero-shot AUROC / AUPRC / F1 / sensitivity / specificity with
bootstrap 95% CIs, calibration (ECE before/after temperature scaling), cross-modal retrieval R@1/5/10
both directions, the modality gap, a linear probe, equal-weight vs ZPE prompt ensembles, and the same
zero-shot metrics for an untrained model of the same architecture (chance floor) and the champion.
Metric names: ``zs_auroc_macro``, ``zs_auroc_macro_ci_low``, ``zs_auroc.<label>``, ... (one prefix per
task after the first: ``<task>.zs_...``), ``r@1.xray->radiology_report``, ``ece.<label>``.
The evaluated model version gets the tag ``eval_run_id``, and the fitted classifiers (prompt weights,
temperatures) travel with it: the served model scores with exactly what this evaluation judged.
``report`` also writes the registered model's and the version's MLflow descriptions: headline metrics,
what the model can and cannot detect, and where the report is (file and run artifact).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.data import registry
from pipelines.data.dataset import StudyDataset, ViewSpec, more_views
from pipelines.errors import StageError
from pipelines.evaluation.embeddings import SplitEmbeddings, embed_split
from pipelines.evaluation.retrieval import parse_pair, retrieval_and_gap
from pipelines.evaluation.tasks import (
    ZeroShotTaskConfig,
    default_zero_shot_tasks,
    resolve_classes,
    resolve_label_sources,
)
from pipelines.evaluation.zero_shot import (
    ZeroShotScoringConfig,
    evaluate_tasks,
    linear_probe_rows,
    task_metric_names,
)
from pipelines.training import resolve_device


@dataclasses.dataclass
class EvaluateConfig:
    model_name: str = dataclasses.field(default="morE-cxr-ecg-report", metadata={"help": "registered model"})
    model_ref: str = dataclasses.field(
        default="champion", metadata={"help": "alias or version number; champion falls back to latest"}
    )
    data_root: str = "data/processed/demo"
    split: str = dataclasses.field(default="test", metadata={"help": "split evaluated"})
    val_split: str = dataclasses.field(
        default="val", metadata={"help": "split for thresholds and temperature"}
    )
    train_split: str = dataclasses.field(default="train", metadata={"help": "split for the linear probe"})
    key: str = "study_id"
    views: dict[str, ViewSpec] = dataclasses.field(default_factory=more_views)
    tasks: dict[str, ZeroShotTaskConfig] = dataclasses.field(default_factory=default_zero_shot_tasks)
    retrieval_pairs: list[str] = dataclasses.field(
        default_factory=lambda: ["xray:radiology_report", "ecg:cardiology_report", "xray:ecg"],
        metadata={"help": "view pairs a:b for retrieval and modality gap"},
    )
    scoring: ZeroShotScoringConfig = dataclasses.field(default_factory=ZeroShotScoringConfig)
    linear_probe: bool = True
    baselines: bool = dataclasses.field(default=True, metadata={"help": "also evaluate untrained + champion"})
    explain_examples: int = 2
    batch_size: int = 64
    max_speech_s: float = dataclasses.field(
        default=2.0,
        metadata={"help": "speech is cropped/padded from its start to this length (as in training)"},
    )
    device: str = "auto"
    tracking_uri: str | None = None
    experiment: str = "evaluate"
    report_dir: str = "reports"

    def __post_init__(self) -> None:
        for name, task in self.tasks.items():
            if task.view not in self.views:
                raise ValueError(f"task {name}: view {task.view!r} is not one of views {sorted(self.views)}")
        for pair in self.retrieval_pairs:
            parse_pair(pair)
        if self.batch_size < 1 or self.max_speech_s <= 0 or self.explain_examples < 0:
            raise ValueError("batch_size >= 1, max_speech_s > 0 and explain_examples >= 0 are required")


# --------------------------------------------------------------------------- data and model


def _load_model(cfg: EvaluateConfig, ref: str) -> tuple[Any, Any]:
    from pipelines.registry import load_model_version

    try:
        return load_model_version(cfg.model_name, ref, tracking_uri=cfg.tracking_uri)
    except Exception as err:  # the registry raises its own types; champion may simply not be set yet
        if ref != "champion":
            raise StageError(f"cannot load model {cfg.model_name}@{ref}: {err}") from err
        print(f"no {cfg.model_name}@champion ({err}); evaluating the latest version")
        try:
            return load_model_version(cfg.model_name, "latest", tracking_uri=cfg.tracking_uri)
        except Exception as err2:
            raise StageError(f"cannot load model {cfg.model_name} (champion or latest): {err2}") from err2


def _max_speech_samples(cfg: EvaluateConfig) -> int:
    """``max_speech_s`` in samples at the data's speech rate (preprocessing's ``normalisation.json``)."""
    return int(cfg.max_speech_s * (registry.sample_rate_hz("speech", cfg.data_root) or 0))


def _dataset(cfg: EvaluateConfig, split: str) -> StudyDataset:
    max_samples = _max_speech_samples(cfg)
    return StudyDataset(cfg.data_root, split, cfg.views, key=cfg.key, max_speech_samples=max_samples)


def with_classes(cfg: EvaluateConfig) -> EvaluateConfig:
    """``cfg`` with every multi-class task's classes resolved (prompt set, else the data's values), and
    with only the views ``data_root`` holds: without reports, tasks take header diagnosis codes."""
    tasks, views = resolve_label_sources(cfg.tasks, cfg.views, cfg.data_root)
    pairs = [p for p in cfg.retrieval_pairs if set(parse_pair(p)) <= set(views)]
    cfg = dataclasses.replace(cfg, tasks=tasks, views=views, retrieval_pairs=pairs)
    splits = list(dict.fromkeys((cfg.train_split, cfg.val_split, cfg.split)))
    tasks = resolve_classes(cfg.tasks, lambda: (_dataset(cfg, s) for s in splits), cfg.data_root)
    return dataclasses.replace(cfg, tasks=tasks)


def _embed(model: Any, cfg: EvaluateConfig, split: str) -> SplitEmbeddings:
    device = resolve_device(cfg.device)
    return embed_split(model, _dataset(cfg, split), cfg.views, cfg.tasks.values(), cfg.batch_size, device)


# --------------------------------------------------------------------------- evaluation


def evaluate_model(model: Any, cfg: EvaluateConfig, full: bool) -> dict[str, Any]:
    """Everything about one model: metrics (MLflow names) and, when ``full``, the report pieces."""
    cfg = with_classes(cfg)
    test, val = _embed(model, cfg, cfg.split), _embed(model, cfg, cfg.val_split)
    tasks = evaluate_tasks(model, cfg.tasks, test, val, cfg.scoring)
    metrics: dict[str, float] = {}
    for i, (name, tr) in enumerate(tasks.items()):
        metrics.update(task_metric_names(name, i == 0, tr))
    retrieval, retrieval_rows, gap_rows = retrieval_and_gap(test, cfg.retrieval_pairs)
    metrics.update(retrieval)
    out: dict[str, Any] = {"metrics": metrics, "tasks": tasks, "test": test}
    if not full:
        return out
    chosen = cfg.scoring.prompt_weighting
    other = "zpe" if chosen == "equal" else "equal"
    alternative = evaluate_tasks(model, cfg.tasks, test, val, cfg.scoring, other)
    out["prompt_weighting"] = [
        {
            "task": name,
            f"{chosen} weights: macro AUROC": tasks[name].result.macro["auroc"],
            f"{other} weights: macro AUROC": alternative[name].result.macro["auroc"],
        }
        for name in tasks
    ]
    out["retrieval_rows"], out["gap_rows"] = retrieval_rows, gap_rows
    if cfg.linear_probe:
        train = _embed(model, cfg, cfg.train_split)
        out["linear_probe"], probe_metrics = linear_probe_rows(train, test, cfg.tasks, tasks, cfg.scoring)
        metrics.update(probe_metrics)
    return out


def _untrained_like(model: Any, seed: int) -> Any:
    import torch

    torch.manual_seed(seed)
    fresh = type(model)(model.config)
    fresh.eval()
    return fresh


def _baseline_row(name: str, metrics: Mapping[str, float]) -> dict[str, Any]:
    row = {
        "model": name,
        "zero-shot macro AUROC": metrics.get("zs_auroc_macro", math.nan),
        "95% CI": (
            metrics.get("zs_auroc_macro_ci_low", math.nan),
            metrics.get("zs_auroc_macro_ci_high", math.nan),
        ),
        "macro AUPRC": metrics.get("zs_auprc_macro", math.nan),
        "macro F1": metrics.get("zs_f1_macro", math.nan),
    }
    if "zs_accuracy" in metrics:
        row["top-1 accuracy"] = metrics["zs_accuracy"]
        row["accuracy 95% CI"] = (
            metrics.get("zs_accuracy_ci_low", math.nan),
            metrics.get("zs_accuracy_ci_high", math.nan),
        )
    return row


def _baseline_rows(
    cfg: EvaluateConfig, model: Any, version: Any, evaluation: Mapping[str, Any]
) -> tuple[list[dict], dict[str, float]]:
    """The evaluated model beside an untrained one of the same architecture (chance floor), chance
    for a multi-class task, and the champion when another version is evaluated."""
    rows = [_baseline_row(f"{cfg.model_name} v{_number(version)} (evaluated)", evaluation["metrics"])]
    untrained = evaluate_model(_untrained_like(model, cfg.scoring.seed), cfg, full=False)["metrics"]
    rows.append(_baseline_row("untrained, same architecture (chance floor)", untrained))
    extra = {f"baseline_untrained.{k}": v for k, v in untrained.items() if k.startswith("zs_")}
    if "zs_accuracy" in evaluation["metrics"]:
        n_classes = len(next(t for t in evaluation["tasks"].values() if t.multiclass).multiclass.classes)
        rows.append({"model": f"chance (1 of {n_classes} classes)", "top-1 accuracy": 1.0 / n_classes})
    if cfg.model_ref != "champion":
        try:
            champion, champion_version = _load_model(cfg, "champion")
        except StageError:
            return rows, extra
        if _number(champion_version) != _number(version):
            champ = evaluate_model(champion, cfg, full=False)["metrics"]
            rows.append(_baseline_row(f"champion v{champion_version.version}", champ))
            extra.update({f"baseline_champion.{k}": v for k, v in champ.items() if k.startswith("zs_")})
    return rows, extra


def _number(version: Any) -> str:
    return str(getattr(version, "version", "?"))


def _headline(cfg: EvaluateConfig, version: Any, metrics: Mapping[str, float]) -> str:
    text = (
        f"{cfg.model_name} v{_number(version)}: zero-shot macro AUROC {metrics.get('zs_auroc_macro', math.nan):.3f} "
        f"(95% CI {metrics.get('zs_auroc_macro_ci_low', math.nan):.3f}-"
        f"{metrics.get('zs_auroc_macro_ci_high', math.nan):.3f})"
    )
    if "zs_accuracy" in metrics:
        text += (
            f"; top-1 accuracy {metrics['zs_accuracy']:.3f} (95% CI {metrics['zs_accuracy_ci_low']:.3f}-"
            f"{metrics['zs_accuracy_ci_high']:.3f})"
        )
    return text


def _report(
    cfg: EvaluateConfig, model: Any, version: Any, run_id: str, evaluation: Mapping[str, Any], baselines: list
) -> tuple[Path, dict[str, Any]]:
    from pipelines.evaluation.explain import explanation_examples
    from pipelines.evaluation.report import evaluation_context, render_report
    from pipelines.evaluation.tasks import task_prompt_texts

    explanations = {}
    if cfg.explain_examples:
        directions = {name: tr.directions for name, tr in evaluation["tasks"].items()}
        dataset = _dataset(cfg, cfg.split)
        explanations = explanation_examples(
            model, dataset, cfg.views, cfg.tasks, directions, cfg.explain_examples, cfg.scoring.seed
        )
    modalities = {spec.modality for spec in cfg.views.values()} | {"raw"}
    cards = [
        card
        for card in sorted(Path("data_cards").glob(f"{Path(cfg.data_root).name}-*.md"))
        if card.stem.rsplit("-", 1)[-1] in modalities
    ]
    shown = {
        "name": cfg.model_name,
        "version": _number(version),
        "requested": cfg.model_ref,
        "evaluation run": run_id,
        "data": cfg.data_root,
        "split": cfg.split,
        "served scoring": "the classifiers of this evaluation (prompt weights, temperatures), recorded with "
        "the version: models:/ answers with these probabilities",
    }
    texts = {name: task_prompt_texts(cfg.tasks[name]) for name in evaluation["tasks"]}
    context = evaluation_context(shown, evaluation, texts, cfg.val_split, cards, baselines, explanations)
    path = Path(cfg.report_dir) / f"{cfg.model_name}-v{_number(version)}.html"
    return render_report(context, path), context


def _run(cfg: EvaluateConfig, with_report: bool) -> int:
    from pipelines.registry import record_served_classifiers, stage_run
    from pipelines.registry.gates import SPLIT_DIGEST_PARAM, split_digest

    if cfg.tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(cfg.tracking_uri)
    model, version = _load_model(cfg, cfg.model_ref)
    cfg = with_classes(cfg)
    with stage_run("report" if with_report else "evaluate", cfg, experiment=cfg.experiment) as tracker:
        evaluation = evaluate_model(model, cfg, full=with_report)
        # Which rows were tested, as a digest of pseudonymous keys: promotion compares it.
        tracker.log_params({SPLIT_DIGEST_PARAM: split_digest(evaluation["test"].keys)})
        metrics = dict(evaluation["metrics"])
        baselines: list[dict] = []
        if cfg.baselines:
            baselines, extra = _baseline_rows(cfg, model, version, evaluation)
            metrics.update(extra)
        tracker.log_metrics({k: float(v) for k, v in metrics.items() if not math.isnan(float(v))}, 0)
        _log_test_probabilities(tracker, cfg, evaluation)
        if getattr(version, "version", None) is not None:
            record_served_classifiers(
                cfg.model_name, str(version.version), tracker.run_id, evaluation["tasks"], cfg.tasks, cfg.views,
                _max_speech_samples(cfg), tracker.client,
            )  # fmt: skip
        print(_headline(cfg, version, metrics))
        if with_report:
            path, context = _report(cfg, model, version, tracker.run_id, evaluation, baselines)
            tracker.log_artifact(str(path), "report")
            print(f"report: {path.resolve()}")
            if getattr(version, "version", None) is not None:
                _describe(cfg, version, tracker, path, context)
    return 0


def _describe(
    cfg: EvaluateConfig, version: Any, tracker: Any, path: Path, context: Mapping[str, Any]
) -> None:
    """The registry's descriptions (MLflow UI): headline metrics, what is detectable, where the report is."""
    from pipelines.evaluation.report import registry_descriptions
    from pipelines.registry import describe_model_version

    artifact = f"runs:/{tracker.run_id}/report/{path.name}"
    model_text, version_text = registry_descriptions(context, path, artifact)
    describe_model_version(cfg.model_name, str(version.version), model_text, version_text, tracker.client)


def _log_test_probabilities(tracker: Any, cfg: EvaluateConfig, evaluation: Mapping[str, Any]) -> None:
    """Per task, the calibrated probability of every test study (pseudonymous keys): what the metrics
    were computed from, and what the served version must answer for the same inputs."""
    test: SplitEmbeddings = evaluation["test"]
    for name, result in evaluation["tasks"].items():
        present = test.present[cfg.tasks[name].view]
        table = {"key": [k for k, p in zip(test.keys, present, strict=True) if p]}
        table.update(
            {label: result.probabilities[:, k].tolist() for k, label in enumerate(result.classifier.labels)}
        )
        tracker.log_dict(table, f"zero_shot/{name}_test_probabilities.json")


def run(cfg: EvaluateConfig) -> int:
    """``make evaluate``: metrics to MLflow, ``eval_run_id`` tag and the fitted classifiers on the version."""
    return _run(cfg, with_report=False)


def run_report(cfg: EvaluateConfig) -> int:
    """``make report``: evaluation plus the HTML report under ``report_dir``, logged as an artifact."""
    return _run(cfg, with_report=True)
