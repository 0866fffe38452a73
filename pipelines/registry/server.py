"""Start a real ``mlflow server`` on a free loopback port (tests, local team setups)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(workdir: Path, timeout_s: float = 90.0) -> tuple[str, subprocess.Popen]:
    """``mlflow server`` with a sqlite backend and local artifacts in ``workdir``; returns (uri, process).

    Stop it with ``stop_server(process)``. Only 127.0.0.1 is used; one worker keeps it light.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin), "server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
        "--artifacts-destination", str(workdir / "artifacts"),
    ]  # fmt: skip
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited early; see {workdir / 'server.log'}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return uri, process
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise TimeoutError(f"mlflow server did not answer on {uri} within {timeout_s:.0f} s")


def stop_server(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop the server by its PID (terminate, then kill)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
