"""The figure gallery matches what ``mi-bounds figures`` writes.

Which PNGs each figure module writes is read from its source: every call
``save(fig, out_dir, NAME, ...)`` of :func:`figures._style.save` writes ``NAME.png``, where
``NAME`` is a string literal or a module-level string constant. A call whose name cannot be
resolved that way fails the test (rather than being skipped), and so does a module with no such
call. The slow test checks this reading against reality by running every module with
``quick=True``.

Then, for every PNG: docs/FIGURES.md has a line for it and the command that regenerates it;
README.md's gallery section (between ``<!-- gallery:start -->`` and
``<!-- gallery:end -->``) link to ``docs/figures/NAME.png``; docs/figures/ holds it. Nothing
in those documents names a PNG that no module writes.
"""

from __future__ import annotations

import ast
import importlib
import re
from functools import cache
from pathlib import Path

import pytest

import figures

ROOT = Path(__file__).resolve().parents[1]
FIGURES_DIR = ROOT / "figures"
FIGURES_MD = ROOT / "docs" / "FIGURES.md"
README = ROOT / "README.md"
START, END = "<!-- gallery:start -->", "<!-- gallery:end -->"
#: A gallery PNG as the documents name it: docs/figures/NAME.png.
PNG_RE = re.compile(r"docs/figures/([A-Za-z0-9_\-]+)\.png")


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "string"`` assignments."""
    out = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _is_save(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Name) and f.id == "save") or (
        isinstance(f, ast.Attribute) and f.attr == "save"
        and isinstance(f.value, ast.Name) and f.value.id in ("_style", "style"))


def pngs_in_source(path: Path) -> list[str]:
    """The PNG file names that ``save(...)`` calls in ``path`` write; ValueError if unresolvable."""
    tree = ast.parse(path.read_text(), filename=str(path))
    constants = _constants(tree)
    names = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _is_save(node)):
            continue
        arg = node.args[2] if len(node.args) >= 3 else next(
            (k.value for k in node.keywords if k.arg == "name"), None)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.append(arg.value + ".png")
        elif isinstance(arg, ast.Name) and arg.id in constants:
            names.append(constants[arg.id] + ".png")
        else:
            raise ValueError(
                f"{path.name}:{node.lineno}: the figure name passed to save() is not a string "
                "literal or a module-level string constant; tests/test_gallery.py cannot tell "
                "which PNG it writes"
            )
    return names


@cache
def module_pngs() -> dict[str, tuple[str, ...]]:
    """Figure module name -> the PNGs it writes (from its source)."""
    return {name: tuple(pngs_in_source(FIGURES_DIR / f"{name}.py"))
            for name in figures.available()}


def all_pngs() -> set[str]:
    return {png for pngs in module_pngs().values() for png in pngs}


def _mentioned(text: str) -> set[str]:
    return {m + ".png" for m in PNG_RE.findall(text)}


def _gallery_section() -> str | None:
    text = README.read_text()
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split(END, 1)[0]


# --------------------------------------------------------------------------------------------


def test_the_source_reader_sees_literals_and_constants(tmp_path):
    src = tmp_path / "fig_x.py"
    src.write_text('NAME = "b"\ndef make(o, *, quick=False):\n'
                   '    return save(f, o, "a") + save(g, o, NAME, data={})\n')
    assert sorted(pngs_in_source(src)) == ["a.png", "b.png"]
    src.write_text('def make(o, *, quick=False):\n    return save(f, o, "x" + str(1))\n')
    with pytest.raises(ValueError, match="cannot tell"):
        pngs_in_source(src)


def test_every_figure_module_writes_a_png():
    mods = module_pngs()
    assert mods, "figures.available() found no figure module"
    for name, pngs in mods.items():
        assert pngs, f"figures/{name}.py calls no save(fig, out_dir, NAME): it writes no PNG"
    flat = [p for pngs in mods.values() for p in pngs]
    assert len(flat) == len(set(flat)), f"two modules write the same PNG: {sorted(flat)}"


def test_figures_md_lists_every_png_and_its_command():
    text = FIGURES_MD.read_text()
    for module, pngs in module_pngs().items():
        assert f"mi-bounds figures --only {module}" in text, (
            f"docs/FIGURES.md lacks the command that regenerates {module}")
        for png in pngs:
            assert f"docs/figures/{png}" in text, f"docs/FIGURES.md does not list {png}"
    stale = _mentioned(text) - all_pngs()
    assert not stale, f"docs/FIGURES.md lists PNGs no figure module writes: {sorted(stale)}"


def test_readme_gallery_links_every_png():
    section = _gallery_section()
    assert section is not None, f"README.md has no {START} ... {END} section"
    for png in all_pngs():
        assert f"](docs/figures/{png})" in section, f"README gallery has no image {png}"
    assert "mi-bounds figures" in section
    stale = _mentioned(section) - all_pngs()
    assert not stale, f"README gallery shows PNGs no figure module writes: {sorted(stale)}"


def test_docs_figures_holds_exactly_the_pngs_the_modules_write():
    on_disk = {p.name for p in (ROOT / "docs" / "figures").glob("*.png")}
    missing = all_pngs() - on_disk
    assert not missing, f"docs/figures/ lacks {sorted(missing)}: run `mi-bounds figures`"
    stale = on_disk - all_pngs()
    assert not stale, f"docs/figures/ holds PNGs no figure module writes: {sorted(stale)}"


@pytest.mark.slow
@pytest.mark.parametrize("module", figures.available())
def test_source_reading_matches_what_make_writes(module, tmp_path):
    """Run the module (quick) and compare the PNGs it writes with what its source says."""
    mod = importlib.import_module(f"figures.{module}")
    returned = mod.make(tmp_path, quick=True)
    written = {p.name for p in tmp_path.glob("*.png")}
    assert written == set(module_pngs()[module])
    assert {Path(p).name for p in returned if str(p).endswith(".png")} == written
