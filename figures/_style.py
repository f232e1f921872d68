"""Shared look and deterministic saving for every figure."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

from mi_bounds._json import rounded

matplotlib.use("Agg")
import matplotlib.pyplot as plt

plt.rcParams.update({
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "mi-bounds",
})

#: One colour per bound/loss, used by every figure so that a name always has the same colour.
COLORS = {
    "dv": "#1f77b4", "mine": "#1f77b4", "dpo": "#1f77b4",
    "nwj": "#ff7f0e", "tuba": "#8c564b",
    "js": "#2ca02c", "mio": "#2ca02c",
    "infonce": "#d62728", "smile": "#9467bd",
    "ipo": "#7f7f7f", "nca_pair": "#bcbd22", "bco_pair": "#17becf",
}


#: Significant digits of every float stored in a figure's JSON: far below float64's 17, so the
#: last-digit differences of another summation order (thread count, BLAS, CPU) do not show.
JSON_DIGITS = 12


def save(fig: plt.Figure, out_dir: Path, name: str, data: dict | None = None) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` (and ``name.json`` with ``data``) deterministically.

    Metadata that would change from run to run (creation date, software version) is stripped,
    and the JSON's floats are rounded to :data:`JSON_DIGITS` significant digits, so
    regenerating a figure from the same numbers gives the same bytes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, metadata={"Software": None}, bbox_inches="tight")
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None,
                               "Creator": None}, bbox_inches="tight")
    plt.close(fig)
    paths = [png, pdf]
    if data is not None:
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(rounded(data, JSON_DIGITS), indent=2, sort_keys=True,
                                   default=float) + "\n")
        paths.append(path)
    return paths
