"""Modality table: for each array modality, its source (which files), reader and config.

Readers are named as ``"module:function"`` strings and imported on first use, so listing the
registry (or running the speech stage) does not import pydicom/wfdb, and a worker process imports
only the reader it runs. A reader is ``read(path: Path, cfg) -> list[Decoded]`` and raises
``pipelines.errors.RejectedInput(reason, stage)`` for input it cannot or should not use.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.data import sources
from pipelines.data.manifest import Decoded

Reader = Callable[[Path, Any], list[Decoded]]


@dataclasses.dataclass(frozen=True)
class Modality:
    """How one modality is found, decoded and described.

    ``config_attr`` names the field of the preprocessing ``Config`` holding the reader's config;
    ``card_labels`` are manifest columns counted per split in the data card (``;`` separates several
    values in one cell, as in ECG ``dx``). ``libraries`` are imported by the stage before its workers
    fork, so no worker pays their import time (pydicom + plugins alone take ~0.3 s per process).
    """

    name: str
    reader: str | Reader
    normalisation: str | Callable[[Any], dict[str, Any]]
    list_items: Callable[[Path], list[sources.SourceItem]]
    config_attr: str
    card_labels: tuple[str, ...] = ()
    libraries: tuple[str, ...] = ()


MODALITIES: dict[str, Modality] = {
    "xray": Modality(
        "xray",
        "pipelines.data.xray:read_xray",
        "pipelines.data.xray:xray_normalisation",
        sources.list_xray,
        "xray",
        ("view",),
        ("pydicom", "pydicom.pixels", "PIL.Image"),
    ),
    "ecg": Modality(
        "ecg",
        "pipelines.data.ecg:read_ecg",
        "pipelines.data.ecg:ecg_normalisation",
        sources.list_ecg,
        "ecg",
        ("dx", "sex"),
        ("wfdb", "pydicom", "scipy.signal"),
    ),
    "speech": Modality(
        "speech",
        "pipelines.data.audio:read_speech",
        "pipelines.data.audio:speech_normalisation",
        sources.list_speech,
        "speech",
        ("intent",),
    ),
}


def resolve(ref: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (a callable is returned as is)."""
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
