"""Does CHES predict which pairs displace on SmolLM2, under DPO and MIO? The pre-registered
validation and intervention of results/ches-validation/PREREGISTRATION.md.

    python -m experiments.ches_validation score RUN_DIR OUT
    python -m experiments.ches_validation prepare RUN_DIR OUT INTERVENTION_DIR
    python -m experiments.ches_validation run INTERVENTION_DIR [THREADS]
    python -m experiments.ches_validation collect INTERVENTION_DIR OUT
    python -m experiments.ches_validation report OUT STUDY_RESULTS

``RUN_DIR`` is the pre-registered study's run directory (``mi-bounds lm run --model smollm2
--preset smollm2-study``), ``OUT`` is ``results/ches-validation``, ``STUDY_RESULTS`` is
``results/smollm2-study`` (what ``python -m experiments.smollm2_study collect`` wrote).

* ``score``: CHES and length-normalised CHES (docs/THEORY.md §9,
  :func:`mi_bounds.decline.ches.ches_scores`) of the study's train pairs under its base model, on
  the token sequences the align stage trains on, with the baselines (response lengths, token edit
  distance, step-0 margin) → ``OUT/ches_train.jsonl``, one line per train pair in order.
* ``prepare``: the two intervention data sets (the 84 train pairs without the 13 of highest CHES;
  without 13 random pairs) → ``OUT/removal.json`` and two run directories that share the study's
  base model, held-out pairs and prompts, each a DPO run (lr 1e-5, β 0.1, seeds 0–2).
* ``run``: the six intervention runs, interleaved (drop-ches seed 0, drop-random seed 0, seed
  1, …) so that an interrupted session leaves both arms with as many seeds; each run is the
  align stage's :func:`mi_bounds.lm.align.align_one` on its run directory (resumable: a finished
  run is skipped, a cut one continues from its checkpoint), logged to ``<arm>/run.log``.
  Equivalent to ``mi-bounds lm run --out INTERVENTION_DIR/<arm>`` for each arm in turn.
* ``collect``: the intervention runs' histories (per-pair logs) → ``OUT/intervention/<arm>/``.
* ``report``: every number of the write-up from the committed files alone →
  ``OUT/report/{report.md, report.json, ches_vs_drop.png, intervention_kl.png}``.

The statistics: Spearman's ρ between a predictor and the seed-mean chosen drop, with two-level
(pairs × seeds) bootstrap replicates shared across predictors and arms
(:func:`mi_bounds.decline.displacement.spearman_replicates`, 95 % percentile intervals); the
intervention compares the two arms on the train pairs both keep at matched KL, margin and step
with the study's two-level bootstrap (:func:`experiments.smollm2_study.matched_difference`).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from experiments import smollm2_study as study

#: the pre-registered constants (results/ches-validation/PREREGISTRATION.md)
DROP_FRACTION = 0.15
RANDOM_SEED = 0
N_BOOT = 2000
PRIMARY_STEP, EARLY_STEP = 90.0, 30.0
ARMS = (study.DPO, study.MIO, study.MIO_HIGH)
BASELINES = ("n_chosen", "n_rejected", "edit_distance", "margin0")
PREDICTORS = ("ches", "ches_normalized", *BASELINES)
INTERVENTION = ("drop-ches", "drop-random")
#: the study's first setting: the arms dpo@1e-05 and mio@1e-05, and its step-0 evaluation
SETTING = "beta0.1-lr1e-05"


# --------------------------------------------------------------------------- score


def score(run_dir: Path, out: Path, *, batch_size: int = 16) -> Path:
    """CHES of every train pair of the study under its base model, with the baselines."""
    import torch

    from mi_bounds.decline.ches import ches_scores
    from mi_bounds.decline.displacement import token_edit_distance
    from mi_bounds.lm.align import _tokenise
    from mi_bounds.lm.config import RunConfig
    from mi_bounds.lm.model import load_model_dir
    from mi_bounds.lm.task_format import task_format

    run_dir, out = Path(run_dir), Path(out)
    config = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    data = json.loads((run_dir / "sample" / "data.json").read_text())
    step0 = json.loads((run_dir / "grid" / SETTING / "align" / "step0.json").read_text())
    rec = step0["record"]["train"]
    c0, r0 = rec["logps/chosen/per_pair"], rec["logps/rejected/per_pair"]
    model, tokenizer = load_model_dir(run_dir / "base" / "model")
    model.eval()
    fmt = task_format(tokenizer, config.task.format, config.task.system)
    chosen, rejected = _tokenise(fmt, data["train_pairs"])
    if not len(chosen) == len(c0) == len(r0):
        raise ValueError(f"{run_dir}: {len(chosen)} train pairs but step-0 logs of {len(c0)}")
    with torch.no_grad():
        s = ches_scores(model, list(zip(chosen, rejected, strict=True)), fmt.pad_id,
                        batch_size=batch_size)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ches_train.jsonl"
    with path.open("w") as f:
        for i, ((ci, nc), (ri, nr)) in enumerate(zip(chosen, rejected, strict=True)):
            row = {"index": i, "ches": float(s.ches[i]), "ches_normalized":
                   float(s.ches_normalized[i]), "n_chosen": int(s.n_chosen[i]),
                   "n_rejected": int(s.n_rejected[i]),
                   "edit_distance": token_edit_distance(ci[nc:], ri[nr:]),
                   "margin0": float(c0[i]) - float(r0[i]), "chosen_logp0": float(c0[i])}
            f.write(json.dumps(row) + "\n")
    return path


def read_scores(out: Path) -> list[dict[str, Any]]:
    """The rows of ``OUT/ches_train.jsonl``, in pair order."""
    rows = [json.loads(line) for line in (Path(out) / "ches_train.jsonl").read_text().splitlines()]
    if [r["index"] for r in rows] != list(range(len(rows))):
        raise ValueError(f"{out}/ches_train.jsonl: rows out of order")
    return rows


# --------------------------------------------------------------------------- prepare


def removal_sets(ches: list[float]) -> dict[str, list[int]]:
    """The pre-registered removals: the round(0.15·N) highest CHES (ties by the lower index),
    and as many pairs drawn by ``default_rng(0).choice(N, k, replace=False)``."""
    from mi_bounds.decline.ches_cli import select_top

    n = len(ches)
    top = sorted(select_top(ches, DROP_FRACTION))
    rand = sorted(int(i) for i in np.random.default_rng(RANDOM_SEED).choice(n, len(top),
                                                                             replace=False))
    return {"drop-ches": top, "drop-random": rand}


def prepare(run_dir: Path, out: Path, inter_dir: Path) -> dict[str, Any]:
    """``OUT/removal.json`` and one run directory per intervention arm (module docstring)."""
    run_dir, out, inter_dir = Path(run_dir).resolve(), Path(out), Path(inter_dir)
    scores = read_scores(out)
    removed = removal_sets([r["ches"] for r in scores])
    n = len(scores)
    kept = {arm: [i for i in range(n) if i not in set(rm)] for arm, rm in removed.items()}
    info = {"n_pairs": n, "fraction": DROP_FRACTION, "random_seed": RANDOM_SEED,
            "removed": removed, "kept": kept,
            "overlap": sorted(set(removed["drop-ches"]) & set(removed["drop-random"]))}
    (out / "removal.json").write_text(json.dumps(info, indent=1) + "\n")
    setting = run_dir / "grid" / SETTING
    config = json.loads((setting / "config.json").read_text())
    config["align"].update(losses=["dpo"], seeds=[0, 1, 2])
    data = json.loads((run_dir / "sample" / "data.json").read_text())
    for arm in INTERVENTION:
        d = inter_dir / arm
        (d / "sample").mkdir(parents=True, exist_ok=True)
        if not (d / "base").exists():
            (d / "base").symlink_to(run_dir / "base")
        sub = dict(data, train_pairs=[data["train_pairs"][i] for i in kept[arm]])
        (d / "sample" / "data.json").write_text(json.dumps(sub) + "\n")
        with (d / "sample" / "pairs_train.jsonl").open("w") as f:
            for p in sub["train_pairs"]:
                f.write(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")}) + "\n")
        (d / "config.json").write_text(json.dumps(config, indent=1) + "\n")
        (d / "inputs.json").write_text((setting / "inputs.json").read_text())
    return info


def run(inter_dir: Path, threads: int = 1) -> None:
    """Align both intervention arms, seeds interleaved (module docstring)."""
    import time

    import torch

    from mi_bounds.lm import _io
    from mi_bounds.lm.align import align_one, load_reference
    from mi_bounds.lm.run_dir import open_run

    torch.set_num_threads(int(threads))
    runs = {}
    for arm in INTERVENTION:
        d = Path(inter_dir) / arm

        def log(message: str, d: Path = d) -> None:
            line = f"{time.strftime('%H:%M:%S')} {message}"
            print(f"{d.name}: {line}", flush=True)
            with (d / "run.log").open("a") as f:
                f.write(line + "\n")

        r = open_run(d, log=log)
        data = _io.read_json(d / "sample" / "data.json")
        runs[arm] = (r, data, load_reference(r, data))
    for seed in runs[INTERVENTION[0]][0].config.align.seeds:
        for arm in INTERVENTION:
            r, data, sets = runs[arm]
            align_one(r, "dpo", seed, sets, data)


def collect(inter_dir: Path, out: Path) -> None:
    """Each intervention arm's run directory → ``OUT/intervention/<arm>/``."""
    from mi_bounds.lm.collect import collect_run

    for arm in INTERVENTION:
        collect_run(Path(inter_dir) / arm, Path(out) / "intervention" / arm)


# --------------------------------------------------------------------------- statistics


def per_seed_change(runs: list[dict], at: str | float) -> np.ndarray:
    """``[seeds, pairs]``: each train pair's chosen change from step 0, per seed, at step ``at``
    (a number) or where the seed's sampled KL first reaches ``"kl<level>"`` (interpolated)."""
    y = study.pair_values(runs, "train")
    ch = y - y[..., :1]
    if isinstance(at, str):
        x = study.seed_curve(runs, "kl")
        xs = np.broadcast_to(x[:, None, :], ch.shape)
        return study._crossing(xs, ch, float(at[2:]))
    steps = study.seed_curve(runs, "step")[0]
    (hit,) = np.nonzero(steps == float(at))
    if hit.size != 1:
        raise ValueError(f"no evaluation at step {at}")
    return ch[..., int(hit[0])]


def largest_common_kl(arms: list[list[dict]]) -> float | None:
    """The largest pre-registered KL level every seed of every given arm reaches."""
    reach = min(max(h["kl"]["k1"] for h in r["history"]) for runs in arms for r in runs)
    got = [lv for lv in study.KL_LEVELS if lv <= reach]
    return max(got) if got else None


def _interval(reps: np.ndarray) -> list[float]:
    v = reps[np.isfinite(reps)]
    return [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] if v.size else [
        math.nan, math.nan]


def correlations(scores: list[dict], arms: dict[str, list[dict]]) -> dict[str, Any]:
    """ρ(predictor, drop) per arm and time, with intervals; C1–C3 with their decisions."""
    from mi_bounds.decline.displacement import spearman_replicates

    x = np.array([[float(r[p]) for r in scores] for p in PREDICTORS])
    present = [a for a in ARMS if a in arms]
    kl = largest_common_kl([arms[a] for a in (study.DPO, study.MIO) if a in arms])
    times: dict[str, str | float] = {"step90": PRIMARY_STEP, "step30": EARLY_STEP}
    if kl is not None:
        times[f"kl{kl:g}"] = f"kl{kl:g}"
    out: dict[str, Any] = {"n_pairs": x.shape[1], "arms": present, "predictors": PREDICTORS,
                           "times": {}, "n_boot": N_BOOT}
    reps_at: dict[str, np.ndarray] = {}
    for name, at in times.items():
        drops = [-per_seed_change(arms[a], at) for a in present]
        rho, reps = spearman_replicates(x, drops, n_boot=N_BOOT, seed=0)
        reps_at[name] = reps
        out["times"][name] = {a: {p: {"rho": float(rho[k, j]), "ci": _interval(reps[:, k, j])}
                                  for k, p in enumerate(PREDICTORS)}
                              for j, a in enumerate(present)}
    reps = reps_at["step90"]
    ia = {a: present.index(a) for a in present}
    h: dict[str, Any] = {}
    if study.DPO in ia:
        j = ia[study.DPO]
        c1 = out["times"]["step90"][study.DPO]["ches"]
        h["C1"] = {**c1, "decision": study.decide(c1["ci"])}
        rows = {}
        for b in BASELINES:
            kb = PREDICTORS.index(b)
            sign = 1.0 if out["times"]["step90"][study.DPO][b]["rho"] >= 0 else -1.0
            d = reps[:, 0, j] - sign * reps[:, kb, j]
            est = c1["rho"] - sign * out["times"]["step90"][study.DPO][b]["rho"]
            rows[b] = {"sign": sign, "difference": float(est), "ci": _interval(d),
                       "decision": study.decide(_interval(d))}
        decisions = [r["decision"] for r in rows.values()]
        h["C2"] = {"baselines": rows, "decision": "refuted" if "refuted" in decisions else
                   "supported" if all(v == "supported" for v in decisions) else "inconclusive"}
        for mio in (study.MIO, study.MIO_HIGH):
            if mio in ia:
                d = reps[:, 0, j] - reps[:, 0, ia[mio]]
                est = c1["rho"] - out["times"]["step90"][mio]["ches"]["rho"]
                h["C3" if mio == study.MIO else "C3_high_rate"] = {
                    "vs": mio, "difference": float(est), "ci": _interval(d),
                    "decision": study.decide(_interval(d)),
                    "rho_mio": out["times"]["step90"][mio]["ches"]}
    out["hypotheses"] = h
    return out


def common_pairs(removal: dict[str, Any]) -> tuple[list[int], dict[str, list[int]]]:
    """The train pairs both intervention arms keep (original indices), and where each sits in
    each arm's own per-pair logs (``{arm: positions}``)."""
    kept = removal["kept"]
    common = sorted(set(kept["drop-ches"]) & set(kept["drop-random"]))
    return common, {k: [kept[k].index(i) for i in common] for k in INTERVENTION}


def intervention(arms: dict[str, list[dict]], removal: dict[str, Any]) -> dict[str, Any]:
    """C4 and what is reported beside it (the pre-registration's intervention section)."""
    from mi_bounds.decline.compare import shape_counts

    a, b = (arms[k] for k in INTERVENTION)
    common, pos = common_pairs(removal)
    ya = study.pair_values(a, "train")[:, pos["drop-ches"]]
    yb = study.pair_values(b, "train")[:, pos["drop-random"]]
    ha, hb = study.pair_values(a, "heldout"), study.pair_values(b, "heldout")
    out: dict[str, Any] = {"n_common_pairs": len(common), "matched": {}}
    plan = {"kl": study.KL_LEVELS, "margin": study.MARGIN_LEVELS, "step": study.STEP_LEVELS}
    for q, levels in plan.items():
        xa, xb = study.seed_curve(a, q), study.seed_curve(b, q)
        out["matched"][q] = {
            "train_common": [study.matched_difference((xa, ya), (xb, yb), lv) for lv in levels]}
        if q == "kl":
            out["matched"][q]["heldout"] = [study.matched_difference((xa, ha), (xb, hb), lv)
                                            for lv in levels]
        for k, runs, y in (("drop-ches", a, ya), ("drop-random", b, yb)):
            out["matched"][q][k] = [study.matched(study.seed_curve(runs, q), y, lv)
                                    for lv in levels]
    decisions = [study.decide(r["ci"], r["reached"]) for r in out["matched"]["kl"]["train_common"]]
    out["C4"] = {"levels": list(study.KL_LEVELS), "decisions": decisions,
                 "decision": study.combine(decisions)}
    out["verdicts"] = {k: shape_counts(arms[k], study.ALPHA) for k in arms}
    out["accuracy"] = {k: float(study.final_accuracy(arms[k]).mean()) for k in arms}
    out["accuracy_difference"] = study.accuracy_difference(study.final_accuracy(a),
                                                           study.final_accuracy(b))
    out["kl_final"] = {k: [r["history"][-1]["kl"]["k1"] for r in arms[k]] for k in arms}
    return out


# --------------------------------------------------------------------------- report


def _rows_md(res: dict[str, Any]) -> str:
    lines = []
    for t, per_arm in res["times"].items():
        lines.append(f"\n**{t}** (ρ with the chosen drop, 95 % two-level bootstrap interval)\n")
        lines.append("| predictor | " + " | ".join(per_arm) + " |")
        lines.append("|---|" + "---|" * len(per_arm))
        for p in res["predictors"]:
            cells = [f"{v[p]['rho']:+.3f} [{v[p]['ci'][0]:+.3f}, {v[p]['ci'][1]:+.3f}]"
                     for v in per_arm.values()]
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure_scatter(scores: list[dict], arms: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [a for a in ARMS if a in arms]
    ches = np.array([r["ches"] for r in scores])
    fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3.4), sharey=False)
    for ax, a in zip(np.atleast_1d(axes), present, strict=True):
        drop = -per_seed_change(arms[a], PRIMARY_STEP).mean(0)
        ax.scatter(ches, drop, s=12)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(title=a, xlabel="CHES at step 0", ylabel="chosen drop at step 90 (nats)")
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


def _figure_intervention(arms: dict[str, list[dict]], removal: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, pos = common_pairs(removal)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for k, colour in zip(INTERVENTION, ("C3", "C0"), strict=True):
        y = study.pair_values(arms[k], "train")[:, pos[k]].mean(1)
        x = study.seed_curve(arms[k], "kl")
        for s in range(y.shape[0]):
            ax.plot(x[s], y[s] - y[s, 0], color=colour, alpha=0.8,
                    label=k if s == 0 else None)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="sampled KL(π‖π_ref) (nats)", ylabel="chosen change, common pairs (nats)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


def report(out: Path, study_results: Path) -> list[Path]:
    """Every table and figure of the write-up from the committed files (module docstring)."""
    from mi_bounds._json import rounded

    out = Path(out)
    scores = read_scores(out)
    arms = study.load_arms(Path(study_results))
    res: dict[str, Any] = {"correlations": correlations(scores, arms)}
    inter: dict[str, list[dict]] = {}
    for k in INTERVENTION:
        files = sorted((out / "intervention" / k / "align_runs").glob("*.json"))
        if files:
            inter[k] = sorted((json.loads(f.read_text()) for f in files), key=lambda r: r["seed"])
    removal = json.loads((out / "removal.json").read_text())
    if len(inter) == 2:
        res["intervention"] = intervention(inter, removal)
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    paths = [rep / "report.json", rep / "report.md", rep / "ches_vs_drop.png"]
    paths[0].write_text(json.dumps(rounded(res, 6), indent=1, allow_nan=True) + "\n")
    c = res["correlations"]
    md = ["# CHES validation on the study's train pairs (generated; do not edit)\n",
          f"{c['n_pairs']} train pairs; arms and seeds: " + ", ".join(
              f"{a} ({len(arms[a])})" for a in c["arms"]) + ".", _rows_md(c), "\n## Decisions\n"]
    for name, hyp in c["hypotheses"].items():
        md.append(f"- **{name}**: {hyp['decision']} — " + json.dumps(rounded(
            {k: v for k, v in hyp.items() if k != "decision"}, 3)))
    if "intervention" in res:
        iv = res["intervention"]
        md.append(f"\n## Intervention ({iv['n_common_pairs']} train pairs kept by both arms)\n")
        md.append("| quantity | level | drop-ches − drop-random | interval | decision |")
        md.append("|---|---|---|---|---|")
        for q, table in iv["matched"].items():
            for sec in ("train_common", "heldout"):
                for r in table.get(sec, []):
                    md.append(f"| {q} ({sec}) | {r['level']:g} | {r['mean']:+.3f} | "
                              f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | "
                              f"{study.decide(r['ci'], r['reached'])} |")
        md.append(f"\n**C4**: {iv['C4']['decision']} ({iv['C4']['decisions']})")
        ad = iv["accuracy_difference"]
        md.append(f"\nFinal held-out greedy accuracy: drop-ches {iv['accuracy']['drop-ches']:.3f},"
                  f" drop-random {iv['accuracy']['drop-random']:.3f}; difference "
                  f"{ad['mean']:+.3f} [{ad['ci'][0]:+.3f}, {ad['ci'][1]:+.3f}].")
        md.append("\nVerdicts (two-level, own kept pairs): " + ", ".join(
            f"{k} {v.get('train', {}).get('two_level', {}).get('shape', 'n/a')}"
            for k, v in iv["verdicts"].items()))
        _figure_intervention(inter, removal, rep / "intervention_kl.png")
        paths.append(rep / "intervention_kl.png")
    else:
        md.append("\n## Intervention: not run yet (no collected runs under intervention/)")
    paths[1].write_text("\n".join(md) + "\n")
    _figure_scatter(scores, arms, paths[2])
    return paths


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: python -m experiments.ches_validation score RUN_DIR OUT | prepare RUN_DIR "
             "OUT INTERVENTION_DIR | run INTERVENTION_DIR [THREADS] | collect INTERVENTION_DIR "
             "OUT | report OUT STUDY_RESULTS")
    commands = {"score": (score, 2), "prepare": (prepare, 3), "collect": (collect, 2),
                "report": (report, 2), "run": (run, 1)}
    if args[:1] == ["run"] and len(args) == 3:  # the optional thread count
        return run(Path(args[1]), int(args[2])) or 0
    if not args or args[0] not in commands or len(args) != commands[args[0]][1] + 1:
        print(usage, file=sys.stderr)
        return 2
    fn, _ = commands[args[0]]
    result = fn(*(Path(a) for a in args[1:]))
    if isinstance(result, Path | list):
        for p in result if isinstance(result, list) else [result]:
            print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
