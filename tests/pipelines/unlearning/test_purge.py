"""Data purge: withdrawn samples vanish from every loader, the replay buffer and cached embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.data.dataset import StudyDataset, ViewSpec, more_views
from pipelines.data.manifest import load_manifest
from pipelines.unlearning import purge, resolve
from tests.pipelines.unlearning.helpers import SALT, manifest, mrn, write_hashed_dataset

SPEECH_VIEWS = {
    "speech": ViewSpec(modality="speech", tower="audio"),
    "transcript": ViewSpec(modality="speech", tower="text", column="transcript"),
}


def _withdraw(root: Path, tmp_path: Path, subjects: list[int]) -> resolve.Resolution:
    path = tmp_path / "forget.txt"
    path.write_text("\n".join(mrn(i) for i in subjects))
    got = resolve.resolve_entries(resolve.read_forget_list(path), resolve.load_id_table(root), SALT)
    for modality, samples in got.sample_ids.items():
        purge.append_tombstones(root / modality, samples, got.list_sha256)
    return got


def test_tombstoned_samples_are_absent_from_every_loader(tmp_path: Path) -> None:
    root = write_hashed_dataset(tmp_path / "demo", n_studies=30)
    got = _withdraw(root, tmp_path, [0, 1, 25])
    gone = got.all_sample_ids
    assert len(gone) == 3 * 5  # per study: xray, ecg, two reports, speech
    for split in ("train", "val", "test"):
        for views, key in ((more_views(), "study_id"), (SPEECH_VIEWS, "sample_id")):
            dataset = StudyDataset(root, split, views, key=key)
            assert not set(dataset.keys) & got.affected_study_ids
            seen = {
                str(dataset.view_row(view, k)["sample_id"])
                for view in views
                for k in dataset.keys
                if dataset.view_row(view, k) is not None
            }
            assert not seen & gone
    for modality in ("xray", "ecg", "reports", "speech"):
        assert not set(load_manifest(root / modality)["sample_id"]) & gone


def test_tombstones_are_append_only_across_requests(tmp_path: Path) -> None:
    root = write_hashed_dataset(tmp_path / "demo", n_studies=12)
    _withdraw(root, tmp_path, [2])
    first = (root / "xray" / "tombstones.csv").read_text().splitlines()
    _withdraw(root, tmp_path, [2, 4])
    second = (root / "xray" / "tombstones.csv").read_text().splitlines()
    assert second[: len(first)] == first and len(second) == len(first) + 1
    assert list(pd.read_csv(root / "xray" / "tombstones.csv").columns) == list(purge.TOMBSTONE_COLUMNS)


def test_erasure_zeroes_only_the_withdrawn_arrays(tmp_path: Path) -> None:
    root = write_hashed_dataset(tmp_path / "demo", n_studies=12)
    before = np.load(root / "ecg" / "shards" / "00000.npy")
    frame = manifest(root, "ecg")
    target = set(frame["sample_id"].iloc[[1, 4]])
    assert purge.erase_arrays(root / "ecg", target) == 2
    after = np.load(root / "ecg" / "shards" / "00000.npy")
    hit = frame["sample_id"].isin(target).to_numpy()
    index = frame["index"].astype(int).to_numpy()
    assert not after[index[hit]].any()
    np.testing.assert_array_equal(after[index[~hit]], before[index[~hit]])
    assert purge.erase_arrays(root / "ecg", target) == 0


def test_replay_pairs_and_cached_embeddings_lose_withdrawn_rows(tmp_path: Path) -> None:
    root = write_hashed_dataset(tmp_path / "demo", n_studies=12)
    xray, reports = manifest(root, "xray"), manifest(root, "reports")
    studies = list(xray["study_id"])
    report_of = dict(zip(reports["study_id"], reports["sample_id"], strict=False))
    replay = pd.DataFrame(
        {
            "task": "site-a",
            "study_id": studies,
            "sample_id_a": list(xray["sample_id"]),
            "sample_id_b": [report_of[s] for s in studies],
        }
    )
    replay.to_csv(root / "replay_buffer.csv", index=False)
    (root / "embeddings").mkdir()
    np.savez(
        root / "embeddings" / "teacher.npz",
        sample_id=xray["sample_id"].to_numpy(dtype=str),
        features=np.arange(len(xray) * 3, dtype=np.float32).reshape(len(xray), 3),
        logit_scale=np.float32(14.3),
    )
    got = _withdraw(root, tmp_path, [0, 2])
    removed = purge.purge_files(root, ["replay_buffer.csv", "embeddings/*.npz"], got.withdrawn_keys)
    assert removed == {"replay_buffer.csv": 2, "embeddings/teacher.npz": 2}
    left = pd.read_csv(root / "replay_buffer.csv", dtype=str)
    assert len(left) == len(replay) - 2
    assert not set(left[["study_id", "sample_id_a", "sample_id_b"]].to_numpy().ravel()) & got.withdrawn_keys
    cache = np.load(root / "embeddings" / "teacher.npz")
    assert not set(cache["sample_id"]) & got.all_sample_ids and cache["features"].shape == (len(xray) - 2, 3)
    assert float(cache["logit_scale"]) == pytest.approx(14.3)


def test_a_table_without_id_columns_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no ID column"):
        purge.purge_table(tmp_path / "t.csv", {"x"})
