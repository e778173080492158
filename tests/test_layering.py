"""The layering runs one way (docs/architecture.md); scoring and atomic writes live in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "multiflow_pl"

ALLOWED = {
    "utils": {"utils"},
    "data": {"data", "utils"},
    "models": {"models", "data", "utils"},
    "speed": {"speed", "models", "data", "utils"},
    "evaluation": {"evaluation", "models", "data", "utils"},
}
"""Layer -> the layers its modules may import (the callbacks, the Lightning module and the entry points
sit on top and may import all of them)."""


def imported_modules(path: Path) -> set[str]:
    """Every ``multiflow_pl...`` module that ``path`` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {name for name in names if name.startswith("multiflow_pl.")}


def layer(module: str) -> str:
    """``multiflow_pl.models.flow`` -> ``models``; top-level modules are their own layer."""
    return module.split(".")[1]


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("lower", sorted(ALLOWED))
def test_lower_layers_never_import_upper_ones(lower):
    offences = []
    for path in source_files():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] != lower:
            continue
        for module in imported_modules(path):
            if layer(module) not in ALLOWED[lower]:
                offences.append(f"{relative} imports {module}")
    assert not offences, offences


def test_every_layer_is_checked():
    """A new package must get a place in the layering (or stay a top-level module on top)."""
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages - set(ALLOWED) == {"callbacks"}


def test_the_checker_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from multiflow_pl.evaluation.metrics import AnomalyMetrics\n")
    assert imported_modules(source) == {"multiflow_pl.evaluation.metrics"}


def calls_of(name: str) -> list[str]:
    """Source files (relative) that call a function or method named ``name``."""
    found = []
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    found.append(str(path.relative_to(PACKAGE)))
                    break
    return found


def test_scores_are_made_in_one_place():
    """NLL -> masked maps -> image and sample scores happens only in the torch model."""
    for step in ("mask_background", "image_scores", "sample_scores", "anomaly_maps"):
        assert calls_of(step) == ["models/model.py"], step


def os_renames(path: Path) -> int:
    """Calls of ``os.replace`` / ``os.rename`` / ``shutil.move`` in ``path``."""
    count = 0
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            pair = (getattr(owner, "id", None), node.func.attr)
            count += pair in {("os", "replace"), ("os", "rename"), ("shutil", "move")}
    return count


def test_files_are_renamed_into_place_in_one_place():
    users = {str(p.relative_to(PACKAGE)): n for p in source_files() if (n := os_renames(p))}
    assert list(users) == ["utils/atomic.py"], users
