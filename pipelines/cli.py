"""``python -m pipelines <stage> [--config file.yaml] [key=value ...]``.

Each stage is one module in ``pipelines/`` exposing a ``Config`` dataclass (every default in one
place) and ``run(config) -> int``. The module docstring is the stage's ``--help`` text.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import time
import typing
from typing import Any

from pipelines.config import ConfigError, dump_yaml, load_config
from pipelines.errors import StageError

# stage name -> (module, run function, config class). Aliases map to the same entry.
STAGES: dict[str, tuple[str, str, str]] = {
    "demo-data": ("pipelines.demo_data", "run", "DemoDataConfig"),
    "preprocess": ("pipelines.preprocess", "run_all", "PreprocessConfig"),
    "preprocess-xray": ("pipelines.preprocess", "run_xray", "PreprocessConfig"),
    "preprocess-ecg": ("pipelines.preprocess", "run_ecg", "PreprocessConfig"),
    "preprocess-speech": ("pipelines.preprocess", "run_speech", "PreprocessConfig"),
    "preprocess-reports": ("pipelines.preprocess", "run_reports", "PreprocessConfig"),
    "train-more": ("pipelines.train", "run_more", "MoreTrainConfig"),
    "train-speech": ("pipelines.train", "run_speech", "SpeechTrainConfig"),
    "evaluate": ("pipelines.evaluate", "run", "EvaluateConfig"),
    "report": ("pipelines.evaluate", "run_report", "EvaluateConfig"),
    "continual": ("pipelines.continual", "run", "ContinualConfig"),
    "unlearn": ("pipelines.unlearn", "run", "UnlearnConfig"),
    "promote": ("pipelines.promote", "run", "PromoteConfig"),
    "rollback": ("pipelines.promote", "run_rollback", "PromoteConfig"),
    "evidence": ("pipelines.evidence", "run", "EvidenceConfig"),
}
ALIASES = {"train-more": ["train-morE", "train-MoRE"]}


def _resolve(name: str) -> str:
    for canonical, aliases in ALIASES.items():
        if name in aliases:
            return canonical
    return name


def _describe_fields(instance: Any, prefix: str = "") -> list[str]:
    """One help line per setting of ``instance`` (a stage's default config), nested sections flattened
    with their actual default values (a nested config class need not be constructible without arguments)."""
    lines = []
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if dataclasses.is_dataclass(value):
            lines.extend(_describe_fields(value, f"{prefix}{field.name}."))
            continue
        tp = hints[field.name]
        tp_name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
        doc = field.metadata.get("help", "")
        lines.append(f"  {prefix}{field.name} ({tp_name}, default {value!r}){': ' + doc if doc else ''}")
    return lines


def _available() -> list[str]:
    out = []
    for name, (module, *_rest) in STAGES.items():
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    stages = _available()
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        print("stages:\n  " + "\n  ".join(stages))
        return 0
    name = _resolve(argv.pop(0))
    if name not in stages:
        print(f"error: unknown stage {name!r}; choose one of: {', '.join(stages)}", file=sys.stderr)
        return 2
    module_name, run_name, config_name = STAGES[name]
    module = importlib.import_module(module_name)
    config_cls = getattr(module, config_name)
    parser = argparse.ArgumentParser(
        prog=f"python -m pipelines {name}",
        description=(module.__doc__ or "").strip(),
        epilog="settings (override with key=value):\n" + "\n".join(_describe_fields(config_cls())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file with settings for this stage")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="setting overrides")
    args = parser.parse_args(argv)
    try:
        config = load_config(config_cls, args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    print(f"# stage {name} config\n{dump_yaml(config)}", end="", flush=True)
    if args.print_config:
        return 0
    start = time.perf_counter()
    try:
        code = int(getattr(module, run_name)(config) or 0)
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 1
    print(f"# stage {name} exited {code} after {time.perf_counter() - start:.1f} s", flush=True)
    return code
