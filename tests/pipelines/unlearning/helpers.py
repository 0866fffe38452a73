"""A processed fixture whose IDs are salted hashes of known originals (MRNs), as preprocessing writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from encoders import LoraSettings, MultimodalConfig, PairSpec, TowerConfig
from pipelines.data import ids
from pipelines.data.dataset import ViewSpec
from pipelines.evaluation.embeddings import SplitEmbeddings
from pipelines.training import ObjectiveConfig, TrainConfig
from pipelines.unlearning.verify import STOPPING, AttackDraw, ModelEmbeddings
from tests.pipelines.processed_fixture import write_processed_dataset

SALT = "test-salt-0123"
SYNTHETIC_PAIRS = [("xray", "radiology_report")]
MODALITIES = ("xray", "ecg", "reports", "speech")


def mrn(i: int) -> str:
    """The original subject ID of fixture subject ``i`` (a canary: it must never appear in outputs)."""
    return f"CANARY-MRN-{i:05d}"


def accession(i: int) -> str:
    return f"CANARY-ACC-{i:05d}"


def write_hashed_dataset(root: Path, n_studies: int = 40) -> Path:
    """``write_processed_dataset`` with subject/study IDs replaced by ``ids.subject_id(MRN, SALT)``."""
    write_processed_dataset(root, n_studies=n_studies)
    subject = {f"sub{i:04d}": ids.subject_id(mrn(i), SALT) for i in range(n_studies)}
    study = {f"st{i:04d}": ids.study_id(mrn(i), accession(i), SALT) for i in range(n_studies)}
    for modality in MODALITIES:
        for path in [root / modality / "manifest.csv", *sorted((root / modality / "shards").glob("*.csv"))]:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            frame["subject_id"] = frame["subject_id"].map(subject)
            frame["study_id"] = frame["study_id"].map(study)
            frame.to_csv(path, index=False)
    return root


def manifest(root: Path, modality: str) -> pd.DataFrame:
    return pd.read_csv(root / modality / "manifest.csv", dtype=str, keep_default_na=False)


def write_random_pairs_dataset(root: Path, n_studies: int = 100, seed: int = 1) -> Path:
    """``write_processed_dataset`` with every X-ray and ECG replaced by noise: a study's two views share
    nothing, so a model aligns them only by memorising the pair (members) and not at all otherwise."""
    write_processed_dataset(root, n_studies=n_studies, missing_fraction=0)
    rng = np.random.default_rng(seed)
    xray = root / "xray" / "shards" / "00000.npy"
    np.save(xray, rng.integers(0, 256, np.load(xray).shape).astype(np.uint8))
    ecg = root / "ecg" / "shards" / "00000.npy"
    np.save(ecg, rng.normal(0.0, 1.0, np.load(ecg).shape).astype(np.float16))
    return root


def tiny_pair_config(data_root: Path) -> TrainConfig:
    """X-ray <-> ECG only (CLIP), two one-layer towers trained fully: seconds per hundred steps on a CPU."""
    tower = dict(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, lora=LoraSettings(mode="full")
    )
    model = MultimodalConfig(
        towers={
            "image": TowerConfig(kind="image", image_size_px=32, patch_size=8, pooling="cls", **tower),
            "ecg": TowerConfig(kind="ecg", patch_len=50, max_len=5000, **tower),
        },
        embed_dim=32,
    )
    return TrainConfig(
        data_root=str(data_root),
        model=model,
        views={"xray": ViewSpec("xray", "image"), "ecg": ViewSpec("ecg", "ecg")},
        objective=ObjectiveConfig(kind="clip", pairs=[PairSpec("xray", "ecg")]),
        batch_size=16,
        eval_batch_size=64,
        threads=1,
        precision="fp32",  # auto would be bf16 on a CPU with native bf16: figures must not depend on the machine
    )


def synthetic_group(n: int, noise: float, seed: int) -> SplitEmbeddings:
    """Pairs whose report is the image plus noise: small noise = tightly aligned (memorised) pairs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    r = x + noise * rng.normal(size=(n, 16))
    present = {"xray": np.ones(n, bool), "radiology_report": np.ones(n, bool)}
    return SplitEmbeddings([f"k{i}" for i in range(n)], {"xray": x, "radiology_report": r}, present)


def synthetic_model(forget_noise: float, seed: int = 0) -> ModelEmbeddings:
    return ModelEmbeddings(
        members=synthetic_group(120, 0.2, seed),
        heldout=synthetic_group(60, 0.8, seed + 1),
        forget=synthetic_group(20, forget_noise, seed + 2),
        pool=synthetic_group(40, 0.8, seed + 3),
        logit_scale=10.0,
    )


def lucky_stop_model(draws: dict[str, AttackDraw]) -> ModelEmbeddings:
    """The forget set is still memorised (pairs as tight as the members'); the held-out studies that
    the stopping draw picked happen to be as tight as members too (an unrepresentative sample), the
    confirming draw's are as loose as unseen pairs are."""
    model = synthetic_model(0.2)
    tight = synthetic_group(len(model.heldout.keys), 0.2, seed=11)
    stop_rows = draws[STOPPING].heldout
    for view in ("xray", "radiology_report"):
        model.heldout.embeddings[view][stop_rows] = tight.embeddings[view][stop_rows]
    return model
