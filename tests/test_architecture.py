"""The layers of docs/architecture.md, read from the source: imports flow downward only.

- ``encoders/`` is a model library: it imports nothing from ``pipelines``.
- A stage module (``pipelines/<stage>.py``, one per Make target) never imports another stage module.
- A library package (``pipelines/data``, ``training``, ``evaluation``, ...) and the shared base modules
  (``config``, ``errors``, ``env``) never import a stage module.

Every ``.py`` file is parsed with ``ast``: module-level and function-level imports, ``import x`` and
``from x import y`` (``y`` counts when it is a module), relative imports resolved against the file's
package, and ``importlib.import_module("literal")``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGE_MODULES = frozenset(
    f"pipelines.{name}"
    for name in (
        "demo_data",
        "preprocess",
        "train",
        "evaluate",
        "continual",
        "unlearn",
        "promote",
        "evidence",
    )
)
# The command line finds stages by name (strings in cli.STAGES), never by import.
SHELL_MODULES = frozenset({"pipelines.cli", "pipelines.__main__"})
BASE_MODULES = frozenset({"pipelines", "pipelines.config", "pipelines.errors", "pipelines.env"})
LIBRARY_PACKAGES = frozenset(
    f"pipelines.{name}"
    for name in (
        "data",
        "training",
        "evaluation",
        "registry",
        "continual_methods",
        "unlearning",
        "demo",
        "bench",
    )
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _package_of(path: Path, module: str) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (ROOT / relative.with_suffix(".py")).is_file() or (ROOT / relative / "__init__.py").is_file()


def imports(path: Path, module_name: str | None = None) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import in ``path`` (the module ``module_name``, by default
    named from its place in the repository), at any depth of the syntax tree."""
    package = _package_of(path, module_name or _module_name(path))
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from pipelines import train` imports the module pipelines.train.
            found.extend(
                (node.lineno, f"{module}.{alias.name}")
                for alias in node.names
                if _is_module(f"{module}.{alias.name}")
            )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _stage_of(module: str) -> str | None:
    return next((stage for stage in STAGE_MODULES if _within(module, stage)), None)


def _sources(*folders: str) -> list[Path]:
    return sorted(
        p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts
    )


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_every_pipelines_module_has_a_layer():
    """A new file must be placed on purpose: a stage, the shell, a base module or a library package."""
    unplaced = [
        str(path.relative_to(ROOT))
        for path in _sources("pipelines")
        if (module := _module_name(path)) not in STAGE_MODULES | SHELL_MODULES | BASE_MODULES
        and not any(_within(module, package) for package in LIBRARY_PACKAGES)
    ]
    assert not unplaced, f"modules in no layer of tests/test_architecture.py: {unplaced}"


def test_every_cli_stage_is_a_stage_module():
    from pipelines.cli import STAGES

    assert {module for module, _, _ in STAGES.values()} <= STAGE_MODULES


def test_encoders_import_nothing_from_pipelines():
    violations = [
        f"{_where(path, line)} imports {module}: encoders/ is a model library and knows no pipeline"
        for path in _sources("encoders")
        for line, module in imports(path)
        if _within(module, "pipelines")
    ]
    assert not violations, "\n".join(violations)


def test_a_stage_module_imports_no_other_stage_module():
    violations = []
    for path in _sources("pipelines"):
        own = _module_name(path)
        if own not in STAGE_MODULES:
            continue
        violations += [
            f"{_where(path, line)} imports {module}: a stage imports libraries, never another stage"
            for line, module in imports(path)
            if (stage := _stage_of(module)) is not None and stage != own
        ]
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("package", sorted(LIBRARY_PACKAGES | BASE_MODULES))
def test_libraries_import_no_stage_module(package):
    folder = ROOT / Path(*package.split("."))
    paths = _sources(str(folder.relative_to(ROOT))) if folder.is_dir() else [folder.with_suffix(".py")]
    if package == "pipelines":
        paths = [ROOT / "pipelines" / "__init__.py"]
    violations = [
        f"{_where(path, line)} imports {module}: library code never imports a stage module"
        for path in paths
        for line, module in imports(path)
        if _stage_of(module) is not None
    ]
    assert not violations, "\n".join(violations)


def test_the_import_parser_sees_function_level_and_relative_imports(tmp_path):
    """The checks above are only as good as ``imports``: it must see what a reviewer would."""
    sample = tmp_path / "probe.py"
    sample.write_text(
        "def f():\n    from pipelines import train\n    from . import registry\n    from ..training import config\n"
        "    import importlib\n    importlib.import_module('pipelines.evaluate')\n"
    )
    found = {module for _, module in imports(sample, "pipelines.data.probe")}
    assert {"pipelines.train", "pipelines.data.registry", "pipelines.training.config"} <= found
    assert "pipelines.evaluate" in found
