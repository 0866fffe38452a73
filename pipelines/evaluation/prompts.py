"""Versioned zero-shot prompt sets and the scoring helpers that use their embeddings.

A prompt set (``pipelines/resources/prompts/<name>.yaml``) gives, per label, positive and negative
text templates. Labels are names of the label vocabulary (``pipelines/resources/vocabulary.yaml``),
so they equal the manifest columns the report labeller writes. ``{display}`` in a template is the
label's display words, ``{label}`` the label name with underscores as spaces.

Scoring (all pure numpy):
- ``ensemble``: several templates of one class -> one embedding: mean of the L2-normalised
  embeddings, re-normalised (CLIP prompt ensembling, Radford et al. 2021, section 3.1.4).
- ``pair_probabilities``: P(positive) as a softmax over the (positive, negative) pair of scaled
  cosine similarities (CheXzero, Tiu et al., Nat Biomed Eng 6:1399, 2022).
- ``multiclass_probabilities``: softmax over classes of scaled cosine similarities (CLIP zero-shot).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipelines.errors import StageError

PROMPTS_PACKAGE_DIR = "resources/prompts"


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """Positive and negative prompts per label; ``version`` and ``sha256`` identify the file."""

    name: str
    version: str
    modality: str
    positives: Mapping[str, tuple[str, ...]]
    negatives: Mapping[str, tuple[str, ...]]
    sha256: str
    source: str = ""
    templates: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        """Label names in file order (= manifest columns for vocabulary-backed sets)."""
        return list(self.positives)

    def texts_for(self, label: str) -> tuple[list[str], list[str]]:
        """``(positives, negatives)`` prompt texts of ``label``."""
        if label not in self.positives:
            raise KeyError(f"label {label!r} is not in prompt set {self.name} (labels: {self.labels})")
        return list(self.positives[label]), list(self.negatives[label])

    def with_labels(self, labels: Sequence[str]) -> PromptSet:
        """This set's generic templates applied to ``labels`` (for free-word sets such as speech intents)."""
        positives = {
            lab: _fill(self.templates.get("positive", ()), lab, lab.replace("_", " ")) for lab in labels
        }
        negatives = {
            lab: _fill(self.templates.get("negative", ()), lab, lab.replace("_", " ")) for lab in labels
        }
        return dataclasses.replace(self, positives=positives, negatives=negatives)


def _fill(templates: Sequence[str], label: str, display: str) -> tuple[str, ...]:
    words = label.replace("_", " ")
    return tuple(dict.fromkeys(t.format(display=display, label=words) for t in templates))


def _resolve(name_or_path: str | Path) -> tuple[str, bytes, str]:
    """(name, raw bytes, source) of a packaged set name or a YAML file path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or Path(text).is_file():
        path = Path(text)
        try:
            return path.stem, path.read_bytes(), str(path)
        except OSError as err:
            raise StageError(f"cannot read prompt set {path}: {err.strerror}") from err
    resource = resources.files("pipelines").joinpath(f"{PROMPTS_PACKAGE_DIR}/{text}.yaml")
    if not resource.is_file():
        available = sorted(
            p.name.removesuffix(".yaml")
            for p in resources.files("pipelines").joinpath(PROMPTS_PACKAGE_DIR).iterdir()
            if p.name.endswith(".yaml")
        )
        raise StageError(f"no prompt set named {text!r} (packaged: {available}; or give a .yaml path)")
    return text, resource.read_bytes(), f"pipelines/{PROMPTS_PACKAGE_DIR}/{text}.yaml"


def _texts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise StageError(f"{where}: expected a list of non-empty strings")
    return tuple(value)


def load_prompt_set(name_or_path: str | Path, vocabulary: Any = None) -> PromptSet:
    """A packaged prompt set by name (``cxr_findings``, ``ecg_diagnoses``, ``speech_intents``) or a
    YAML file. Labels must be vocabulary names unless the file says ``vocabulary: false``; a label
    without its own prompts gets the file's templates filled with its display words."""
    name, raw, source = _resolve(name_or_path)
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise StageError(f"prompt set {source} is not valid YAML: {err}") from err
    if not isinstance(document, Mapping) or "version" not in document:
        raise StageError(f"prompt set {source}: needs top-level `version`, `templates` and `labels`")
    templates_doc = document.get("templates") or {}
    templates = {
        side: _texts(templates_doc.get(side), f"{source} templates.{side}")
        for side in ("positive", "negative")
    }
    labels_doc = document.get("labels") or {}
    if not isinstance(labels_doc, Mapping):
        raise StageError(f"{source}: `labels` must be a mapping label -> {{positive, negative, display}}")
    uses_vocabulary = document.get("vocabulary", True) is not False
    if uses_vocabulary and labels_doc:
        from pipelines.data.reports import load_vocabulary

        vocabulary = vocabulary or load_vocabulary()
        unknown = [label for label in labels_doc if label not in vocabulary]
        if unknown:
            raise StageError(
                f"prompt set {source}: labels {unknown} are not in vocabulary {vocabulary.source} v{vocabulary.version}"
            )
    positives, negatives = {}, {}
    for label, entry in labels_doc.items():
        entry = entry or {}
        if not isinstance(entry, Mapping):
            raise StageError(
                f"{source} label {label}: expected a mapping (positive/negative/display) or {{}}"
            )
        display = str(entry.get("display") or (vocabulary.get(label).display if uses_vocabulary else label))
        positive = _texts(entry.get("positive"), f"{source} {label}.positive") or _fill(
            templates["positive"], str(label), display
        )
        negative = _texts(entry.get("negative"), f"{source} {label}.negative") or _fill(
            templates["negative"], str(label), display
        )
        if not positive:
            raise StageError(f"{source} label {label}: no positive prompts (and no templates)")
        positives[str(label)], negatives[str(label)] = positive, negative
    return PromptSet(
        name=name,
        version=str(document["version"]),
        modality=str(document.get("modality", "")),
        positives=positives,
        negatives=negatives,
        sha256=hashlib.sha256(raw).hexdigest(),
        source=source,
        templates=templates,
    )


# --------------------------------------------------------------------------- scoring
def l2_normalise(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """``x / ||x||`` along ``axis`` (zero vectors stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def ensemble(embeddings: np.ndarray) -> np.ndarray:
    """``[n_templates, d] -> [d]``: mean of the L2-normalised template embeddings, re-normalised."""
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(f"expected [n_templates >= 1, d] embeddings, got shape {embeddings.shape}")
    return l2_normalise(l2_normalise(embeddings).mean(axis=0))


def _softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)  # stable: exp of values <= 0
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def pair_probabilities(x: np.ndarray, pos: np.ndarray, neg: np.ndarray, logit_scale: float) -> np.ndarray:
    """``[n, d]`` embeddings, positive and negative class embeddings ``[d]`` -> ``[n, 2]``
    probabilities ``softmax(s * [cos(x, pos), cos(x, neg)])``; column 0 is P(positive)."""
    x = l2_normalise(np.atleast_2d(x))
    logits = float(logit_scale) * np.stack([x @ l2_normalise(pos), x @ l2_normalise(neg)], axis=1)
    return _softmax(logits, axis=1)


def multiclass_probabilities(x: np.ndarray, class_embeddings: np.ndarray, logit_scale: float) -> np.ndarray:
    """``[n, d]`` embeddings, ``[k, d]`` class embeddings -> ``[n, k]`` softmax of scaled cosines."""
    x = l2_normalise(np.atleast_2d(x))
    return _softmax(float(logit_scale) * (x @ l2_normalise(class_embeddings).T), axis=1)
