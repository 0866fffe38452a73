"""The registered model: an MLflow pyfunc that answers zero-shot questions about files, arrays or texts.

``mlflow.pyfunc.load_model("models:/<name>@champion").predict(frame)`` takes a DataFrame with
``modality`` (xray | ecg | speech | text), ``input`` (a file path, a base64 ``.npy`` array, or the text),
optional ``input_format`` (``path``, default, or ``npy``: an array as preprocessing stores it, X-ray
``[H, W]``, ECG ``[12, T]`` with NaN for absent leads, speech ``[T]``) and optional ``labels``
(``;``-separated; default: every label of that modality's prompt set), and returns one row per input
with the embedding, the probability of each label, the top label and ``scoring`` (which classifier
answered). Bad rows get an ``error`` and empty scores rather than failing the whole request.

Scores come from :class:`pipelines.evaluation.zero_shot.ZeroShotClassifier`, the classifier the
evaluation judged: ``make evaluate`` records each task's fitted classifier (prompt texts, template
weights, temperatures) with the model version (:func:`record_served_classifiers`), and the loaded
model rebuilds it from that record. Before any evaluation of the version, the same classifier runs
with its defaults (equal prompt weights, temperature 1) and ``scoring`` says so.

The logged model carries everything else it needs: the saved encoders, the prompt templates per label,
the reader settings used in preprocessing, and the ``pipelines``/``encoders`` code itself.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
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


def _decode_npy(value: str) -> np.ndarray:
    import base64
    import io

    return np.load(io.BytesIO(base64.b64decode(value, validate=True)), allow_pickle=False)


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

    client = mlflow.MlflowClient()
    meta_path = model_root / "registered_model_meta"
    if meta_path.is_file():
        meta = yaml.safe_load(meta_path.read_text()) or {}
        if meta.get("model_name") and meta.get("model_version") is not None:
            return client.get_model_version(str(meta["model_name"]), str(meta["model_version"]))
    if not registered_name:
        return None
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


class ZeroShotModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around ``encoders.MultimodalModel`` + the preprocessing readers."""

    def load_context(self, context: Any) -> None:
        from encoders import MultimodalModel
        from pipelines.evaluation.zero_shot import ZeroShotClassifier, model_text_encoder

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
        self.default_classifiers: dict[tuple[str, str, tuple[str, ...]], Any] = {}
        print(f"zero-shot scoring: {self.scoring_note}")

    # ------------------------------------------------------------------ inputs
    def _reader_config(self, modality: str) -> Any:
        from pipelines.data import registry

        saved = self.bundle.get("preprocessing", {}).get(modality, {}).get("reader_config", {})
        return registry.reader_config(modality, saved)

    def _read(self, modality: str, value: str) -> tuple[np.ndarray, dict[str, Any]]:
        """The stored-form array of a file (as preprocessing writes it) and its manifest-row fields."""
        from pipelines.data import registry

        path = Path(value)
        if not path.exists():
            raise FileNotFoundError(f"no such file: {value}")
        sample = registry.resolve(registry.get(modality).reader)(path, self._reader_config(modality))[0]
        return sample.array, dict(sample.meta)

    def _max_samples(self, modality: str) -> int:
        """Speech is cropped as the evaluation cropped it (its record), else at 2 s of the stored rate."""
        from pipelines.data import registry

        for task_modality, _, state in self.evaluated.values():
            if task_modality == modality and state.get("max_samples"):
                return int(state["max_samples"])
        return int(2.0 * (registry.sample_rate_hz(modality) or 0))

    def _embed(self, modality: str, value: str, input_format: str) -> np.ndarray:
        import torch

        from pipelines.data import registry
        from pipelines.data.dataset import ViewSpec
        from pipelines.training.embedding import ViewEncoder

        tower = _tower_for(self.model, modality)
        with torch.no_grad():
            if modality == "text":
                return self.model.encode(tower, [value])[0].numpy()
            if input_format == "npy":
                array = _decode_npy(value)
                row: dict[str, Any] = {}
                if array.ndim == 2 and modality == "ecg":
                    row["lead_mask"] = "".join("0" if np.isnan(lead).all() else "1" for lead in array)
            elif input_format == "path":
                array, row = self._read(modality, value)
            else:
                raise ValueError(f"input_format must be path or npy, got {input_format!r}")
            # The evaluation's path: one study through the view's tensors, collate and the view encoder.
            spec = ViewSpec(modality=modality, tower=tower)
            kind = registry.view_kind(spec)
            batch = kind.collate(modality, [kind.item(modality, array, row, self._max_samples(modality))])
            features, _ = ViewEncoder(self.model, {modality: spec})(batch)
            return features[modality][0].float().numpy()

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
        if key not in self.default_classifiers:
            texts = {}
            for label in dict.fromkeys(named):
                positive, negative = _prompt_templates(label, templates)
                texts[label] = {"positive": positive, "negative": negative if mode == "pair" else []}
            prompts = encode_prompts(texts, self.encode_texts)
            scale = float(self.model.logit_scale.detach().exp())
            self.default_classifiers[key] = ZeroShotClassifier.build(prompts, mode, scale)
        note = (
            self.scoring_note
            if not self.evaluated
            else DEFAULT_SCORING.replace("no evaluation", "no evaluated task")
        )
        return self.default_classifiers[key], named, note

    def _score(
        self, modality: str, embedding: np.ndarray, labels: list[str], mode: str
    ) -> tuple[dict[str, float], str]:
        classifier, named, note = self.classifier_for(modality, labels, mode)
        probs = classifier.probabilities(embedding[None, :])[0]
        return {
            label: float(probs[classifier.labels.index(n)]) for label, n in zip(labels, named, strict=True)
        }, note

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = params or {}
        rows = []
        for record in pd.DataFrame(model_input).to_dict("records"):
            modality = str(record.get("modality", "")).strip().lower()
            value = str(record.get("input", ""))
            input_format = str(record.get("input_format") or "path").strip().lower()
            default_mode = self.bundle.get("prompts", {}).get(modality, {}).get("mode", "pair")
            mode = str(params.get("mode") or default_mode)
            raw_labels = record.get("labels")
            if isinstance(raw_labels, str) and raw_labels.strip():
                labels = [x.strip() for x in raw_labels.split(";") if x.strip()]
            else:
                labels = list(self.bundle.get("prompts", {}).get(modality, {}).get("labels", []))
            out = dict.fromkeys(OUTPUT_COLUMNS, "")
            out.update(modality=modality, labels=";".join(labels), top_probability=float("nan"))
            try:
                embedding = self._embed(modality, value, input_format)
                out["embedding"] = json.dumps([round(float(x), 6) for x in embedding])
                if labels:
                    probs, out["scoring"] = self._score(modality, embedding, labels, mode)
                    top = max(probs, key=probs.get)
                    out.update(probabilities=json.dumps(probs), top_label=top, top_probability=probs[top])
            except Exception as err:  # noqa: BLE001 - one bad row must not fail the request
                out["error"] = f"{type(err).__name__}: {err}"[:300]
            rows.append(out)
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


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
        example = pd.DataFrame(
            [{"modality": "text", "input": "FINDINGS: small left pleural effusion.", "labels": ""}]
        )
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=ZeroShotModel(),
            artifacts={"model_dir": str(model_dir), "bundle": str(bundle_path)},
            code_paths=[str(PACKAGE_ROOT / "pipelines"), str(PACKAGE_ROOT / "encoders")],
            signature=_signature(),
            input_example=example,
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

    wanted = ["torch", "transformers", "peft", "pydicom", "wfdb", "soundfile", "scipy", "pandas", "numpy"]
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
