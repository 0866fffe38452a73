"""Zero-shot evidence on real public recordings, the library half of ``python -m pipelines evidence``:
public datasets preprocessed through their adapters, speech utterances scored against a word list (FSDD digits), a preprocessed dataset's samples scored
against a prompt set (CinC ECG diagnoses, NIH findings), accuracy pooled over speaker folds, and the
Markdown summary. Every score comes from :class:`pipelines.evaluation.zero_shot.ZeroShotClassifier`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.evaluation.metrics import accuracy_ci


@contextlib.contextmanager
def _source(modality: str, lister: Callable[[Path], list[Any]]) -> Iterator[None]:
    """Run the preprocessing stage with ``lister`` as the modality's source.

    Once the stage looks adapters up itself (``dataset=<name>``), this only repeats what it does; until
    then it is how the evidence feeds adapter items (labels, upstream splits) to the unchanged stage.
    """
    from pipelines.data import registry

    original = registry.MODALITIES[modality]
    registry.MODALITIES[modality] = dataclasses.replace(original, list_items=lister)
    try:
        yield
    finally:
        registry.MODALITIES[modality] = original


def preprocess_public(
    dataset: str,
    modality: str,
    root: Path,
    processed: Path,
    cards_dir: str,
    workers: int,
    lister: Callable | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Preprocess ``root`` as ``dataset`` into ``<processed>/<dataset>`` with the adapter's items (or
    ``lister``'s); returns its summary.json. Source paths stay readable: the data is public."""
    from pipelines.data import adapters, registry
    from pipelines.data.preprocessing import PreprocessConfig, process_modality

    lister = lister or adapters.adapter_for(dataset, modality) or registry.get(modality).list_items
    out = processed / dataset
    config = PreprocessConfig(
        dataset=dataset,
        root=str(root),
        out=str(out),
        cards_dir=cards_dir,
        workers=workers,
        hash_paths=False,  # public data: readable source paths let the summary name rejected files
        progress=False,
        licence=extra.pop("licence", ""),
        **extra,
    )
    with _source(modality, lister):
        process_modality(config, modality)
    return json.loads((out / modality / "summary.json").read_text())


def say_accuracy(what: str, r: dict[str, Any]) -> None:
    print(
        f"{what} [{r['objective']}]: accuracy {r['accuracy']:.3f} (95% CI {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}), "
        f"n={r['n_test']}, chance {r['chance']:.2f}, training speakers' val {r['val_accuracy']:.3f}, "
        f"{r['train_steps']} steps in {r['train_seconds']} s"
    )


def zero_shot_predict(speech: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """Index of the most likely prompt per row: the multi-class zero-shot classifier with one prompt per
    class (its softmax's argmax is the argmax of cosine)."""
    from pipelines.evaluation.zero_shot import TaskPrompts, ZeroShotClassifier

    classes = {str(k): np.asarray(prompts)[k : k + 1] for k in range(len(prompts))}
    empty = {k: v[:0] for k, v in classes.items()}
    classifier = ZeroShotClassifier.build(TaskPrompts(classes, empty), "multiclass", 1.0)
    return np.argmax(classifier.logits(speech), axis=1)


def speech_zero_shot(
    model: Any, data_root: Path, split: str, words: tuple[str, ...], max_speech_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted words of ``split``'s utterances, each scored against ``words``."""
    from pipelines.data import registry
    from pipelines.data.dataset import StudyDataset, ViewSpec
    from pipelines.evaluation.zero_shot import model_text_encoder
    from pipelines.training import embed_dataset, resolve_device

    views = {"speech": ViewSpec(modality="speech", tower="audio")}
    dataset = StudyDataset(
        data_root,
        split,
        views,
        key="sample_id",
        max_speech_samples=int(max_speech_s * (registry.sample_rate_hz("speech", data_root) or 0)),
    )
    if len(dataset) == 0:
        return np.array([], dtype=str), np.array([], dtype=str)
    feats, _ = embed_dataset(model, dataset, views, 128, resolve_device("auto"))
    truth = dataset.labels("speech", ["transcript"])["transcript"].astype(str).to_numpy()
    prompts = model_text_encoder(model)(list(words))
    return truth, np.asarray(words)[zero_shot_predict(feats["speech"].numpy(), prompts)]


def pooled_accuracy(results: list[dict[str, Any]], n_resamples: int, seed: int) -> dict[str, Any]:
    """Accuracy over the utterances of all folds together (each speaker is the test speaker once), with a
    bootstrap CI, and the mean and spread of the per-fold accuracies."""
    correct = np.concatenate([np.asarray(r["correct"], dtype=bool) for r in results])
    acc, low, high = accuracy_ci(correct, n_resamples, seed)
    folds = np.array([r["accuracy"] for r in results])
    return {
        "objective": results[0]["objective"],
        "folds": len(results),
        "n_test": int(correct.size),
        "accuracy": acc,
        "ci95": [low, high],
        "fold_mean": float(folds.mean()),
        "fold_min": float(folds.min()),
        "fold_max": float(folds.max()),
        "val_accuracy_mean": float(np.nanmean([r["val_accuracy"] for r in results])),
        "chance": results[0]["chance"],
    }


def dataset_zero_shot_auroc(
    model: Any,
    data_root: Path,
    modality: str,
    tower: str,
    prompt_set: str,
    label_columns: list[str],
    names: dict[str, str],
    n_resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Every sample scored by the zero-shot classifier with ``prompt_set``'s prompts (labels outside the
    set get its generic templates with their display ``names``); AUROC + CI per label."""
    from pipelines.data.dataset import StudyDataset, ViewSpec
    from pipelines.evaluation.embeddings import embed_split
    from pipelines.evaluation.metrics import evaluate_classification
    from pipelines.evaluation.tasks import prompt_texts_for, view_label_table
    from pipelines.evaluation.zero_shot import (
        ZeroShotClassifier,
        encode_prompts,
        logit_scale_of,
        model_text_encoder,
    )
    from pipelines.training import resolve_device

    views = {modality: ViewSpec(modality=modality, tower=tower)}
    dataset = StudyDataset(data_root, ["train", "val", "test"], views, key="sample_id")
    split = embed_split(model, dataset, views, (), 64, resolve_device("auto"))
    present = split.present[modality]
    texts = prompt_texts_for(prompt_set, label_columns, names)
    prompts = encode_prompts(texts, model_text_encoder(model))
    probs = ZeroShotClassifier.build(prompts, "pair", logit_scale_of(model)).probabilities(
        split.embeddings[modality][present]
    )
    table = view_label_table(dataset, modality, label_columns)  # adapter cells, else header dx codes
    test_labels = {label: table[label].to_numpy(dtype=float)[present] for label in label_columns}
    test_scores = {label: probs[:, k] for k, label in enumerate(label_columns)}
    result = evaluate_classification(
        test_labels, test_scores, n_resamples=n_resamples, seed=seed, min_per_class=1
    )
    per_label = {}
    for label, r in result.per_class.items():
        per_label[label] = {
            "prompt": texts[label]["positive"][0],
            "positives": r.counts.positive,
            "negatives": r.counts.negative,
            "auroc": r.metrics.get("auroc", math.nan),
            "auroc_ci95": list(r.ci.get("auroc", (math.nan, math.nan))),
        }
    n = int(present.sum())
    return {"n": n, "per_label": per_label, "macro_auroc": result.macro.get("auroc", math.nan)}


def positive_labels(modality_dir: Path, candidates: list[str]) -> list[str]:
    """Labels with at least one positive in the manifest (only those can have an AUROC): its label
    columns, and where a cell is empty, the records' header diagnosis codes (``dx``, ``scp_codes``)."""
    from pipelines.data.manifest import load_manifest
    from pipelines.evaluation.tasks import manifest_label_table

    table = manifest_label_table(load_manifest(modality_dir), candidates)
    return [c for c in candidates if (table[c] == 1).any()]


def say_auroc(what: str, result: dict[str, Any]) -> None:
    print(f"{what} zero-shot (n={result['n']}), macro AUROC {result['macro_auroc']:.3f}:")
    for label, r in result["per_label"].items():
        low, high = r["auroc_ci95"]
        print(f"  {label:<18} pos {r['positives']:>4}  AUROC {r['auroc']:.3f}  (95% CI {low:.3f}-{high:.3f})")


def evidence_markdown(evidence: dict[str, Any]) -> str:
    lines = ["# Evidence on real public recordings", "", "Generated by `python -m pipelines evidence`.", ""]
    fsdd = evidence.get("fsdd")
    if fsdd:
        cfg = evidence.get("config", {})
        tower = cfg.get("speech_tower", {})
        aug = cfg.get("augment", {})
        lines += [
            "## FSDD zero-shot digit recognition",
            "",
            f"Speech tower {tower.get('audio_arch')} (width {tower.get('hidden_size')}, "
            f"{tower.get('num_layers')} layers, log-mel band-mean normalisation {tower.get('mel_mean_norm')}), "
            f"initialised {'from ' + tower['pretrained'] if tower.get('pretrained') else 'at random'}, "
            f"trained {1 if cfg.get('quick') else cfg.get('epochs')} epoch(s).",
            "",
            f"Augmentation: speed factors {aug.get('speech_speed_factors')}, noise at "
            f"{aug.get('speech_noise_snr_db')} dB SNR, {aug.get('speech_time_masks')} time mask(s), "
            f"{aug.get('speech_freq_masks')} frequency mask(s). Accuracy = the unseen speaker(s); val = the "
            "training speakers' held-out utterances (a convergence check: it saturates, so settings are "
            "chosen on an inner fold with a training speaker held out, see configs/evidence.yaml).",
            "",
            "| split | objective | n | accuracy | 95% CI | chance | val |",
            "|---|---|---|---|---|---|---|",
        ]
        for fold in fsdd["speaker_folds"]:
            for r in fold["results"]:
                lines.append(
                    f"| unseen speaker {', '.join(fold['test_speakers'])} | {r['objective']} | {r['n_test']} | "
                    f"{r['accuracy']:.3f} | {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} | {r['chance']:.2f} | "
                    f"{r.get('val_accuracy', math.nan):.3f} |"
                )
        for r in fsdd.get("speaker_pooled", []):
            lines.append(
                f"| **all {r['folds']} speaker folds pooled** (fold range {r['fold_min']:.3f}-{r['fold_max']:.3f}) | "
                f"{r['objective']} | {r['n_test']} | **{r['accuracy']:.3f}** | "
                f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} | {r['chance']:.2f} | {r['val_accuracy_mean']:.3f} |"
            )
        for r in fsdd["heldout_digits"]:
            lines.append(
                f"| unseen digits 7-9 | {r['objective']} | {r['n_test']} | {r['accuracy']:.3f} | "
                f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} | {r['chance']:.2f} | {r.get('val_accuracy', math.nan):.3f} |"
            )
        lines.append("")
    for part in ("ecg", "xray"):
        section = evidence.get(part)
        if not section:
            continue
        lines += [
            f"## {part.upper()}",
            "",
            "| data | seen | processed | rejected | reasons |",
            "|---|---|---|---|---|",
        ]
        for name, c in section["preprocess"].items():
            reasons = "; ".join(f"{n} x {r}" for r, n in (c.get("rejected_by_reason") or {}).items())
            lines.append(f"| {name} | {c['seen']} | {c['processed']} | {c['rejected']} | {reasons} |")
        zs = section.get("zero_shot")
        lines.append("")
        if isinstance(zs, str):
            lines.append(f"Zero-shot: {zs}")
        elif zs:
            lines += [
                f"Zero-shot with {zs['model']} (n={zs['n']}):",
                "",
                "| label | positives | AUROC | 95% CI |",
                "|---|---|---|---|",
            ]
            for label, r in zs["per_label"].items():
                lines.append(
                    f"| {label} | {r['positives']} | {r['auroc']:.3f} | {r['auroc_ci95'][0]:.3f}-{r['auroc_ci95'][1]:.3f} |"
                )
        lines.append("")
    return "\n".join(lines) + "\n"
