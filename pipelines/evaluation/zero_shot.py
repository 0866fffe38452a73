"""The zero-shot classifier: one object that evaluation, continual learning, unlearning verification,
the evidence runs and the served model all score with.

A task's prompt set gives, per label, positive (and for findings negative) template texts. Their text
embeddings are ensembled into one class embedding per label and side, with equal template weights
(CLIP's prompt ensemble, Radford et al. 2021, section 3.1.4) or ZPE weights fitted on unlabelled
embeddings (:mod:`pipelines.evaluation.zpe`). Two modes:

- ``pair`` (findings, diagnoses): one independent probability per label, the softmax over its
  (positive, negative) pair, ``sigmoid(s (x.t+ - x.t-) / T + b)`` (CheXzero, Tiu et al. 2022), with a
  temperature ``T`` and a bias ``b`` per label;
- ``multiclass`` (spoken intents): a softmax over the labels' class embeddings, ``softmax(s x.t / T)``,
  one temperature for the task (CLIP zero-shot classification).

``s`` is the model's learnt logit scale; ``T`` (and in pair mode ``b``) are fitted on validation by NLL
(Guo et al. 2017; Platt 1999 for the pair bias: the pair logit has an offset unrelated to the finding,
which temperature alone can only remove by flattening every score) and are 1 and 0 before
calibration. ``T`` stays positive, so calibration never reverses the prompts' ranking; a finding
whose ``T`` reaches its upper bound is one the prompts do not separate on validation
(:attr:`TaskResult.uninformative`). :meth:`ZeroShotClassifier.state` is the compact record (texts, weights,
temperatures) that travels with a registered model version, so the served model rebuilds exactly
the classifier the evaluation judged (:meth:`ZeroShotClassifier.from_state`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from pipelines.evaluation import metrics as M
from pipelines.evaluation.calibration import (
    T_MAX,
    apply_temperature,
    fit_temperature,
    fit_temperature_bias,
    reliability_bins,
)
from pipelines.evaluation.embeddings import SplitEmbeddings
from pipelines.evaluation.tasks import Mode, ZeroShotTaskConfig, task_prompt_texts
from pipelines.evaluation.zpe import weighted_class_embeddings, zpe_weights

Weighting = Literal["equal", "zpe"]
# Text tower -> [n, D] float embeddings of a list of texts (a model's ``encode("text", ...)``).
TextEncoder = Callable[[Sequence[str]], np.ndarray]
DEFAULT_LOGIT_SCALE = 100.0  # CLIP's clamp, for a model without a learnt scale


@dataclasses.dataclass
class ZeroShotScoringConfig:
    """How zero-shot scores are formed and judged: prompt weighting, calibration and the metrics."""

    prompt_weighting: Weighting = dataclasses.field(
        default="equal", metadata={"help": "weights of the headline metrics; the report shows both"}
    )
    zpe_temperature: float = dataclasses.field(
        default=0.01, metadata={"help": "softmax temperature of ZPE template scores (cosine scale)"}
    )
    threshold_method: M.ThresholdMethod = "f1"
    missing_labels: M.MissingPolicy = dataclasses.field(
        default="exclude", metadata={"help": "labels not mentioned in the report: exclude or negative"}
    )
    bootstrap_resamples: int = 500
    bootstrap_stratified: bool = True
    calibration_bins: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompt_weighting not in ("equal", "zpe"):
            raise ValueError(f"prompt_weighting must be equal or zpe, got {self.prompt_weighting!r}")
        if not self.zpe_temperature > 0:
            raise ValueError(f"zpe_temperature must be > 0, got {self.zpe_temperature}")
        if self.threshold_method not in ("f1", "youden"):
            raise ValueError(f"threshold_method must be f1 or youden, got {self.threshold_method!r}")
        if self.missing_labels not in ("exclude", "negative"):
            raise ValueError(f"missing_labels must be exclude or negative, got {self.missing_labels!r}")
        if self.bootstrap_resamples < 0 or self.calibration_bins < 1:
            raise ValueError("bootstrap_resamples must be >= 0 and calibration_bins >= 1")


# --------------------------------------------------------------------------- prompts


@dataclasses.dataclass
class TaskPrompts:
    """Normalised text embeddings per label: positive ``[P+, D]`` and negative ``[P-, D]`` templates."""

    positive: dict[str, np.ndarray]
    negative: dict[str, np.ndarray]
    texts: dict[str, dict[str, list[str]]] = dataclasses.field(default_factory=dict)

    def only(self, labels: Sequence[str]) -> TaskPrompts:
        """The prompts of ``labels`` alone (in that order)."""
        return TaskPrompts(
            {k: self.positive[k] for k in labels},
            {k: self.negative[k] for k in labels},
            {k: self.texts[k] for k in labels if k in self.texts},
        )


def model_text_encoder(model: Any) -> TextEncoder:
    """A model's text tower as a :data:`TextEncoder` (float64 numpy, no gradients)."""

    def encode(texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            return model.encode("text", list(texts)).float().cpu().numpy().astype(np.float64)

    return encode


def encode_prompts(texts: Mapping[str, Mapping[str, Sequence[str]]], encode: TextEncoder) -> TaskPrompts:
    """Prompt texts per label and side, encoded (``[P, D]`` per label and side). One call to the text
    tower for every text of the task: the same texts in the same batch give the same embeddings
    wherever the classifier is built."""
    flat = [t for label in texts for side in ("positive", "negative") for t in texts[label].get(side, [])]
    emb = encode(flat) if flat else np.zeros((0, 0))
    prompts, start = TaskPrompts({}, {}, {}), 0
    for label, sides in texts.items():
        positives, negatives = list(sides.get("positive", [])), list(sides.get("negative", []))
        prompts.positive[label] = emb[start : start + len(positives)]
        start += len(positives)
        # multi-class sets have no negatives: an empty [0, D] block
        prompts.negative[label] = emb[start : start + len(negatives)]
        start += len(negatives)
        prompts.texts[label] = {"positive": positives, "negative": negatives}
    return prompts


def task_prompts(model: Any, task: ZeroShotTaskConfig) -> TaskPrompts:
    """The task's prompt texts encoded by ``model``'s text tower (``[P, D]`` per label and side)."""
    return encode_prompts(task_prompt_texts(task), model_text_encoder(model))


def logit_scale_of(model: Any) -> float:
    """``exp`` of the model's stored log logit scale (CLIP stores it as a log)."""
    scale = getattr(model, "logit_scale", None)
    return float(scale.detach().exp()) if scale is not None else DEFAULT_LOGIT_SCALE


# --------------------------------------------------------------------------- the classifier


def pair_logits(x: np.ndarray, positive: np.ndarray, negative: np.ndarray, logit_scale: float) -> np.ndarray:
    """Logit of the pos/neg prompt-pair softmax: ``softmax(s [x.t+, x.t-])[0] = sigmoid(s (x.t+ - x.t-))``
    (CheXzero's positive/negative prompt scoring, Tiu et al. 2022)."""
    return logit_scale * (np.asarray(x) @ (np.asarray(positive) - np.asarray(negative)).T)


def template_weights(
    x: np.ndarray, prompts: TaskPrompts, labels: Sequence[str], mode: Mode, weighting: str, temperature: float
) -> dict[str, np.ndarray | None]:
    """Template weights per label (None = equal). ZPE needs paired templates: in pair mode template j
    is (positive j, negative j) of one label; in multi-class mode template j of every class. Where
    that pairing does not exist, or there is nothing to fit on, the weights stay equal."""
    out: dict[str, np.ndarray | None] = dict.fromkeys(labels)
    if weighting != "zpe" or len(x) == 0:
        return out
    if mode == "multiclass":
        counts = {len(prompts.positive[c]) for c in labels}
        if len(counts) == 1 and counts.pop() >= 2:
            w = zpe_weights(
                x, np.stack([prompts.positive[c] for c in labels], axis=1), temperature=temperature
            )
            out = dict.fromkeys(labels, w)
        return out
    for label in labels:
        pos, neg = prompts.positive[label], prompts.negative[label]
        if len(pos) == len(neg) and len(pos) >= 2:
            out[label] = zpe_weights(x, np.stack([pos, neg], axis=1), temperature=temperature)
    return out


@dataclasses.dataclass
class ZeroShotClassifier:
    """Class embeddings of one task's labels and their calibration.

    ``positive`` ``[L, D]``: per label the (weighted) ensemble of its positive templates (the class
    embedding in multi-class mode); ``negative`` ``[L, D]``: of its negative templates (pair mode;
    ``[0, D]`` otherwise). ``temperature`` ``[L]`` in pair mode, ``[1]`` in multi-class mode; ``bias``
    ``[L]`` in pair mode (zeros until calibrated), ``[0]`` in multi-class mode.
    """

    mode: Mode
    labels: list[str]
    positive: np.ndarray
    negative: np.ndarray
    logit_scale: float
    temperature: np.ndarray
    weights: dict[str, np.ndarray | None]
    texts: dict[str, dict[str, list[str]]] = dataclasses.field(default_factory=dict)
    bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_biases = len(self.labels) if self.mode == "pair" else 0
        b = np.zeros(n_biases) if self.bias is None else np.asarray(self.bias, dtype=np.float64)
        if b.shape != (n_biases,):
            raise ValueError(f"{b.size} biases for a {self.mode} classifier of {len(self.labels)} labels")
        self.bias = b

    @classmethod
    def build(
        cls,
        prompts: TaskPrompts,
        mode: Mode,
        logit_scale: float,
        weighting: str = "equal",
        zpe_temperature: float = 0.01,
        unlabelled: np.ndarray | None = None,
        weights: Mapping[str, Sequence[float] | None] | None = None,
        temperature: Sequence[float] | None = None,
        bias: Sequence[float] | None = None,
    ) -> ZeroShotClassifier:
        """The classifier of ``prompts``: template weights as given (``weights``), else fitted by ZPE on
        the ``unlabelled`` embeddings, else equal; temperatures and pair biases as given, else 1 and 0
        (uncalibrated)."""
        labels = list(prompts.positive)
        if weights is None:
            x = np.zeros((0, 0)) if unlabelled is None else np.asarray(unlabelled, dtype=np.float64)
            fitted = template_weights(x, prompts, labels, mode, weighting, zpe_temperature)
        else:
            fitted = {k: None if weights.get(k) is None else np.asarray(weights[k], float) for k in labels}
        positive = np.stack([_ensemble(prompts.positive[k], fitted[k]) for k in labels])
        if mode == "pair":
            negative = np.stack([_ensemble(prompts.negative[k], fitted[k]) for k in labels])
        else:
            negative = positive[:0]
        n_temperatures = len(labels) if mode == "pair" else 1
        t = np.ones(n_temperatures) if temperature is None else np.asarray(temperature, dtype=np.float64)
        if t.shape != (n_temperatures,):
            raise ValueError(f"{t.size} temperatures for a {mode} classifier of {len(labels)} labels")
        return cls(
            mode, labels, positive, negative, float(logit_scale), t, fitted, dict(prompts.texts), bias=bias
        )

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``[N, L]`` scaled logits before the temperature (pair mode: the pair logit per label)."""
        x = np.asarray(x, dtype=np.float64)
        if self.mode == "pair":
            return pair_logits(x, self.positive, self.negative, self.logit_scale)
        return self.logit_scale * (x @ self.positive.T)

    def probabilities(self, x: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """``[N, L]``: P(label) per label (pair) or the softmax over labels (multi-class)."""
        return self.probabilities_from_logits(self.logits(x), calibrated)

    def probabilities_from_logits(self, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
        t = self.temperature if calibrated else np.ones_like(self.temperature)
        if self.mode == "multiclass":
            return apply_temperature(logits, float(t[0]))
        if not logits.shape[1]:
            return logits.copy()
        b = self.bias if calibrated else np.zeros_like(self.bias)
        # Each label is its own two-way softmax: sigmoid of its logit over its temperature, plus its bias.
        return np.stack(
            [apply_temperature(logits[:, k], float(t[k]), float(b[k])) for k in range(logits.shape[1])],
            axis=1,
        ).reshape(logits.shape)

    def calibrated(
        self, logits: np.ndarray, targets: Mapping[str, np.ndarray] | np.ndarray
    ) -> ZeroShotClassifier:
        """This classifier with temperatures fitted on validation ``logits`` ``[N, L]``: pair mode takes
        ``{label: binary targets [N]}`` (NaN = excluded) and fits a temperature and a bias per label;
        multi-class mode class indices ``[N]`` (negative = unknown), one temperature. Nothing to fit
        leaves T = 1 and b = 0."""
        t = np.ones_like(self.temperature)
        b = np.zeros_like(self.bias)
        if self.mode == "multiclass":
            y = np.asarray(targets)
            known = y >= 0
            if known.any():
                t[0] = fit_temperature(logits[known], y[known])
        else:
            for k, label in enumerate(self.labels):
                y = np.asarray(targets.get(label, np.full(len(logits), np.nan)), dtype=float)
                keep = ~np.isnan(y)
                t[k], b[k] = fit_temperature_bias(logits[keep, k], y[keep])
        return dataclasses.replace(self, temperature=t, bias=b)

    def direction(self, label: str) -> np.ndarray:
        """The embedding direction that raises ``label``'s score (explanations)."""
        k = self.labels.index(label)
        return self.positive[k] - self.negative[k] if self.mode == "pair" else self.positive[k]

    # ----------------------------------------------------------------- what travels with a model
    def state(self) -> dict[str, Any]:
        """JSON-able record: mode, labels, prompt texts, template weights, temperatures, pair biases,
        logit scale."""
        return {
            "mode": self.mode,
            "labels": list(self.labels),
            "logit_scale": self.logit_scale,
            "temperature": [float(v) for v in self.temperature],
            "bias": [float(v) for v in self.bias],
            "weights": {k: None if w is None else [float(v) for v in w] for k, w in self.weights.items()},
            "texts": self.texts,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], encode: TextEncoder) -> ZeroShotClassifier:
        """The classifier a :meth:`state` describes, its prompt texts encoded by ``encode`` (a record
        written before pair biases existed has none: zeros)."""
        prompts = encode_prompts(state["texts"], encode).only(state["labels"])
        return cls.build(
            prompts,
            state["mode"],
            state["logit_scale"],
            weights=state["weights"],
            temperature=state["temperature"],
            bias=state.get("bias"),
        )


def _ensemble(templates: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    return weighted_class_embeddings(np.asarray(templates, dtype=np.float64)[:, None, :], weights)[0]


def build_task_classifier(
    prompts: TaskPrompts,
    task: ZeroShotTaskConfig,
    logit_scale: float,
    scoring: ZeroShotScoringConfig,
    unlabelled: np.ndarray,
    weighting: str | None = None,
) -> ZeroShotClassifier:
    """The (uncalibrated) classifier of ``task``, ZPE weights fitted on the ``unlabelled`` embeddings."""
    return ZeroShotClassifier.build(
        prompts,
        task.mode,
        logit_scale,
        weighting or scoring.prompt_weighting,
        scoring.zpe_temperature,
        unlabelled,
    )


# --------------------------------------------------------------------------- evaluation of a task


@dataclasses.dataclass
class MulticlassResult:
    """Top-1 figures of a multi-class task over the test samples whose class is known."""

    classes: list[str]
    n: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    confusion: np.ndarray  # [K, K], rows = true class, columns = predicted
    ece_top_label: float
    ece_top_label_calibrated: float
    temperature: float


@dataclasses.dataclass
class TaskResult:
    result: M.ClassificationResult
    temperature: dict[str, float]
    ece: dict[str, float]
    ece_calibrated: dict[str, float]
    bins: dict[str, dict[str, list[float]]]
    curves: dict[str, dict[str, list[float]]]
    weights: dict[str, list[float] | None]
    directions: dict[str, np.ndarray]
    multiclass: MulticlassResult | None = None
    classifier: ZeroShotClassifier | None = None
    probabilities: np.ndarray | None = None  # [N present, L] calibrated test probabilities
    bias: dict[str, float] = dataclasses.field(default_factory=dict)  # pair mode: calibration bias
    # Labels whose validation calibration ended at T_MAX: their prompt contrast ranks validation at or
    # below chance, so the calibrated probability is about the prevalence for every sample.
    uninformative: list[str] = dataclasses.field(default_factory=list)


def _raw_labels(split: SplitEmbeddings, task: ZeroShotTaskConfig, label: str, rows: np.ndarray) -> np.ndarray:
    return np.asarray(
        split.labels.get(task.labels_from, {}).get(label, np.full(len(split.keys), np.nan)), dtype=float
    )[rows]


def _class_indices(
    split: SplitEmbeddings, task: ZeroShotTaskConfig, classes: Sequence[str], rows: np.ndarray
) -> np.ndarray:
    """One-hot label columns -> class index per row, ``-1`` where the row has not exactly one class."""
    onehot = np.stack([_raw_labels(split, task, c, rows) for c in classes], axis=1)
    known = ~np.isnan(onehot).any(axis=1) & (np.nan_to_num(onehot).sum(axis=1) == 1)
    return np.where(known, np.argmax(np.nan_to_num(onehot), axis=1), -1)


def _targets(
    split: SplitEmbeddings, task: ZeroShotTaskConfig, labels: Sequence[str], rows: np.ndarray, missing: str
) -> dict[str, np.ndarray]:
    """Binary targets per label (NaN where the missing policy or an uncertain label excludes them)."""
    out = {}
    for label in labels:
        y, keep, _ = M.binarise_labels(_raw_labels(split, task, label, rows), missing)
        out[label] = np.where(keep, y, np.nan)
    return out


def evaluate_task(
    test: SplitEmbeddings,
    val: SplitEmbeddings | None,
    task: ZeroShotTaskConfig,
    prompts: TaskPrompts,
    logit_scale: float,
    scoring: ZeroShotScoringConfig,
    weighting: str | None = None,
) -> TaskResult:
    """Zero-shot metrics of one task from embeddings (no model needed: testable on its own): the
    classifier is built (ZPE weights fitted on the unlabelled test embeddings), calibrated on ``val``
    and scored on ``test``. Multi-class tasks add top-1 accuracy, the confusion matrix and the
    top-label calibration error."""
    view = task.view
    rows = test.present[view]
    x = test.embeddings[view][rows]
    classifier = build_task_classifier(prompts, task, logit_scale, scoring, x, weighting)
    labels = classifier.labels
    val_labels: dict[str, np.ndarray] = {}
    val_probs: dict[str, np.ndarray] = {}
    if val is not None and view in val.present and val.present[view].any():
        val_rows = val.present[view]
        v_logits = classifier.logits(val.embeddings[view][val_rows])
        if task.mode == "multiclass":
            targets: Any = _class_indices(val, task, labels, val_rows)
        else:
            targets = _targets(val, task, labels, val_rows, scoring.missing_labels)
        classifier = classifier.calibrated(v_logits, targets)
        v_probs = classifier.probabilities_from_logits(v_logits)
        for k, label in enumerate(labels):
            val_labels[label] = _raw_labels(val, task, label, val_rows)
            val_probs[label] = v_probs[:, k]
    logits = classifier.logits(x)
    probs = classifier.probabilities_from_logits(logits)
    raw_probs = classifier.probabilities_from_logits(logits, calibrated=False)
    out = TaskResult(M.ClassificationResult({}, {}, {}, {}, "", 0, 0), {}, {}, {}, {}, {}, {}, {})
    test_labels = {}
    for k, label in enumerate(labels):
        test_labels[label] = _raw_labels(test, task, label, rows)
        out.temperature[label] = float(classifier.temperature[k if task.mode == "pair" else 0])
        if task.mode == "pair":
            out.bias[label] = float(classifier.bias[k])
            if val_labels and out.temperature[label] >= T_MAX:
                out.uninformative.append(label)
        weights = classifier.weights[label]
        out.weights[label] = None if weights is None else weights.tolist()
        out.directions[label] = classifier.direction(label)
        _calibration(out, label, test_labels[label], raw_probs[:, k], probs[:, k], scoring)
    out.result = M.evaluate_classification(
        test_labels,
        {label: probs[:, k] for k, label in enumerate(labels)},
        val_labels or None,
        val_probs or None,
        threshold_method=scoring.threshold_method,
        missing=scoring.missing_labels,
        n_resamples=scoring.bootstrap_resamples,
        seed=scoring.seed,
        stratified=scoring.bootstrap_stratified,
    )
    out.classifier, out.probabilities = classifier, probs
    if task.mode == "multiclass":
        out.multiclass = _multiclass(test, task, classifier, logits, probs, raw_probs, rows, scoring)
    return out


def _calibration(
    out: TaskResult,
    label: str,
    y_raw: np.ndarray,
    raw_prob: np.ndarray,
    prob: np.ndarray,
    scoring: ZeroShotScoringConfig,
) -> None:
    """ECE before/after temperature scaling, reliability bins and ROC inputs of one label into ``out``."""
    y, keep, _ = M.binarise_labels(y_raw, scoring.missing_labels)
    if keep.any():
        out.ece[label] = reliability_bins(y[keep], raw_prob[keep], scoring.calibration_bins).ece
        bins = reliability_bins(y[keep], prob[keep], scoring.calibration_bins)
        out.ece_calibrated[label] = bins.ece
        out.bins[label] = bins.as_dict()
        out.curves[label] = {"y_true": y[keep].tolist(), "y_score": prob[keep].tolist()}


def _multiclass(
    test: SplitEmbeddings,
    task: ZeroShotTaskConfig,
    classifier: ZeroShotClassifier,
    logits: np.ndarray,
    probs: np.ndarray,
    raw_probs: np.ndarray,
    rows: np.ndarray,
    scoring: ZeroShotScoringConfig,
) -> MulticlassResult:
    """Top-1 accuracy with a bootstrap CI, confusion matrix and top-label ECE over the samples whose
    class is known (the others are left out, not counted wrong)."""
    classes = classifier.labels
    y = _class_indices(test, task, classes, rows)
    known = y >= 0
    predicted = np.argmax(logits, axis=1)
    correct = predicted[known] == y[known]
    accuracy, low, high = M.accuracy_ci(correct, scoring.bootstrap_resamples, scoring.seed)

    def top_label_ece(p: np.ndarray) -> float:
        if not known.any():
            return math.nan
        return reliability_bins(correct, p[known].max(axis=1), scoring.calibration_bins).ece

    return MulticlassResult(
        classes=classes,
        n=int(known.sum()),
        accuracy=accuracy,
        accuracy_ci=(low, high),
        confusion=M.confusion_matrix(y[known], predicted[known], len(classes)),
        ece_top_label=top_label_ece(raw_probs),
        ece_top_label_calibrated=top_label_ece(probs),
        temperature=float(classifier.temperature[0]),
    )


def task_metric_names(task_name: str, first: bool, tr: TaskResult) -> dict[str, float]:
    """The first task's metrics carry the bare shared names (``zs_auroc_macro``...), every task's
    also appear under ``<task>.`` so that nothing is ambiguous."""
    named = M.classification_metric_names(tr.result)
    named.update({f"ece.{M.metric_label(k)}": v for k, v in tr.ece.items() if not math.isnan(v)})
    named.update(
        {f"ece_calibrated.{M.metric_label(k)}": v for k, v in tr.ece_calibrated.items() if not math.isnan(v)}
    )
    finite_ece = [v for v in tr.ece.values() if not math.isnan(v)]
    if finite_ece:
        named["zs_ece_macro"] = float(np.mean(finite_ece))
    if tr.multiclass is not None:
        mc = tr.multiclass
        extra = {
            "zs_accuracy": mc.accuracy,
            "zs_accuracy_ci_low": mc.accuracy_ci[0],
            "zs_accuracy_ci_high": mc.accuracy_ci[1],
            "zs_ece_top_label": mc.ece_top_label,
            "zs_ece_top_label_calibrated": mc.ece_top_label_calibrated,
        }
        named.update({k: float(v) for k, v in extra.items() if not math.isnan(v)})
    out = {f"{task_name}.{k}": v for k, v in named.items()}
    if first:
        out.update(named)
    return out


def evaluate_tasks(
    model: Any,
    tasks: Mapping[str, ZeroShotTaskConfig],
    test: SplitEmbeddings,
    val: SplitEmbeddings | None,
    scoring: ZeroShotScoringConfig,
    weighting: str | None = None,
) -> dict[str, TaskResult]:
    """:func:`evaluate_task` of every task whose view the test split has, prompts encoded by ``model``."""
    out = {}
    for name, task in tasks.items():
        if task.view not in test.embeddings or not test.present[task.view].any():
            print(f"task {name}: no {task.view} embeddings in the test split; skipped")
            continue
        prompts = task_prompts(model, task)
        out[name] = evaluate_task(test, val, task, prompts, logit_scale_of(model), scoring, weighting)
    return out


def linear_probe_rows(
    train: SplitEmbeddings,
    test: SplitEmbeddings,
    tasks: Mapping[str, ZeroShotTaskConfig],
    results: Mapping[str, TaskResult],
    scoring: ZeroShotScoringConfig,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Zero-shot vs a logistic-regression probe on the train split's embeddings, per finding: report
    rows and ``probe_auroc.<label>`` metrics (how much of what the embedding knows the prompts reach)."""
    rows, metrics = [], {}
    for name, task in tasks.items():
        if name not in results:
            continue
        tr_rows, te_rows = train.present[task.view], test.present[task.view]
        probe = M.linear_probe(
            train.embeddings[task.view][tr_rows],
            {k: v[tr_rows] for k, v in train.labels.get(task.labels_from, {}).items()},
            test.embeddings[task.view][te_rows],
            {k: v[te_rows] for k, v in test.labels.get(task.labels_from, {}).items()},
            missing=scoring.missing_labels,
            seed=scoring.seed,
        )
        per_class = results[name].result.per_class
        for label, p in probe.items():
            zs = per_class[label].metrics["auroc"] if label in per_class else math.nan
            rows.append(
                {
                    "task": name,
                    "finding": label,
                    "zero-shot AUROC": zs,
                    "linear probe AUROC": p["auroc"],
                    "n train": int(p["n_train"]),
                }
            )
            if not math.isnan(p["auroc"]):
                metrics[f"probe_auroc.{M.metric_label(label)}"] = p["auroc"]
    return rows, metrics
