"""``python -m pipelines.registry.serve --port N [name=... ref=champion tracking_uri=...]`` (``make serve``).

Runs ``mlflow models serve -m models:/<name>@<ref> --env-manager local -h 127.0.0.1 -p <port>``: the
registered zero-shot pyfunc answers ``POST /invocations`` with ``{"dataframe_split": {"columns":
["modality", "input", "input_format", "labels"], "data": [...]}}``, where ``input`` is the file's
content (base64 DICOM/PNG/WAV/FLAC, a WFDB record as ``{"header": ..., "files": {...}}`` JSON or a
base64 zip; see ``pipelines.registry.payloads``). The server never reads a path a client names: it
loads the model with its logged ``model_config`` (``path_root`` None), so path input stays off;
``MLFLOW_PYFUNC_INFERENCE_CONFIG='{"max_rows": 16}'`` tunes the limits, its ``path_root`` is dropped. Loopback only; the current
environment is used (``--env-manager local``), so nothing is installed or downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pipelines.config import parse_overrides
from pipelines.registry.tracking import resolve_tracking_uri

DEFAULT_MODEL = "morE-cxr-ecg-report"
INFERENCE_CONFIG_ENV = "MLFLOW_PYFUNC_INFERENCE_CONFIG"


def serve_command(name: str, ref: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow models serve`` command line for ``models:/<name>@<ref>`` (or ``/<n>`` for a number)."""
    uri = f"models:/{name}/{ref}" if str(ref).isdigit() else f"models:/{name}@{ref}"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    return [str(mlflow_bin), "models", "serve", "-m", uri, "--env-manager", "local",
            "-h", host, "-p", str(port)]  # fmt: skip


def serving_env(tracking_uri: str | None) -> dict[str, str]:
    """The environment for ``mlflow models serve``: the tracking store, and this interpreter's ``bin/``
    first on PATH, because the scoring server is started as ``uvicorn ...`` from a shell and the venv
    may not be activated (``make serve`` calls ``.venv/bin/python`` directly)."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    env = {**os.environ, "MLFLOW_TRACKING_URI": resolve_tracking_uri(tracking_uri),
           "PATH": f"{bin_dir}{os.pathsep}{path}" if path else bin_dir}  # fmt: skip
    # An operator may tune the serving limits with MLflow's MLFLOW_PYFUNC_INFERENCE_CONFIG (JSON), but
    # never open path input on a server: path_root is dropped from it.
    if INFERENCE_CONFIG_ENV in env:
        try:
            overrides = json.loads(env[INFERENCE_CONFIG_ENV])
        except ValueError:
            overrides = {}
        overrides = (
            {k: v for k, v in overrides.items() if k != "path_root"} if isinstance(overrides, dict) else {}
        )
        env[INFERENCE_CONFIG_ENV] = json.dumps(overrides)
    return env


def start_serving(
    name: str, ref: str, port: int, tracking_uri: str | None = None, log_path: Path | None = None
) -> subprocess.Popen:
    """Start the model server as a child process in its own process group: ``mlflow models serve``
    starts uvicorn and its workers as children, and :func:`stop_serving` stops them all."""
    env = serving_env(tracking_uri)
    out = open(log_path, "wb") if log_path else None  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen(
        serve_command(name, ref, port), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_serving(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Stop a server from :func:`start_serving` and every process of its group (SIGTERM, then SIGKILL
    for whatever is left after ``timeout_s``)."""
    import time

    group = process.pid  # start_new_session: the group's id is the server's pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(group):
                break
            time.sleep(0.1)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.registry.serve", description=__doc__)
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="name=, ref=, tracking_uri=")
    args = parser.parse_args(argv)
    settings = {"name": DEFAULT_MODEL, "ref": "champion", "tracking_uri": None}
    extra = parse_overrides(args.overrides)
    unknown = sorted(set(extra) - set(settings))
    if unknown:
        print(f"error: unknown setting(s) {unknown}; valid: {sorted(settings)}", file=sys.stderr)
        return 2
    settings.update(extra)
    uri = resolve_tracking_uri(settings["tracking_uri"])
    print(f"serving models:/{settings['name']}@{settings['ref']} from {uri} on http://127.0.0.1:{args.port}")
    env = serving_env(uri)
    command = serve_command(str(settings["name"]), str(settings["ref"]), args.port)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
