"""The distribution others depend on: version, licence, type marker, and the one-way imports."""

from __future__ import annotations

import ast
from importlib import metadata
from pathlib import Path

import pytest

import mi_bounds

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_installed_metadata():
    assert mi_bounds.__version__ == metadata.version("mi-bounds")


def test_licence_file_and_field():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert metadata.metadata("mi-bounds")["License-Expression"] == "MIT"
    assert project["authors"] and project["classifiers"]


def test_py_typed_ships_with_the_package():
    assert (Path(mi_bounds.__file__).parent / "py.typed").is_file()
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in data["tool"]["setuptools"]["package-data"]["mi_bounds"]


def test_the_library_imports_no_toy_models_experiments_figures_or_proofs():
    """No module of mi_bounds imports toy_models, experiments, figures or proofs, not even inside
    a function (data flows one way, docs/THEORY.md §7; the CLI names them as strings to load on
    demand)."""
    offending = []
    for path in sorted((ROOT / "mi_bounds").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offending += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in ("toy_models", "experiments", "figures", "proofs")]
    assert not offending, offending


def test_no_generic_top_level_name_is_installed():
    """The wheel holds mi_bounds and toy_models only: figures/, proofs/ and experiments/ stay in
    the checkout (docs/THEORY.md §7)."""
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = data["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(include) == ["mi_bounds*", "toy_models*"]


def test_the_command_finds_the_checkout_from_any_folder(tmp_path, monkeypatch, capsys):
    """`mi-bounds verify --list` works from a folder outside the checkout (figures/proofs are not
    installed; the CLI finds them beside the imported mi_bounds)."""
    from mi_bounds import cli

    monkeypatch.chdir(tmp_path)
    assert cli.checkout_root() == ROOT
    assert cli.main(["verify", "--list"]) == 0
    assert "p01" in capsys.readouterr().out.lower()
