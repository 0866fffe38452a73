"""The modality table: for each modality, everything that differs between X-ray, ECG and speech.

One record per modality says how its files are found (``list_items``), decoded (``reader`` with its
config type ``config``), described (``normalisation``, ``card_labels``), and how its stored samples
become model inputs (``view``: tensor conversion, collate, augmentation and tower keyword arguments,
see ``pipelines.data.modalities``). Text views read a manifest column and share one kind, ``TEXT``.
Code outside this table looks modalities up instead of branching on their names::

    from pipelines.data import registry

    spec = registry.get("ecg")
    reader_cfg = registry.reader_config_type("ecg")()          # EcgConfig with its defaults
    samples = registry.resolve(spec.reader)(path, reader_cfg)  # list[Decoded]
    fs_hz = registry.sample_rate_hz("ecg", "data/processed/demo")   # from normalisation.json
    kind = registry.view_kind(view_spec)                       # XrayView / EcgView / SpeechView / TEXT

Readers, normalisations and config types are named as ``"module:name"`` strings and imported on first
use, so listing the registry does not import pydicom/wfdb, and a worker process imports only the
reader it runs. A reader is ``read(path: Path, cfg) -> list[Decoded]`` and raises
``pipelines.errors.RejectedInput(reason, stage)`` for input it cannot or should not use.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.data import sources
from pipelines.data.manifest import Decoded
from pipelines.data.modalities import EcgView, SpeechView, TextView, ViewKind, XrayView

Reader = Callable[[Path, Any], list[Decoded]]

TEXT = TextView()


@dataclasses.dataclass(frozen=True)
class Modality:
    """How one modality is found, decoded, described and fed to its tower.

    ``config_attr`` names the field of the preprocessing config holding the reader's config, of type
    ``config``; ``card_labels`` are manifest columns counted per split in the data card (``;``
    separates several values in one cell, as in ECG ``dx``). ``libraries`` are imported by the stage
    before its workers fork, so no worker pays their import time (pydicom + plugins alone take ~0.3 s
    per process). ``prepare`` (``"module:function"``, called with the reader's config) runs there too:
    it fills the per-process caches a reader would otherwise build once in every worker (the ECG label
    maps). ``view`` is the kind that turns stored samples into tower inputs. ``subject_columns``
    are manifest columns that hold the subject under another name (a speech ``speaker``): they get the
    salted subject ID, never the raw name.
    """

    name: str
    reader: str | Reader
    normalisation: str | Callable[[Any], dict[str, Any]]
    config: str | type
    list_items: Callable[[Path], list[sources.SourceItem]]
    config_attr: str
    view: ViewKind
    card_labels: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()
    subject_columns: tuple[str, ...] = ()
    prepare: str = ""


MODALITIES: dict[str, Modality] = {
    "xray": Modality(
        "xray",
        reader="pipelines.data.xray:read_xray",
        normalisation="pipelines.data.xray:xray_normalisation",
        config="pipelines.data.xray:XrayConfig",
        list_items=sources.list_xray,
        config_attr="xray",
        view=XrayView(),
        card_labels=("view",),
        libraries=("pydicom", "pydicom.pixels", "PIL.Image"),
    ),
    "ecg": Modality(
        "ecg",
        reader="pipelines.data.ecg:read_ecg",
        normalisation="pipelines.data.ecg:ecg_normalisation",
        config="pipelines.data.ecg:EcgConfig",
        list_items=sources.list_ecg,
        config_attr="ecg",
        view=EcgView(),
        card_labels=("dx", "sex"),
        libraries=("wfdb", "pydicom", "scipy.signal"),
        prepare="pipelines.data.ecg:prepare_reader",
    ),
    "speech": Modality(
        "speech",
        reader="pipelines.data.audio:read_speech",
        normalisation="pipelines.data.audio:speech_normalisation",
        config="pipelines.data.audio:SpeechConfig",
        list_items=sources.list_speech,
        config_attr="speech",
        view=SpeechView(),
        card_labels=("intent",),
        subject_columns=("speaker",),
    ),
}


def resolve(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"package.module:name"`` (a callable or class is returned as is)."""
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def get(name: str) -> Modality:
    if name not in MODALITIES:
        raise KeyError(f"unknown modality {name!r}; known: {sorted(MODALITIES)}")
    return MODALITIES[name]


def reader_available(name: str) -> bool:
    """Whether the modality's reader module can be imported (a missing optional decoder says no)."""
    try:
        resolve(get(name).reader)
    except (ImportError, AttributeError):
        return False
    return True


def reader_config_type(name: str) -> type:
    """The reader's config dataclass (``XrayConfig``, ``EcgConfig``, ``SpeechConfig``)."""
    return resolve(get(name).config)  # type: ignore[return-value]


def reader_config(name: str, saved: dict[str, Any] | None = None) -> Any:
    """The reader's config from saved settings (e.g. ``normalisation.json``'s ``reader_config``);
    settings the current type does not know are dropped, missing ones take their defaults."""
    cls = reader_config_type(name)
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in (saved or {}).items() if k in known})


def view_kind(spec: Any) -> ViewKind:
    """The kind of a ``dataset.ViewSpec``: ``TEXT`` for a manifest column, else its modality's."""
    return TEXT if getattr(spec, "column", None) is not None else get(spec.modality).view


def read_normalisation(processed_root: str | Path, modality: str) -> dict[str, Any]:
    """What preprocessing wrote about a modality's stored arrays (``{}`` when it has not run)."""
    path = Path(processed_root) / modality / "normalisation.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def sample_rate_hz(name: str, processed_root: str | Path | None = None) -> float | None:
    """Sampling rate of a modality's stored signals: the data's ``normalisation.json`` when given and
    present, else the reader's default (``fs_hz`` of its config); ``None`` for images."""
    if processed_root is not None:
        fs_hz = read_normalisation(processed_root, name).get("fs_hz")
        if fs_hz is not None:
            return float(fs_hz)
    default = {f.name: f.default for f in dataclasses.fields(reader_config_type(name))}.get("fs_hz")
    return None if default is None or default is dataclasses.MISSING else float(default)


def sample_rates(processed_root: str | Path | None, names: Any = None) -> dict[str, float]:
    """``{modality: fs_hz}`` of every signal modality (or of ``names``), for augmentations."""
    rates = {name: sample_rate_hz(name, processed_root) for name in (names or MODALITIES)}
    return {name: rate for name, rate in rates.items() if rate is not None}
