"""The registered model: an MLflow pyfunc that answers zero-shot questions about files or texts.

``mlflow.pyfunc.load_model("models:/<name>@champion").predict(frame)`` takes a DataFrame with
``modality`` (xray | ecg | speech | text), ``input`` (a file path, or the text) and optional
``labels`` (``;``-separated; default: every label of that modality's prompt set), and returns one
row per input with the embedding, the probability of each label and the top label. Bad rows get an
``error`` and empty scores rather than failing the whole request.

The logged model carries everything it needs: the saved encoders, the prompt templates per label,
the reader settings used in preprocessing, and the ``pipelines``/``encoders`` code itself.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# modality of an input -> (tower kind, default prompt set)
MODALITY_TOWER_KIND = {"xray": "image", "ecg": "ecg", "speech": "audio", "text": "text"}
DEFAULT_PROMPT_SETS = {"xray": "cxr_findings", "ecg": "ecg_diagnoses", "speech": "speech_intents"}
OUTPUT_COLUMNS = ["modality", "labels", "probabilities", "top_label", "top_probability", "embedding", "error"]


def _tower_for(model: Any, modality: str) -> str:
    kind = MODALITY_TOWER_KIND[modality]
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


class ZeroShotModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around ``encoders.MultimodalModel`` + the preprocessing readers."""

    def load_context(self, context: Any) -> None:
        from encoders import MultimodalModel

        self.model = MultimodalModel.from_pretrained(context.artifacts["model_dir"]).eval()
        self.bundle = json.loads(Path(context.artifacts["bundle"]).read_text())

    # ------------------------------------------------------------------ inputs
    def _reader_config(self, modality: str) -> Any:
        from pipelines.data.audio import SpeechConfig
        from pipelines.data.ecg import EcgConfig
        from pipelines.data.xray import XrayConfig

        cls = {"xray": XrayConfig, "ecg": EcgConfig, "speech": SpeechConfig}[modality]
        saved = self.bundle.get("preprocessing", {}).get(modality, {}).get("reader_config", {})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})

    def _embed(self, modality: str, value: str) -> np.ndarray:
        import torch

        from pipelines.data.dataset import ECG_LEADS

        tower = _tower_for(self.model, modality)
        with torch.no_grad():
            if modality == "text":
                return self.model.encode(tower, [value])[0].numpy()
            path = Path(value)
            if not path.exists():
                raise FileNotFoundError(f"no such file: {value}")
            if modality == "xray":
                from pipelines.data.xray import read_xray

                sample = read_xray(path, self._reader_config("xray"))[0]
                array = sample.array.astype(np.float32)
                scale = {np.dtype("uint8"): 255.0, np.dtype("uint16"): 65535.0}.get(sample.array.dtype, 1.0)
                image = torch.from_numpy(array / scale)[None, None]
                size = self.model.config.towers[tower].image_size_px
                image = torch.nn.functional.interpolate(
                    image, size=(size, size), mode="bilinear", antialias=True
                )
                return self.model.encode(tower, image)[0].numpy()
            if modality == "ecg":
                from pipelines.data.ecg import read_ecg

                sample = read_ecg(path, self._reader_config("ecg"))[0]
                signal = torch.from_numpy(np.nan_to_num(sample.array.astype(np.float32)))[None]
                mask_text = str(sample.meta.get("lead_mask", "1" * ECG_LEADS))
                mask = torch.tensor([[c == "1" for c in mask_text]])
                return self.model.encode(tower, signal, lead_mask=mask)[0].numpy()
            if modality == "speech":
                from pipelines.data.audio import read_speech

                sample = read_speech(path, self._reader_config("speech"))[0]
                wave = torch.from_numpy(sample.array.astype(np.float32))[None]
                return self.model.encode(tower, wave, lengths=torch.tensor([wave.shape[-1]]))[0].numpy()
        raise ValueError(f"unknown modality {modality!r}; use one of {sorted(MODALITY_TOWER_KIND)}")

    # ------------------------------------------------------------------ scoring
    def _label_embeddings(self, texts: list[str]) -> np.ndarray:
        """Ensemble of prompt templates: mean of normalised text embeddings, re-normalised."""
        import torch

        tower = _tower_for(self.model, "text")
        with torch.no_grad():
            emb = self.model.encode(tower, texts).numpy()
        mean = emb.mean(axis=0)
        return mean / max(np.linalg.norm(mean), 1e-12)

    def _score(self, modality: str, embedding: np.ndarray, labels: list[str], mode: str) -> dict[str, float]:
        templates = self.bundle.get("prompts", {}).get(modality, {}).get("templates", {})
        scale = float(np.exp(self.bundle.get("logit_scale", float(self.model.logit_scale.detach()))))
        positives, negatives = [], []
        for label in labels:
            pos, neg = _prompt_templates(label, templates)
            positives.append(self._label_embeddings(pos))
            negatives.append(self._label_embeddings(neg))
        pos_logits = scale * np.stack(positives) @ embedding
        if mode == "multiclass":
            z = np.exp(pos_logits - pos_logits.max())
            probs = z / z.sum()
        else:
            neg_logits = scale * np.stack(negatives) @ embedding
            probs = 1.0 / (1.0 + np.exp(neg_logits - pos_logits))  # softmax over the (pos, neg) pair
        return {label: float(p) for label, p in zip(labels, probs, strict=True)}

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = params or {}
        rows = []
        for record in pd.DataFrame(model_input).to_dict("records"):
            modality = str(record.get("modality", "")).strip().lower()
            value = str(record.get("input", ""))
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
                embedding = self._embed(modality, value)
                out["embedding"] = json.dumps([round(float(x), 6) for x in embedding])
                if labels:
                    probs = self._score(modality, embedding, labels, mode)
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
