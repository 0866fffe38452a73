"""Versioned zero-shot prompt sets and the scoring helpers that use their embeddings.

A prompt set (``pipelines/resources/prompts/<name>.yaml``) gives, per label, positive and negative
text templates. Labels are names of the label vocabulary (``pipelines/resources/vocabulary.yaml``),
so they equal the manifest columns the report labeller writes. ``{display}`` in a template is the
label's display words, ``{label}`` the label name with underscores as spaces.

Scoring (pure; numpy arrays in -> float64 numpy out, torch tensors in -> torch out on the same
device and dtype, differentiable):
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
import torch
import torch.nn.functional as F
import yaml

from pipelines.errors import StageError

PROMPTS_PACKAGE_DIR = "resources/prompts"
# Other names a packaged set is known by (the task name of evaluate for the X-ray set).
PROMPT_SET_ALIASES = {"xray_findings": "cxr_findings"}


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

    def mlflow_params(self, prefix: str = "") -> dict[str, str]:
        """``{prefix}prompt_set``, ``..._version``, ``..._sha256``: enough to say which prompts scored a run."""
        return {
            f"{prefix}prompt_set": self.name,
            f"{prefix}prompt_set_version": self.version,
            f"{prefix}prompt_set_sha256": self.sha256,
        }

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
    text = PROMPT_SET_ALIASES.get(text, text)
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
Array = np.ndarray | torch.Tensor


def _tensor(x: Array) -> torch.Tensor:
    """A tensor view of ``x``: tensors as they are, anything else as float64 (exact reference maths)."""
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.float()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _like(result: torch.Tensor, reference: Array) -> Array:
    """``result`` in the kind of ``reference``: numpy in, numpy out."""
    return result if isinstance(reference, torch.Tensor) else result.detach().cpu().numpy()


def ensemble(embeddings: Array) -> Array:
    """``[n_templates, d] -> [d]``: mean of the L2-normalised template embeddings, re-normalised.

    Normalising first weights every template equally whatever its norm (CLIP, Radford et al. 2021,
    section 3.1.4, averages in the normalised embedding space).
    """
    t = _tensor(embeddings)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"expected [n_templates >= 1, d] embeddings, got shape {tuple(t.shape)}")
    return _like(F.normalize(F.normalize(t, dim=-1).mean(dim=0), dim=-1), embeddings)


def _scale(logit_scale: float | torch.Tensor) -> float | torch.Tensor:
    """A learnt scale stays a tensor (gradients flow); a number becomes a float."""
    return logit_scale if isinstance(logit_scale, torch.Tensor) else float(logit_scale)


def pair_probabilities(x: Array, pos: Array, neg: Array, logit_scale: float | torch.Tensor) -> Array:
    """``[n, d]`` (or ``[d]``) embeddings, positive and negative class embeddings ``[d]`` -> ``[n, 2]``
    probabilities ``softmax(s * [cos(x, pos), cos(x, neg)])``; column 0 is P(positive).

    With two classes this equals ``sigmoid(s * (cos(x, pos) - cos(x, neg)))`` (CheXzero, Tiu et al. 2022).
    """
    t = _tensor(x)
    t = F.normalize(t.unsqueeze(0) if t.ndim == 1 else t, dim=-1)
    classes = F.normalize(torch.stack([_tensor(pos).to(t), _tensor(neg).to(t)]), dim=-1)
    return _like(torch.softmax(_scale(logit_scale) * (t @ classes.T), dim=1), x)


def multiclass_probabilities(x: Array, class_embeddings: Array, logit_scale: float | torch.Tensor) -> Array:
    """``[n, d]`` (or ``[d]``) embeddings, ``[k, d]`` class embeddings -> ``[n, k]`` softmax of scaled
    cosines (CLIP zero-shot classification, Radford et al. 2021, section 3.1.2)."""
    t = _tensor(x)
    t = F.normalize(t.unsqueeze(0) if t.ndim == 1 else t, dim=-1)
    classes = F.normalize(_tensor(class_embeddings).to(t), dim=-1)
    return _like(torch.softmax(_scale(logit_scale) * (t @ classes.T), dim=1), x)
