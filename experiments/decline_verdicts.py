"""Every committed LM decline verdict re-derived with the calibrated rule (docs/THEORY.md §6).

Reads the recorded histories under ``results/`` (nothing is re-run): the ``cpu-decline`` study
(three settings, six losses, three seeds), SmolLM2-135M one epoch (six losses, two seeds) and
three epochs (dpo and mio, three seeds). For each loss and pair set (train, held-out) it prints
the old verdict (the rule before calibration: z = 3 paired standard errors over seeds; copied in
``benchmarks/bench_decline_oc.py``) beside the new one at ``--alpha``, with the seed-mean
curve's rise, drop from the peak and change and their ``1 − α`` intervals, and the matched
readings (chosen change at the largest common train margin) with their intervals over seeds.

    python experiments/decline_verdicts.py --json results/decline_verdicts.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mi_bounds.decline import compare  # noqa: E402

SETS = {
    "cpu-decline lr 3e-5": "results/lm-decline-cpu/beta0.1-lr3e-05/align_runs",
    "cpu-decline lr 1e-5": "results/lm-decline-cpu/beta0.1-lr1e-05/align_runs",
    "cpu-decline lr 1e-5, gold": "results/lm-decline-cpu/beta0.1-lr1e-05-gold/align_runs",
    "SmolLM2 1 epoch": "results/lm-smollm2-cpu/align_runs",
    "SmolLM2 3 epochs": "results/lm-smollm2-cpu/long/align_runs",
}
ABBREV = {"rise-then-fall": "RF", "fall-from-start": "FS", "no-decline": "ND",
          "too-short": "TS", "inconclusive": "INC"}


def _old_rule():
    spec = importlib.util.spec_from_file_location(
        "bench_decline_oc", ROOT / "benchmarks" / "bench_decline_oc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.old_rule


def _ci(m: dict, name: str) -> str:
    value = m["drop_from_peak" if name == "drop" else name]
    lo, hi = m[f"{name}_ci"]
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{value:+.2f} (no interval)" if name == "change" else f"{value:.2f} (no interval)"
    return f"{value:+.2f} [{lo:+.2f}, {hi:+.2f}]" if name == "change" else \
        f"{value:.2f} [{lo:.2f}, {hi:.2f}]"


def _welch(a: dict, b: dict, alpha: float) -> dict:
    """Difference of two seed means with a Welch–Satterthwaite ``1 − α`` interval."""
    from scipy import special

    x = np.array([v for v in a["per_seed"] if np.isfinite(v)])
    y = np.array([v for v in b["per_seed"] if np.isfinite(v)])
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = float(np.sqrt(va + vb))
    df = float((va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1)))
    half = float(special.stdtrit(df, 1 - alpha / 2)) * se
    d = float(x.mean() - y.mean())
    return {"diff": d, "ci": [d - half, d + half], "se": se, "df": df}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    old_rule = _old_rule()
    out = {}
    print("| setting | loss | pairs | old | new | rise [CI] | drop [CI] | change [CI] | "
          "per seed (new) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for setting, folder in SETS.items():
        results = [json.loads(f.read_text()) for f in sorted((ROOT / folder).glob("*.json"))]
        groups = compare.by_loss(results)
        comp = compare.compare(results, alpha=args.alpha)
        out[setting] = {"shapes": {}, "matched_margin": comp["matched"]["margin"]}
        for loss, runs in groups.items():
            for section in ("train", "heldout"):
                curves = [compare.series(r, section, "logps/chosen") for r in runs]
                values = np.array([v for _, v in curves])
                old = old_rule(values)
                new = comp["shapes"][loss][section]
                m = new["mean"]
                per = " · ".join(f"{ABBREV[k].lower()} {v}" for k, v in new["counts"].items()
                                 if v)
                changed = "" if ABBREV[old] == ABBREV[m["shape"]] else " ←"
                print(f"| {setting} | {loss} | {section} | {ABBREV[old]} | "
                      f"**{ABBREV[m['shape']]}**{changed} | {_ci(m, 'rise')} | "
                      f"{_ci(m, 'drop')} | {_ci(m, 'change')} | {per} |")
                out[setting]["shapes"][f"{loss}/{section}"] = {
                    "old": old, "new": m["shape"], "mean": m, "counts": new["counts"],
                    "thresholds": new["thresholds"]}
    print("\nMatched margin (train chosen change at the largest common margin, mean "
          "[1 − α interval over seeds]):\n")
    for setting, d in out.items():
        mm = d["matched_margin"]
        if not mm["levels"]:
            continue
        cells = []
        for loss, rows in mm["train"].items():
            r = rows[-1]
            if r["n_reached"] == 0:
                cells.append(f"{loss} not reached")
                continue
            lo, hi = r["ci"]
            interval = "" if lo is None or not np.isfinite(lo) else f" [{lo:+.2f}, {hi:+.2f}]"
            cells.append(f"{loss} {r['mean']:+.2f}{interval} ({r['n_reached']}/{r['n_seeds']})")
        print(f"- {setting}, margin {mm['levels'][-1]:.3g}: " + "; ".join(cells))
        rows = {loss: r[-1] for loss, r in mm["train"].items()}
        if {"dpo", "mio"} <= set(rows) and min(rows[k]["n_reached"] for k in ("dpo", "mio")) > 1:
            diff = _welch(rows["dpo"], rows["mio"], args.alpha)
            d["dpo_minus_mio_at_top_margin"] = diff
            print(f"  dpo − mio: {diff['diff']:+.2f} [{diff['ci'][0]:+.2f}, {diff['ci'][1]:+.2f}]"
                  f" (Welch, {diff['df']:.1f} df)")
    if args.json is not None:
        from mi_bounds._json import rounded
        from mi_bounds.decline.training_log import jsonable

        args.json.write_text(json.dumps(jsonable(rounded(out, 6)), indent=1, allow_nan=False)
                             + "\n")


if __name__ == "__main__":
    main()
