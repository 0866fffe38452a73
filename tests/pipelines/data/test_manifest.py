"""Shards, sidecars and the training-side readers (load_manifest, ShardStore)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from pipelines.data import manifest


def _row(i: int, **extra) -> dict:
    return {
        "sample_id": f"speech-{i:016x}",
        "subject_id": "1234e56789012345",  # looks like a float to a naive CSV reader
        "study_id": f"{i:016d}",
        "modality": "speech",
        "source": f"speech/{i}.wav",
        "source_sha256": f"{i:064x}",
        "split": "train",
        **extra,
    }


def test_batch_is_committed_by_its_sidecar_only(tmp_path):
    arrays = [np.full(3, i, dtype=np.float16) for i in range(2)]
    manifest.write_batch(tmp_path, 0, arrays, [_row(0), _row(1)], [])
    # A killed run: arrays of batch 1 written, sidecar not yet.
    np.save(tmp_path / "shards" / "00001.npy", np.zeros((1, 3)))
    (tmp_path / "shards" / ".00001.csv.abc.tmp").write_text("half a csv")
    assert manifest.committed_batches(tmp_path) == [0]
    removed = manifest.discard_uncommitted(tmp_path)
    assert sorted(p.name for p in removed) == [".00001.csv.abc.tmp", "00001.npy"]
    rows, rejections = manifest.read_batches(tmp_path)
    assert list(rows["index"]) == [0, 1] and list(rows["shard"]) == [0, 0]
    assert rejections.empty
    assert manifest.next_batch_number(tmp_path) == 1


def test_samples_differing_in_length_are_zero_padded_to_the_longest():
    stacked = manifest.stack_samples([np.ones(2, np.float16), np.ones(4, np.float16)])
    assert stacked.shape == (2, 4)
    np.testing.assert_array_equal(stacked[0], [1, 1, 0, 0])


def test_samples_of_different_shapes_cannot_share_a_shard():
    with pytest.raises(ValueError, match="agree in shape"):
        manifest.stack_samples([np.ones((12, 5)), np.ones((11, 5))])


def test_load_manifest_keeps_ids_and_lead_masks_as_text(tmp_path):
    frame = pd.DataFrame([_row(1, lead_mask="011111111111", shard=0, index=0)])
    manifest.write_manifest(tmp_path, frame)
    loaded = manifest.load_manifest(tmp_path)
    assert loaded.loc[0, "subject_id"] == "1234e56789012345"
    assert loaded.loc[0, "study_id"] == "0000000000000001"
    assert loaded.loc[0, "lead_mask"] == "011111111111"


def test_shard_store_reads_memory_maps_and_hides_tombstoned_samples(tmp_path):
    arrays = [np.arange(4, dtype=np.float16) + 10 * i for i in range(3)]
    rows = [_row(i) for i in range(3)]
    manifest.write_batch(tmp_path, 0, arrays, rows, [])
    frame, _ = manifest.read_batches(tmp_path)
    manifest.write_manifest(tmp_path, frame)
    store = manifest.ShardStore(tmp_path)
    sample = store.get(0, 2)
    assert isinstance(store.shard(0), np.memmap)
    np.testing.assert_array_equal(sample, arrays[2])

    pd.DataFrame({"sample_id": [rows[1]["sample_id"]]}).to_csv(tmp_path / "tombstones.csv", index=False)
    store = pickle.loads(pickle.dumps(manifest.ShardStore(tmp_path)))  # as sent to DataLoader workers
    with pytest.raises(KeyError, match="withdrawn"):
        store.get(0, 1)
    np.testing.assert_array_equal(store.get(0, 0), arrays[0])
    assert list(manifest.load_manifest(tmp_path)["sample_id"]) == [rows[0]["sample_id"], rows[2]["sample_id"]]
    assert len(manifest.load_manifest(tmp_path, include_tombstoned=True)) == 3


def test_shard_store_keeps_only_max_open_maps(tmp_path):
    for number in range(3):
        manifest.write_batch(tmp_path, number, [np.full(2, number, np.float16)], [_row(number)], [])
    store = manifest.ShardStore(tmp_path, max_open=2)
    assert [float(store.get(n, 0)[0]) for n in (0, 1, 2, 0)] == [0.0, 1.0, 2.0, 0.0]
    assert len(store._maps) == 2


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def explode(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        manifest.atomic_write(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
