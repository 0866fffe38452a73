"""Benchmark the served zero-shot model: in-process through the pyfunc, and under load through
``mlflow models serve`` on 127.0.0.1.

``make bench-serving [ARGS="inputs=32 batch=16 clients=8 requests=200"]``. The model is the registered
``model_name@model_ref`` when the tracking store has it (``make train-morE`` registers the demo
champion); otherwise a random-init ``default_more_config()`` model of the same shapes is registered in
a scratch store (timings only: its probabilities mean nothing). Requests carry content, as clients
must: X-ray DICOM bytes (base64) and 12-lead WFDB records (header + signal file, JSON).

in-process: inputs/s for X-ray DICOMs and ECG records through ``mlflow.pyfunc.load_model(...).predict``,
one input per call (``single``) and ``batch`` inputs per call (``batched``); wall and process CPU
seconds (on a shared machine read CPU next to wall).

server: ``clients`` threads send ``requests`` requests in all (bounded also by ``timeout_s``), a fixed
mix of valid single-input requests and broken ones (not base64, a server path, a truncated DICOM, a
WFDB header naming a file outside the upload, an unknown modality). Printed: requests/s, p50/p99
latency (all requests, and valid X-ray / ECG requests alone), peak RSS of the server's process tree,
answers by error kind, and failures: a transport error or non-200 answer, a valid request answered
with an error, a broken one answered without. No worker may die (the tree's PIDs are compared after
the run and ``/ping`` must answer). :func:`load_test` is what ``tests/pipelines/registry`` reuses with
small counts.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import io
import json
import resource
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
XRAY_LABELS = "cardiomegaly;pleural_effusion;pneumothorax;edema"
ECG_LABELS = "AF;LBBB;RBBB;STE"


@dataclasses.dataclass
class ServingBenchConfig:
    model_name: str = dataclasses.field(default="morE-cxr-ecg-report", metadata={"help": "registered model"})
    model_ref: str = dataclasses.field(default="champion", metadata={"help": "alias or version number"})
    tracking_uri: str | None = dataclasses.field(default=None, metadata={"help": "default: the project's"})
    inputs: int = dataclasses.field(default=32, metadata={"help": "inputs per modality, in-process"})
    batch: int = dataclasses.field(default=16, metadata={"help": "inputs per call, batched in-process"})
    size_px: int = dataclasses.field(default=1024, metadata={"help": "side of the generated DICOMs"})
    clients: int = dataclasses.field(default=8, metadata={"help": "concurrent HTTP clients"})
    requests: int = dataclasses.field(default=200, metadata={"help": "HTTP requests in all"})
    timeout_s: float = dataclasses.field(default=300.0, metadata={"help": "stop sending after this"})
    server: bool = dataclasses.field(default=True, metadata={"help": "also run the load test over HTTP"})

    def __post_init__(self) -> None:
        for name in ("inputs", "batch", "size_px", "clients", "requests"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")


# --------------------------------------------------------------------------- content clients send


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dicom_bytes(seed: int, size_px: int) -> bytes:
    """A 12-bit CR radiograph (Explicit VR Little Endian) of ``size_px`` square, made in memory."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"bench-serving-{seed}"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("bench.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Modality, ds.ViewPosition = "CR", "PA"
    ds.Rows = ds.Columns = size_px
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(size_px), np.arange(size_px)) * (3000.0 / (2 * size_px))
    pixels = (ramp + rng.normal(0, 80, (size_px, size_px))).clip(0, 4095).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def wfdb_record(folder: Path, name: str, seed: int) -> str:
    """A 10 s 12-lead record at 500 Hz written with wfdb, as the ``wfdb`` input (JSON header + files)."""
    import wfdb

    t = np.arange(5000) / 500.0
    rng = np.random.default_rng(seed)
    beat = np.sin(2 * np.pi * (1.0 + 0.3 * rng.random()) * t) ** 15
    signal = np.stack([(0.4 + 0.1 * i) * beat + 0.02 * rng.normal(size=t.size) for i in range(12)], axis=1)
    wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=LEADS, p_signal=signal, fmt=["16"] * 12,
                write_dir=str(folder))  # fmt: skip
    header = (folder / f"{name}.hea").read_text()
    return json.dumps(
        {"header": header, "files": {f"{name}.dat": b64((folder / f"{name}.dat").read_bytes())}}
    )


@dataclasses.dataclass
class Payload:
    """One request body of the load mix and what its answer must be."""

    kind: str  # "xray", "ecg" or "broken:<what>"
    rows: list[list[str]]
    expect_error: str = ""  # the error kind every row must get ("" = a valid request, no error)

    def body(self) -> bytes:
        columns = ["modality", "input", "input_format", "labels"]
        return json.dumps({"dataframe_split": {"columns": columns, "data": self.rows}}).encode()


def load_mix(xrays: list[bytes], ecgs: list[str]) -> list[Payload]:
    """Valid single-input X-ray and ECG requests, and one request per kind of broken row."""
    valid = [Payload("xray", [["xray", b64(d), "dicom", XRAY_LABELS]]) for d in xrays]
    valid += [Payload("ecg", [["ecg", e, "wfdb", ECG_LABELS]]) for e in ecgs]
    outside = json.loads(ecgs[0])
    lines = outside["header"].splitlines()
    lines[1] = "../../etc/passwd " + lines[1].split(" ", 1)[1]  # the first signal names a server file
    outside["header"] = "\n".join(lines)
    broken = [
        Payload("broken:not_base64", [["xray", "/etc/passwd", "", XRAY_LABELS]], "InvalidPayload"),
        Payload("broken:server_path", [["xray", "/etc/passwd", "path", XRAY_LABELS]], "PayloadRefused"),
        Payload(
            "broken:truncated_dicom", [["xray", b64(xrays[0][:2048]), "dicom", XRAY_LABELS]], "RejectedInput"
        ),
        Payload(
            "broken:wfdb_outside_upload", [["ecg", json.dumps(outside), "wfdb", ECG_LABELS]], "PayloadRefused"
        ),
        Payload("broken:unknown_modality", [["brain", "QUJD", "", "x"]], "PayloadRefused"),
    ]
    # three valid requests for each broken one, interleaved
    mix: list[Payload] = []
    for i, payload in enumerate(broken * 3):
        mix += [valid[(3 * i + j) % len(valid)] for j in range(3)] + [payload]
    return mix


# --------------------------------------------------------------------------- process tree memory


class TreeRss:
    """Peak resident set of a process and all its descendants, sampled every ``every_s``."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        import psutil

        self.root, self.every_s, self.peak_bytes = psutil.Process(pid), every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def pids(self) -> set[int]:
        import psutil

        try:
            return {self.root.pid, *(p.pid for p in self.root.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def sample(self) -> int:
        import psutil

        total = 0
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self) -> TreeRss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


# --------------------------------------------------------------------------- HTTP load


def wait_for_ping(port: int, server: Any, timeout_s: float = 180.0, log: Path | None = None) -> None:
    """Until ``/ping`` answers; raises when the server exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.is_file() else ""
            raise RuntimeError(f"model server exited with {server.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"model server did not answer /ping within {timeout_s:.0f} s") from None
            time.sleep(0.5)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def load_test(
    port: int,
    payloads: list[Payload],
    server: Any,
    clients: int = 8,
    requests: int = 200,
    timeout_s: float = 300.0,
    request_timeout_s: float = 120.0,
) -> dict[str, Any]:
    """``requests`` POSTs of ``payloads`` (in turn) from ``clients`` threads to ``/invocations``.

    Returns requests/s, latencies (s) overall and per payload kind, peak tree RSS, answers by error
    kind, the failures (each one a line) and whether every worker the server had before the run is
    still there and ``/ping`` still answers. Sending stops at ``timeout_s``."""
    url = f"http://127.0.0.1:{port}/invocations"
    deadline = time.monotonic() + timeout_s
    latencies: dict[str, list[float]] = {}
    kinds: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        payload = payloads[i % len(payloads)]
        if time.monotonic() > deadline:
            with lock:
                kinds["not sent (timeout_s)"] += 1
            return
        request = urllib.request.Request(
            url, data=payload.body(), headers={"Content-Type": "application/json"}
        )
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=request_timeout_s) as response:
                status, answer = response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            status, answer = err.code, None
        except (OSError, ValueError) as err:
            status, answer = -1, f"{type(err).__name__}"
        elapsed = time.perf_counter() - start
        with lock:
            latencies.setdefault(payload.kind, []).append(elapsed)
            if status != 200 or not isinstance(answer, dict):
                kinds[f"transport: {status} {answer or ''}".strip()] += 1
                failures.append(f"request {i} ({payload.kind}): HTTP {status} {answer or ''}")
                return
            for row in answer.get("predictions", []):
                error = row.get("error") or ""
                kind = error.split(":", 1)[0] if error else "answered"
                kinds[kind] += 1
                if kind != (payload.expect_error or "answered"):
                    failures.append(f"request {i} ({payload.kind}): got {error[:200] or 'an answer'}")

    with TreeRss(server.pid) as rss:
        before = rss.pids()
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(one, range(requests)))
        wall_s = time.perf_counter() - start
        after = rss.pids()
    alive = server.poll() is None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
            ping = True
    except OSError:
        ping = False
    every = [x for values in latencies.values() for x in values]
    return {
        "requests": len(every),
        "wall_s": wall_s,
        "requests_per_s": len(every) / wall_s if wall_s > 0 else float("nan"),
        "p50_s": _percentile(every, 50),
        "p99_s": _percentile(every, 99),
        "by_kind": {
            kind: {"n": len(v), "p50_s": _percentile(v, 50), "p99_s": _percentile(v, 99)}
            for kind, v in sorted(latencies.items())
        },
        "peak_rss_mib": rss.peak_bytes / 2**20,
        "answers": dict(kinds),
        "failures": failures,
        "workers_before": sorted(before),
        "workers_lost": sorted(before - after),
        "server_alive": alive and ping,
    }


def print_load(result: dict[str, Any]) -> None:
    print(
        f"{result['requests']} requests in {result['wall_s']:.1f} s: {result['requests_per_s']:.1f} requests/s, "
        f"p50 {1000 * result['p50_s']:.0f} ms, p99 {1000 * result['p99_s']:.0f} ms, "
        f"peak RSS of the server tree {result['peak_rss_mib']:.0f} MiB"
    )
    for kind, stats in result["by_kind"].items():
        print(
            f"  {kind:<28} n={stats['n']:>4}  p50 {1000 * stats['p50_s']:>7.0f} ms  p99 {1000 * stats['p99_s']:>7.0f} ms"
        )
    print("  answers by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(result["answers"].items())))
    lost = result["workers_lost"]
    print(
        f"  workers: {len(result['workers_before'])} processes before, {len(lost)} lost; "
        f"server {'alive' if result['server_alive'] else 'DOWN'}; failures: {len(result['failures'])}"
    )
    for line in result["failures"][:10]:
        print(f"    {line}")


# --------------------------------------------------------------------------- in-process


def _clock(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and process CPU seconds of ``fn()``."""
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    fn()
    wall_s = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return wall_s, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)


def bench_in_process(model: Any, rows: dict[str, list[dict[str, str]]], batch: int) -> list[dict[str, Any]]:
    """inputs/s per modality, one input per ``predict`` and ``batch`` per ``predict``."""
    import pandas as pd

    results = []
    for modality, modality_rows in rows.items():
        model.predict(pd.DataFrame(modality_rows[:2]))  # warm-up: prompt embeddings, first tower call
        for mode, size in (("single", 1), ("batched", batch)):
            frames = [pd.DataFrame(modality_rows[i : i + size]) for i in range(0, len(modality_rows), size)]
            errors: list[str] = []

            def run(frames: list = frames, errors: list = errors) -> None:
                for frame in frames:
                    errors.extend(e for e in model.predict(frame)["error"] if e)

            wall_s, cpu_s = _clock(run)
            n = len(modality_rows)
            results.append(
                {"modality": modality, "mode": mode, "batch": size, "n": n, "wall_s": wall_s, "cpu_s": cpu_s,
                 "inputs_per_s": n / wall_s, "errors": len(errors), "first_error": errors[0] if errors else ""}
            )  # fmt: skip
    return results


# --------------------------------------------------------------------------- the model


def model_source(cfg: ServingBenchConfig, scratch: Path) -> tuple[str, str, str, str]:
    """(tracking URI, model name, ref, note): the registered model when the store has it, else a
    random-init ``default_more_config()`` model registered in a scratch SQLite store."""
    import mlflow

    from pipelines.registry.pyfunc import log_zero_shot_model, resolve_version
    from pipelines.registry.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking_uri)
    try:
        version = resolve_version(cfg.model_name, cfg.model_ref, mlflow.MlflowClient(uri))
        return uri, cfg.model_name, str(version.version), f"{cfg.model_name} v{version.version} from {uri}"
    except Exception as err:  # noqa: BLE001 - no store, no model, no alias: use the stand-in
        reason = f"{type(err).__name__}"
    from encoders import MultimodalModel, default_more_config

    scratch_uri = f"sqlite:///{scratch / 'mlflow.db'}"
    mlflow.set_tracking_uri(scratch_uri)
    mlflow.set_experiment("bench-serving")
    with mlflow.start_run():
        model = MultimodalModel(default_more_config()).eval()
        version = log_zero_shot_model(model, "bench-serving", ["xray", "ecg"], preprocessing={})
    note = (
        f"{cfg.model_name}@{cfg.model_ref} not found in {uri} ({reason}): a random-init default_more_config() "
        f"model stands in (same shapes; timings only)"
    )
    return scratch_uri, "bench-serving", str(version.version), note


def run(cfg: ServingBenchConfig) -> int:
    import mlflow

    from pipelines.registry.serve import start_serving, stop_serving
    from pipelines.registry.server import free_port

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        scratch = Path(tmp)
        uri, name, ref, note = model_source(cfg, scratch)
        print(f"model: {note}")
        xrays = [dicom_bytes(seed, cfg.size_px) for seed in range(min(cfg.inputs, 8))]
        ecgs = [wfdb_record(scratch, f"ecg{seed}", seed) for seed in range(min(cfg.inputs, 8))]
        rows = {
            "xray": [
                {
                    "modality": "xray",
                    "input": b64(xrays[i % len(xrays)]),
                    "input_format": "dicom",
                    "labels": XRAY_LABELS,
                }
                for i in range(cfg.inputs)
            ],
            "ecg": [
                {
                    "modality": "ecg",
                    "input": ecgs[i % len(ecgs)],
                    "input_format": "wfdb",
                    "labels": ECG_LABELS,
                }
                for i in range(cfg.inputs)
            ],
        }
        mlflow.set_tracking_uri(uri)
        model = mlflow.pyfunc.load_model(f"models:/{name}/{ref}")
        print(
            f"\nin-process pyfunc (X-ray DICOM {cfg.size_px}x{cfg.size_px} 12-bit, "
            f"{len(xrays[0]) / 2**20:.1f} MiB; ECG WFDB 12x5000)"
        )
        print(
            f"{'modality':<8} {'mode':<8} {'batch':>5} {'inputs':>6} {'wall s':>7} {'CPU s':>7} {'inputs/s':>9} errors"
        )
        for r in bench_in_process(model, rows, cfg.batch):
            print(
                f"{r['modality']:<8} {r['mode']:<8} {r['batch']:>5} {r['n']:>6} {r['wall_s']:>7.2f} "
                f"{r['cpu_s']:>7.2f} {r['inputs_per_s']:>9.1f} {r['errors']} {r['first_error'][:80]}"
            )
        del model
        if not cfg.server:
            return 0
        port = free_port()
        log = scratch / "serve.log"
        print(f"\nmlflow models serve on 127.0.0.1:{port}: {cfg.clients} clients, {cfg.requests} requests")
        server = start_serving(name, ref, port, tracking_uri=uri, log_path=log)
        try:
            wait_for_ping(port, server, log=log)
            result = load_test(port, load_mix(xrays, ecgs), server, cfg.clients, cfg.requests, cfg.timeout_s)
        finally:
            stop_serving(server)
        print_load(result)
        ok = not result["failures"] and not result["workers_lost"] and result["server_alive"]
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    from pipelines.config import load_config

    return run(load_config(ServingBenchConfig, None, list(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
