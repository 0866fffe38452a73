"""The training stage: learns, resumes exactly after SIGKILL, runs under torchrun, tracks in MLflow."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipelines.errors import StageError
from pipelines.training import DistInfo, cosine_with_warmup, epoch_batches, train
from tests.pipelines.processed_fixture import write_processed_dataset
from tests.pipelines.train_helpers import tiny_more_config, tiny_speech_config

REPO = Path(__file__).resolve().parents[2]


class _Recorder:
    def __init__(self) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_processed_dataset(tmp_path_factory.mktemp("processed") / "demo", n_studies=48)


def _final_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_cosine_schedule_warms_up_then_decays_to_floor() -> None:
    lrs = [cosine_with_warmup(s, 4, 20, 0.1) for s in range(21)]
    assert lrs[0] == pytest.approx(0.25) and lrs[3] == pytest.approx(1.0)
    assert lrs[4] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))


def test_epoch_batches_partition_the_global_batch_across_ranks() -> None:
    single = epoch_batches(40, 8, seed=1, epoch=0, dist=DistInfo())
    rank0 = epoch_batches(40, 4, seed=1, epoch=0, dist=DistInfo(0, 2))
    rank1 = epoch_batches(40, 4, seed=1, epoch=0, dist=DistInfo(1, 2))
    assert len(single) == len(rank0) == len(rank1) == 5
    for whole, a, b in zip(single, rank0, rank1, strict=True):
        assert sorted(a + b) == sorted(whole)
    assert epoch_batches(40, 8, seed=1, epoch=1, dist=DistInfo()) != single


def test_training_lowers_the_loss_and_logs_trainable_counts(data_root: Path, tmp_path: Path) -> None:
    cfg = tiny_more_config(data_root, tmp_path, epochs=3, checkpoint_every=0)
    recorder = _Recorder()
    result = train(cfg, recorder)
    losses = [m["train.loss"] for _, m in recorder.metrics if "train.loss" in m]
    assert losses[-1] < losses[0]
    counts = {k: v for _, m in recorder.metrics for k, v in m.items() if k.startswith("params.")}
    assert counts["params.text.trainable"] < counts["params.text.total"]
    assert result.best_metrics["val.mean_r@1"] >= 0
    assert (result.model_dir / "config.json").is_file() or any(result.model_dir.iterdir())
    scale = [m["train.logit_scale"] for _, m in recorder.metrics if "train.logit_scale" in m]
    assert scale[0] != scale[-1], "the learnable temperature must move during training"


def test_missing_processed_data_is_a_readable_error(tmp_path: Path) -> None:
    cfg = tiny_more_config(tmp_path / "nothing", tmp_path)
    with pytest.raises(StageError, match="make preprocess"):
        train(cfg, _Recorder())


def test_a_pair_naming_an_unknown_view_is_refused(data_root: Path, tmp_path: Path) -> None:
    cfg = tiny_more_config(data_root, tmp_path)
    cfg.objective.pairs[0].b = "discharge_summary"
    with pytest.raises(StageError, match="unknown view"):
        train(cfg, _Recorder())


def _write_config(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    return path


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights_as_an_uninterrupted_run(
    data_root: Path, tmp_path: Path
) -> None:
    reference = tiny_more_config(data_root, tmp_path / "ref", epochs=2, checkpoint_every=1)
    train(reference, _Recorder())
    expected = _final_state(Path(reference.checkpoint_dir) / "last.pt")

    killed = tiny_more_config(data_root, tmp_path / "killed", epochs=2, checkpoint_every=1)
    config_path = _write_config(killed, tmp_path / "killed.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A tracker that slows each step down, so the kill lands mid-run rather than after it.
    code = """
import sys, time
from pipelines.config import load_config
from pipelines.train import MoreTrainConfig, train

class SlowTracker:
    def log_metrics(self, metrics, step):
        time.sleep(0.3)

train(load_config(MoreTrainConfig, sys.argv[1]), SlowTracker())
"""
    proc = subprocess.Popen([sys.executable, "-c", code, str(config_path)], cwd=REPO, env=env)
    last = Path(killed.checkpoint_dir) / "last.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if last.is_file() and torch.load(last, weights_only=False)["step"] >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(last, weights_only=False)["step"] < 6

    resumed = dataclasses.replace(killed, resume=True)
    train(resumed, _Recorder())
    actual = _final_state(last)
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_two_gloo_ranks_hold_identical_weights(data_root: Path, tmp_path: Path) -> None:
    cfg = tiny_more_config(data_root, tmp_path, epochs=1, batch_size=4, max_steps=3, checkpoint_every=0)
    config_path = _write_config(cfg, tmp_path / "ddp.yaml")
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ranks"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--standalone",
            str(REPO / "tests" / "pipelines" / "ddp_train_worker.py"),
            str(config_path),
            str(out),
        ],
        cwd=REPO,
        env=env,
        check=True,
        timeout=240,
    )
    rank0 = torch.load(out / "rank0.pt", weights_only=False)
    rank1 = torch.load(out / "rank1.pt", weights_only=False)
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], msg=name)
    initial = torch.load(out / "initial.pt", weights_only=False)
    assert any(not torch.equal(initial[n], rank0[n]) for n in rank0), "weights did not move"


def test_speech_training_runs_on_speech_and_transcripts(data_root: Path, tmp_path: Path) -> None:
    cfg = tiny_speech_config(data_root, tmp_path, max_steps=2)
    assert cfg.val_distinct_texts  # the fixture's 48 utterances share 4 transcripts
    result = train(cfg, _Recorder())
    assert result.steps == 2
    assert "val.r@1.speech->transcript" in result.best_metrics
    # chance is over distinct transcripts among the validation utterances, not over utterances
    assert 1 / result.best_metrics["val.chance_r@1.speech-transcript"] <= 4
