"""Preprocessing on Ray gives the same outputs as the local pool, on a local instance and on a real
two-process cluster, and a killed Ray worker loses no input."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

pytest.importorskip("ray", reason="Ray is the optional extra .[scale] (make setup installs it)")
psutil = pytest.importorskip("psutil", reason="psutil ships with Ray")

from pipelines import demo_data, preprocess  # noqa: E402
from pipelines.registry.server import free_port  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.server]

SALT = "test-salt-ray-4c1d"
MODALITIES = ("xray", "ecg", "speech")
RAY_BIN = Path(sys.executable).with_name("ray")


# Ray clusters authenticate their nodes and drivers with a shared token; a fresh one per test session.
RAY_TOKEN = secrets.token_hex(32)


def _env() -> dict[str, str]:
    ray = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": RAY_TOKEN}
    return {**os.environ, **ray, "PIPELINE_SALT": SALT}


def _mixed_folder(root: Path, n_subjects: int = 6) -> Path:
    """A small demo cohort in its real formats (DICOM, WFDB, WAV) plus broken files of each modality."""
    cohort = demo_data.DemoDataConfig(
        output_dir=str(root),
        n_subjects=n_subjects,
        image_size_px=64,
        n_utterances=6,
        n_speakers=2,
        workers=1,
        cards_dir=str(root.parent / "demo-cards"),
        progress=False,
    )
    assert demo_data.run(cohort) == 0
    # Speech without espeak-ng (the demo skips it then): tones written with soundfile, two subjects.
    for i in range(4):
        fs = 8000 if i % 2 else 16000
        tone = 0.2 * np.sin(2 * np.pi * (200 + 40 * i) * np.arange(int(0.4 * fs)) / fs)
        folder = root / "speech" / f"tone-speaker-{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{i}.wav", tone.astype(np.float32), fs, subtype="PCM_16")
    dicom = next((root / "xray").rglob("*.dcm"))
    header = next((root / "ecg").rglob("*.hea"))
    wav = next((root / "speech").rglob("*.wav"))
    broken = {
        root / "xray" / "broken" / "empty.dcm": b"",
        root / "xray" / "broken" / "truncated.dcm": dicom.read_bytes()[:400],
        root / "ecg" / "broken" / "garbage.hea": b"not a wfdb header\n",
        root / "speech" / "broken" / "empty.wav": b"",
        root / "speech" / "broken" / "truncated.wav": wav.read_bytes()[:100],
    }
    assert header.is_file()
    for path, data in broken.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _config(root: Path, out: Path, **overrides) -> preprocess.PreprocessConfig:
    values = {
        "root": str(root),
        "out": str(out),
        "cards_dir": str(out / "cards"),
        "workers": 2,
        "chunksize": 2,
        "shard_size": 4,
        "progress": False,
        "salt": SALT,
        **overrides,
    }
    return preprocess.PreprocessConfig(**values)


def _outputs(out: Path, modality: str) -> tuple[pd.DataFrame, pd.DataFrame, list[np.ndarray]]:
    folder = out / modality
    manifest = pd.read_csv(folder / "manifest.csv").sort_values("sample_id").reset_index(drop=True)
    rejections = pd.read_csv(folder / "rejections.csv").sort_values("path").reset_index(drop=True)
    shards = [np.load(path) for path in sorted((folder / "shards").glob("*.npy"))]
    return manifest, rejections, shards


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    return _mixed_folder(tmp_path_factory.mktemp("raw") / "demo")


def test_ray_and_local_give_identical_manifests_rejections_and_shards(mixed, tmp_path):
    for executor in ("local", "ray"):
        cfg = _config(mixed, tmp_path / executor, executor=executor)
        for modality in MODALITIES:
            assert getattr(preprocess, f"run_{modality}")(cfg) == 0
    for modality in MODALITIES:
        local, ray = _outputs(tmp_path / "local", modality), _outputs(tmp_path / "ray", modality)
        pd.testing.assert_frame_equal(local[0], ray[0])
        pd.testing.assert_frame_equal(local[1], ray[1])
        assert len(local[1]) >= 1, f"{modality}: the broken files must be rejected"
        assert len(local[2]) == len(ray[2]) >= 1
        for a, b in zip(local[2], ray[2], strict=True):
            np.testing.assert_array_equal(a, b)


def test_unknown_executor_is_a_stage_error(mixed, tmp_path):
    from pipelines.errors import StageError

    with pytest.raises(StageError, match="executor must be one of local, ray"):
        preprocess.run_ecg(_config(mixed, tmp_path / "out", executor="dask"))


class RayCluster:
    """``ray start --head`` plus one ``ray start --address`` worker node, all on 127.0.0.1, one CPU each;
    ``stop()`` ends exactly the processes of this cluster (found by its temp dir), by PID."""

    def __init__(self, workdir: Path, nodes: int = 2) -> None:
        # Ray's socket paths must stay short (AF_UNIX limit of 107 bytes): pytest's tmp paths are long.
        self.temp_dir = Path(f"/tmp/ray-{os.getpid()}-{free_port()}")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.workdir = workdir
        self.nodes = nodes

    def start(self) -> None:
        common = ["--num-cpus=1", "--disable-usage-stats", "--object-store-memory=100000000",
                  "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}"]  # fmt: skip
        self._ray("start", "--head", f"--port={self.port}", "--include-dashboard=false", *common)
        for _ in range(self.nodes - 1):
            self._ray("start", f"--address={self.address}", *common)
        self._wait_for_nodes(self.nodes)

    def _ray(self, *args: str) -> None:
        subprocess.run([str(RAY_BIN), *args], check=True, env=_env(), timeout=120, capture_output=True)

    def _wait_for_nodes(self, nodes: int, timeout_s: float = 60.0) -> None:
        code = (
            f"import ray; ray.init(address={self.address!r}, logging_level='ERROR');"
            "print(sum(1 for n in ray.nodes() if n['Alive']))"
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = subprocess.run(
                [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60
            )
            if result.returncode == 0 and int(result.stdout.strip().splitlines()[-1]) >= nodes:
                return
            time.sleep(1)
        raise TimeoutError(f"Ray cluster at {self.address} did not reach {nodes} nodes")

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: those naming its temp dir, and their descendants (the agents
        and workers retitle themselves ``ray::...``)."""
        roots = []
        for process in psutil.process_iter(["cmdline"]):
            if str(self.temp_dir) in " ".join(process.info["cmdline"] or []):
                roots.append(process)
        found = {p.pid: p for p in roots}
        for process in roots:
            with contextlib.suppress(psutil.Error):
                found.update({child.pid: child for child in process.children(recursive=True)})
        return list(found.values())

    def busy_workers(self) -> list[psutil.Process]:
        """Worker processes of this cluster that are running a task of the executor right now."""
        busy = []
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                if " ".join(process.cmdline()).startswith("ray::_run_chunk"):
                    busy.append(process)
        return busy

    def stop(self) -> None:
        processes = self.processes()
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(processes, timeout=5)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    running = RayCluster(tmp_path_factory.mktemp("ray"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


def _stage(root: Path, out: Path, address: str, modality: str) -> subprocess.Popen:
    args = [f"root={root}", f"out={out}", f"cards_dir={out / 'cards'}", "executor=ray",
            f"ray_address={address}", "chunksize=1", "shard_size=4", "progress=false"]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines", f"preprocess-{modality}", *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_two_node_cluster_on_loopback_processes_a_folder(mixed, cluster, tmp_path):
    stage = _stage(mixed, tmp_path / "ray", cluster.address, "ecg")
    output, _ = stage.communicate(timeout=300)
    assert stage.returncode == 0, output
    cfg = _config(mixed, tmp_path / "local")
    assert preprocess.run_ecg(cfg) == 0
    cluster_rows, cluster_rejections, cluster_shards = _outputs(tmp_path / "ray", "ecg")
    local_rows, local_rejections, local_shards = _outputs(tmp_path / "local", "ecg")
    pd.testing.assert_frame_equal(cluster_rows, local_rows)
    pd.testing.assert_frame_equal(cluster_rejections, local_rejections)
    for a, b in zip(cluster_shards, local_shards, strict=True):
        np.testing.assert_array_equal(a, b)


def test_killing_a_ray_worker_mid_run_loses_no_input(mixed, cluster, tmp_path):
    """SIGKILL a worker process while it runs a task: Ray re-runs the task (max_retries) and every input
    ends up in the manifest or the rejections exactly once; if the run still fails, a re-run completes it."""
    killed: list[int] = []

    def kill_first_busy_worker() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            for process in cluster.busy_workers():
                process.kill()
                killed.append(process.pid)
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_first_busy_worker, daemon=True)
    killer.start()
    out = tmp_path / "ray"
    stage = _stage(mixed, out, cluster.address, "xray")
    output, _ = stage.communicate(timeout=300)
    killer.join(timeout=5)
    assert killed, "no busy Ray worker was seen to kill"
    print(f"killed Ray worker {killed[0]}; the run exited with {stage.returncode} (0: Ray re-ran the task)")
    if stage.returncode != 0:
        rerun = _stage(mixed, out, cluster.address, "xray")
        output, _ = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, output
    rows, rejections, _ = _outputs(out, "xray")
    inputs = sorted(p for p in (mixed / "xray").rglob("*") if p.is_file() and p.suffix == ".dcm")
    assert not rows["sample_id"].duplicated().any()
    assert not rejections["path"].duplicated().any()
    assert len(set(rows["source"])) + len(rejections) == len(inputs)
