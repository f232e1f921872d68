"""``mi-bounds estimate``: estimate mutual information from samples with a neural critic.

Two forms::

    mi-bounds estimate [--task gaussian|cubic --mi 4 --dim 20 | --data file.npz]
                       [--bound smile --clip 5] [--critic separable] [--steps 4000]
                       [--batch-size 64] [--lr 5e-4] [--device cpu] [--seed 0] [--out results.json]
    mi-bounds estimate staircase [--plan default|full|quick] [--out-dir results/staircase]
                                 [--objectives js infonce ...] [--threads 1] [--table]

The first trains one critic and prints the trained critic's estimate with its standard error
over fresh evaluation batches (and the true MI where known). The second runs (or resumes) the
staircase experiment of :mod:`mi_bounds.staircase`, one JSON per finished run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import torch

from mi_bounds.estimate import ESTIMATORS, EstimateConfig, estimate_mi

__all__ = ["main"]

D = " (default: %(default)s)"


def _help(name: str) -> str:
    """The help of an :class:`EstimateConfig` field, read from its docstring."""
    doc = EstimateConfig.__doc__ or ""
    key = f"        {name}:"
    for i, line in enumerate(lines := doc.splitlines()):
        if line.startswith(key):
            text = [line[len(key):].strip()]
            for nxt in lines[i + 1:]:
                if nxt.startswith("            "):
                    text.append(nxt.strip())
                else:
                    break
            return " ".join(text).replace("%", "%%")
    return ""


def _parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in fields(EstimateConfig)}
    p = argparse.ArgumentParser(
        prog="mi-bounds estimate",
        description="Estimate I(X;Y) with a neural critic trained on a bound. "
        "`mi-bounds estimate staircase --help` for the staircase experiment.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--task", choices=["gaussian", "cubic"], default="gaussian",
                     help="correlated Gaussians with known MI (cubic: y -> y^3)" + D)
    src.add_argument("--data", type=Path, help=".npz file with arrays X [n, dx], Y [n, dy] "
                     "and optional scalar true_mi")
    p.add_argument("--mi", type=float, default=4.0, help="true MI of the task, nats" + D)
    p.add_argument("--dim", type=int, default=20, help="dimension of the task" + D)
    p.add_argument("--bound", default=defaults["bound"],
                   help=f"{_help('bound')} One of {', '.join(ESTIMATORS)}, smile_<tau>." + D)
    p.add_argument("--clip", type=lambda s: None if s.lower() in ("none", "inf") else float(s),
                   default=defaults["clip"], help=_help("clip") + D)
    p.add_argument("--critic", choices=["separable", "concat"], default="separable",
                   help="critic architecture" + D)
    p.add_argument("--hidden-dim", type=int, default=256, help="MLP width" + D)
    p.add_argument("--embed-dim", type=int, default=32, help="separable embedding size" + D)
    p.add_argument("--layers", type=int, default=2, help="extra hidden layers" + D)
    p.add_argument("--steps", type=int, default=defaults["steps"], help=_help("steps") + D)
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                   help=_help("batch_size") + D)
    p.add_argument("--lr", type=float, default=defaults["lr"], help=_help("lr") + D)
    p.add_argument("--device", default=defaults["device"], help=_help("device") + D)
    p.add_argument("--seed", type=int, default=defaults["seed"], help=_help("seed") + D)
    p.add_argument("--eval-batches", type=int, default=defaults["eval_batches"],
                   help=_help("eval_batches") + D)
    p.add_argument("--report", nargs="*", default=[], help=_help("report"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, help="write the result (settings, per-step values) as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _staircase_parser() -> argparse.ArgumentParser:
    from mi_bounds.staircase import DEFAULT_OUT, OBJECTIVES, PLANS

    p = argparse.ArgumentParser(
        prog="mi-bounds estimate staircase",
        description="Run or resume the MI staircase (2,4,6,8,10 nats; Poole et al. 2019; "
        "Song & Ermon 2020). Finished runs are skipped.",
    )
    p.add_argument("--plan", choices=list(PLANS), default="default",
                   help="default: what fitted the shared CPU (see mi_bounds.staircase.PLANS); "
                   "full: every task, critic and objective at 4000 steps/level; quick: a smoke "
                   "test" + D)
    p.add_argument("--objectives", nargs="+", choices=list(OBJECTIVES), default=list(OBJECTIVES),
                   help="training objectives to run (default: all)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help=D.strip())
    p.add_argument("--device", default="cpu", help="torch device" + D)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads" + D)
    p.add_argument("--seed", type=int, default=0, help="seed of every run" + D)
    p.add_argument("--table", action="store_true", help="only print the bias/variance table of the "
                   "finished runs")
    p.add_argument("--progress", action="store_true", help="progress bar per run")
    return p


def _staircase(argv: Sequence[str]) -> int:
    from mi_bounds.staircase import bias_variance_table, load_runs, plan, run_grid

    args = _staircase_parser().parse_args(argv)
    if not args.table:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        specs = plan(args.plan, args.objectives, seed=args.seed)
        run_grid(specs, args.out_dir, progress=args.progress, device=args.device)
    print(bias_variance_table(load_runs(args.out_dir)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mi-bounds estimate``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "staircase":
        return _staircase(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    from mi_bounds.tasks import GaussianTask, load_npz

    try:
        if args.data is not None:
            task = load_npz(args.data)
        else:
            task = GaussianTask(mi=args.mi, dim=args.dim, cubic=args.task == "cubic")
        config = EstimateConfig(
            bound=args.bound, clip=args.clip, steps=args.steps, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, device=args.device, report=tuple(args.report),
            eval_batches=args.eval_batches, progress=not args.no_progress,
        )
    except (ValueError, TypeError, FileNotFoundError) as err:
        parser.error(str(err))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result, _ = estimate_mi(
        task, config, critic=args.critic, hidden_dim=args.hidden_dim, embed_dim=args.embed_dim,
        layers=args.layers,
    )
    true_mi = task.true_mi(config.steps - 1)
    for name in config.names:
        if name in result.final:
            mean, se = result.final[name]
            line = (
                f"{name}: {mean:.4f} ± {se:.4f} nats "
                f"(± 1 standard error, {config.eval_batches} batches)"
            )
        else:
            line = f"{name}: {result.estimates[name][-1]:.4f} nats (last training batch)"
        print(line)
    if true_mi is not None:
        print(f"true MI: {true_mi:.4f} nats")
    sys.stdout.flush()
    print(f"{result.steps_per_second:.1f} steps/s on {config.device}", file=sys.stderr)
    if args.out is not None:
        record = result.to_dict()
        record["source"] = str(args.data) if args.data is not None else {
            "task": args.task, "mi": args.mi, "dim": args.dim}
        record["critic"] = {"name": args.critic, "hidden_dim": args.hidden_dim,
                            "embed_dim": args.embed_dim, "layers": args.layers}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0
