"""``mi-bounds estimate``: estimate mutual information from samples with a neural critic.

Two forms::

    mi-bounds estimate [--task gaussian|cubic|student --mi 4 --dim 20 [--df 5] | --data file.npz]
                       [--bound smile --clip 5 | --bound ksg] [--critic separable|concat|auto]
                       [--steps 4000] [--batch-size K] [--lr LR] [--test-fraction 0.5]
                       [--no-standardize] [--no-cap-scores] [--interval jackknife|bootstrap]
                       [--device cpu] [--seed 0]
                       [--out results.json]
    mi-bounds estimate staircase [--plan default|full|quick] [--out-dir results/staircase]
                                 [--objectives js infonce ...] [--threads 1] [--table]

The first trains one critic and prints its estimate with a standard error: on fresh evaluation
batches for a task, on held-out test rows for ``--data`` (:mod:`mi_bounds.estimation.heldout`:
split, standardise with train-row statistics, choose the checkpoint on validation rows; the
train-row value is printed beside it). ``--bound ksg`` runs the non-neural KSG estimator
(:mod:`mi_bounds.estimation.ksg`) instead. The second runs (or resumes) the staircase experiment
of :mod:`mi_bounds.estimation.staircase`, one JSON per finished run.

Before anything is trained: the options are checked against the chosen estimator (KSG refuses
what it would ignore), the ``--out`` destination is probed, sizes are checked against memory,
and a ``--data`` sample is checked for degenerate dependence
(:mod:`mi_bounds.estimation.degenerate`: infinite or unresolvable MI is refused with the
reason; duplicate rows by ``--duplicates``). ``--bound js`` prints the JS bound with the JSD
it implies (it is not MI).

Exit codes: 0 done; 2 bad input (message names the argument; nothing is trained), including a
degenerate sample; 1 the critic diverged (message says what to change; no estimate, no result
file); 130 interrupted by Ctrl-C (with ``--data`` the best checkpoint so far is reported,
flagged, and written to ``--out``).

Why one module: one parser serves both sources (a task, ``--data``) and every estimator, and
the checks of which option applies to which source and estimator read that one parser; the
module is long because each refusal names the option and says what to do instead.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mi_bounds._json import dumps
from mi_bounds._paths import check_memory, check_output_file, write_text_atomic
from mi_bounds.estimation.estimate import estimate_mi
from mi_bounds.estimation.marginals import MARGINALS
from mi_bounds.estimation.training import (
    ESTIMATORS,
    INTERVALS,
    DivergenceError,
    EstimateConfig,
)

if TYPE_CHECKING:
    from mi_bounds.estimation.tasks import Task

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


def _none_or_float(s: str) -> float | None:
    return None if s.lower() in ("none", "inf") else float(s)


#: Critic sizes with --task (the staircase's published sizes).
TASK_CRITIC = {"hidden_dim": 256, "embed_dim": 32, "layers": 2}


def _parser() -> argparse.ArgumentParser:
    from mi_bounds.estimation.heldout import SAMPLE_CRITIC, SAMPLE_DEFAULTS

    defaults = {f.name: f.default for f in fields(EstimateConfig)}

    def two(task: object, data: object) -> str:
        return f" (default: {task} with --task, {data} with --data)"

    p = argparse.ArgumentParser(
        prog="mi-bounds estimate",
        description="Estimate I(X;Y) with a neural critic trained on a bound (or with KSG). "
        "With --data the rows are split: the critic is trained on train rows, the checkpoint "
        "is chosen on validation rows, and the estimate comes from held-out test rows. "
        "`mi-bounds estimate staircase --help` for the staircase experiment.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--task", choices=["gaussian", "cubic", "student"], default="gaussian",
                     help="correlated Gaussians with known MI (cubic: y -> y^3; student: the "
                     "multivariate Student-t with --df degrees of freedom at the same MI)" + D)
    src.add_argument("--data", type=Path, help=".npz file with 2-D arrays X [n, dx], Y [n, dy] "
                     "and optional scalar true_mi")
    p.add_argument("--mi", type=float, default=4.0, help="true MI of the task, nats (at most "
                   "9 nats per dimension)" + D)
    p.add_argument("--dim", type=int, default=20, help="dimension of the task" + D)
    p.add_argument("--df", type=float, default=5.0, help="degrees of freedom of --task student "
                   "(its MI is at least that at zero correlation, e.g. 0.56 nats for --df 5 "
                   "--dim 20)" + D)
    p.add_argument("--bound", default=defaults["bound"],
                   help=f"{_help('bound')} One of {', '.join(ESTIMATORS)}, smile_<tau>, or ksg "
                   "(Kraskov et al. 2004, estimator 1: no critic; on --data it uses all rows)."
                   + D)
    p.add_argument("--clip", type=_none_or_float, default=defaults["clip"],
                   help=_help("clip") + D)
    p.add_argument("--critic", choices=["separable", "concat", "auto"], default="separable",
                   help="critic architecture; auto (--data only): train both, keep the one "
                   "with the higher validation score (costs both; concat dominates)" + D)
    for flag, name, text in (("--hidden-dim", "hidden_dim", "MLP width"),
                             ("--embed-dim", "embed_dim", "separable embedding size"),
                             ("--layers", "layers", "extra hidden layers")):
        p.add_argument(flag, type=int, help=text + two(TASK_CRITIC[name], SAMPLE_CRITIC[name]))
    p.add_argument("--steps", type=int, default=defaults["steps"],
                   help=_help("steps") + " With --data: the most steps (early stopping)." + D)
    p.add_argument("--batch-size", type=int, help=_help("batch_size") + two(
        defaults["batch_size"], f"min({SAMPLE_DEFAULTS['batch_size']}, fit rows)"))
    p.add_argument("--lr", type=float, help=_help("lr") + two(defaults["lr"],
                                                              SAMPLE_DEFAULTS["lr"]))
    p.add_argument("--device", default=defaults["device"], help=_help("device") + D)
    p.add_argument("--seed", type=int, default=defaults["seed"], help=_help("seed") + D)
    p.add_argument("--eval-batches", type=int, default=defaults["eval_batches"],
                   help=_help("eval_batches") + D)
    p.add_argument("--report", nargs="*", default=[], help=_help("report"))
    g = p.add_argument_group("finite samples (--data)")
    g.add_argument("--test-fraction", type=float, default=defaults["test_fraction"],
                   help=_help("test_fraction") + D)
    g.add_argument("--validation-fraction", type=float,
                   default=defaults["validation_fraction"],
                   help=_help("validation_fraction") + D)
    g.add_argument("--no-standardize", action="store_true", help="do not standardise X and Y "
                   "(default: standardise with train-row statistics; heavy-tailed features, "
                   "beyond ±10 standard deviations, through asinh of a median/IQR scaling)")
    g.add_argument("--marginals", choices=MARGINALS, default=defaults["marginals"],
                   help="how each feature is standardised: 'rank' (normal scores of the "
                   "train-row ranks: the estimate does not change when a feature is re-measured "
                   "through any increasing map) or 'standard' (z-scores; asinh for heavy "
                   "tails)" + D)
    g.add_argument("--no-cap-scores", action="store_true", help="evaluate the critic as it "
                   "is (default: capped at the largest value it gives a fit-row pair, so that "
                   "pairs it extrapolates to cannot decide the estimate; still a bound on I)")
    g.add_argument("--interval", choices=INTERVALS, default=defaults["interval"],
                   help=_help("interval") + D)
    g.add_argument("--duplicates", choices=["refuse", "drop", "keep"],
                   default=defaults["duplicates"], help=_help("duplicates") + D)
    g.add_argument("--eval-every", type=int, default=defaults["eval_every"],
                   help=_help("eval_every") + D)
    g.add_argument("--patience", type=int, default=defaults["patience"],
                   help=_help("patience") + D)
    g.add_argument("--ksg-k", type=int, default=3, help="neighbour order k of --bound ksg" + D)
    g.add_argument("--samples", type=int, default=5000,
                   help="--bound ksg with --task: rows drawn from the task" + D)
    p.add_argument("--max-abs-score", type=_none_or_float, default=defaults["max_abs_score"],
                   help=_help("max_abs_score") + D)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, help="write the result (settings, per-step values) as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _staircase_parser() -> argparse.ArgumentParser:
    from mi_bounds.estimation.staircase import DEFAULT_OUT, OBJECTIVES, PLANS

    p = argparse.ArgumentParser(
        prog="mi-bounds estimate staircase",
        description="Run or resume the MI staircase (2,4,6,8,10 nats; Poole et al. 2019; "
        "Song & Ermon 2020). Finished runs are skipped.",
    )
    p.add_argument("--plan", choices=list(PLANS), default="default",
                   help="default: what fitted the shared CPU (see "
                   "mi_bounds.estimation.staircase.PLANS); "
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
    from mi_bounds.estimation.staircase import bias_variance_table, load_runs, plan, run_grid

    parser = _staircase_parser()
    args = parser.parse_args(argv)
    try:
        _check_threads(args.threads)
    except ValueError as err:
        parser.error(str(err))
    if not args.table:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        from mi_bounds._lock import LockHeld, run_lock

        specs = plan(args.plan, args.objectives, seed=args.seed)
        try:
            with run_lock(args.out_dir, "mi-bounds estimate staircase"):
                run_grid(specs, args.out_dir, progress=args.progress, device=args.device)
        except LockHeld as err:
            print(f"mi-bounds estimate staircase: error: {err}", file=sys.stderr)
            return 2
    print(bias_variance_table(load_runs(args.out_dir)))
    return 0


def _flag_names(message: str) -> str:
    """Name the command-line flag in a message that starts with an EstimateConfig field or a
    parameter of the task (mi, dim, df)."""
    for name in [f.name for f in fields(EstimateConfig)] + ["mi", "dim", "df"]:
        if message.startswith(f"{name} "):
            return "--" + name.replace("_", "-") + message[len(name):]
    return message


def _check_threads(threads: int | None) -> None:
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be an int >= 1, got {threads}")


#: options that --bound ksg does not use (it trains nothing and reads every row)
KSG_IGNORES = ("--steps", "--test-fraction", "--validation-fraction", "--device", "--critic",
               "--hidden-dim", "--embed-dim", "--layers", "--batch-size", "--lr", "--clip",
               "--eval-batches", "--report", "--no-cap-scores", "--eval-every", "--patience",
               "--max-abs-score", "--duplicates", "--no-progress", "--threads", "--interval")
#: options that only --bound ksg uses
KSG_ONLY = ("--ksg-k", "--samples")


def _given(argv: Sequence[str], parser: argparse.ArgumentParser) -> set[str]:
    """The option strings given on the command line (abbreviations resolved by re-parsing
    with every default replaced by a sentinel)."""
    sentinel = object()
    probe = _parser()
    for action in probe._actions:
        action.default = sentinel
    ns = probe.parse_args(argv)
    given = set()
    for action in probe._actions:
        if action.option_strings and getattr(ns, action.dest, sentinel) is not sentinel:
            given.add(action.option_strings[0])
    return given


def _task(args: argparse.Namespace, given: set[str]) -> Task:
    """The sampler that ``--task``, ``--mi``, ``--dim`` and ``--df`` describe."""
    from mi_bounds.estimation.tasks import GaussianTask, StudentTask

    if args.task == "student":
        return StudentTask(mi=args.mi, dim=args.dim, df=args.df)
    if "--df" in given:
        raise ValueError("--df: only for --task student")
    return GaussianTask(mi=args.mi, dim=args.dim, cubic=args.task == "cubic")


def _source(args: argparse.Namespace) -> dict[str, object]:
    """The ``source`` record of a ``--task`` run."""
    out: dict[str, object] = {"task": args.task, "mi": args.mi, "dim": args.dim}
    if args.task == "student":
        out["df"] = args.df
    return out


def _ksg(args: argparse.Namespace, parser: argparse.ArgumentParser, given: set[str]) -> int:
    """``--bound ksg``: the KSG estimate on every row of --data, or on --samples task rows."""
    from mi_bounds.estimation.ksg import ksg_mi
    from mi_bounds.estimation.tasks import load_npz

    ignored = [f for f in KSG_IGNORES if f in given and f not in ("--no-progress", "--threads")]
    if ignored:
        parser.error(f"{', '.join(ignored)}: not used by --bound ksg (it trains nothing, on "
                     "every row of --data); drop them, or choose a neural --bound")
    try:
        if args.data is not None and "--samples" in given:
            raise ValueError("--samples: --bound ksg with --data uses every row of the file; "
                             "drop --samples")
        if args.samples < 2:
            raise ValueError(f"--samples must be an int >= 2, got {args.samples}")
        if args.data is None:
            check_memory(8.0 * 12 * args.samples * 2 * args.dim,
                         f"--samples {args.samples} with --dim {args.dim}")
        if args.out is not None:
            check_output_file(args.out)
        if args.data is not None:
            task = load_npz(args.data)
            x, y, true_mi = task.x_array, task.y_array, task.true_mi()
        else:
            task = _task(args, given)
            gen = torch.Generator().manual_seed(args.seed + 2)
            xt, yt = task(0, args.samples, gen)
            x, y, true_mi = xt.double().numpy(), yt.double().numpy(), task.true_mi()
        n = x.shape[0]
        if not (1 <= args.ksg_k <= n // 2):
            raise ValueError(f"--ksg-k must be an int in [1, n / 2] = [1, {n // 2}] for n = {n} "
                             f"rows, got {args.ksg_k} (with k near n every neighbourhood is the "
                             "whole sample and the estimate is about 0 whatever the "
                             "dependence; use k <= 10)")
        t0 = time.perf_counter()
        est = ksg_mi(x, y, k=args.ksg_k, standardize=not args.no_standardize,
                     marginals=args.marginals)
    except (ValueError, TypeError, FileNotFoundError) as err:
        parser.error(str(err))
    seconds = time.perf_counter() - t0
    tag = " UNRELIABLE" if est.flags else ""
    print(f"ksg: {est.estimate:.4f} ± {est.stderr:.4f} nats{tag} (k = {est.k}, all {est.n} "
          "rows; ± approximate standard error)")
    if true_mi is not None:
        print(f"true MI: {true_mi:.4f} nats")
    sys.stdout.flush()
    for flag in est.flags:
        print(f"warning: ksg: UNRELIABLE: {flag}", file=sys.stderr)
    if args.out is not None:
        record = {
            "config": {"bound": "ksg", "k": est.k, "standardize": not args.no_standardize,
                       "marginals": args.marginals,
                       "seed": args.seed},
            "final": {"ksg": {"estimate": est.estimate, "stderr": est.stderr,
                              "reliable": est.reliable, "flags": list(est.flags)}},
            "true_mi": true_mi, "seconds": seconds, "n": est.n,
            "source": str(args.data) if args.data is not None else {
                **_source(args), "samples": args.samples},
        }
        return _write(args.out, record)
    return 0


def _write(path: Path, record: dict) -> int:
    """Write ``record`` as strict JSON (atomically); 0, or 2 with a one-line message."""
    try:
        write_text_atomic(path, dumps(record, indent=1) + "\n")
    except OSError as err:
        print(f"mi-bounds estimate: error: --out: cannot write {path} ({err.strerror or err})",
              file=sys.stderr)
        return 2
    return 0


#: what the JS estimator's number is (it is not an MI value)
JS_LABEL = "the JS bound 2·JSD − 2 log 2 (not MI); JSD = (JS + 2 log 2) / 2"


def _jsd(js: float) -> float:
    return (js + 2 * math.log(2)) / 2


def _check_bound(args: argparse.Namespace) -> None:
    from mi_bounds.estimation.training import parse_estimator

    for flag, name in [("--bound", args.bound)] + [("--report", r) for r in args.report]:
        try:
            parse_estimator(name, args.clip)
        except ValueError as err:
            text = str(err)
            if text.startswith("unknown estimator"):
                text += "; ksg (--bound only: the non-neural KSG estimator)"
            raise ValueError(f"{flag}: {text}") from None


def _check_sizes(args: argparse.Namespace, config: EstimateConfig, x_dim: int,
                 y_dim: int) -> None:
    """Memory the run's arrays would need, refused beyond half of this machine's."""
    n_est = len(config.names) + 1
    check_memory(8.0 * n_est * config.steps, f"--steps {config.steps} (per-step records)")
    k = config.batch_size
    check_memory(4.0 * 8 * k * k + 4.0 * k * (x_dim + y_dim) * 64,
                 f"--batch-size {k} (a {k} x {k} score matrix per step)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mi-bounds estimate``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "staircase":
        return _staircase(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    given = _given(argv, parser)
    if args.bound == "ksg":
        return _ksg(args, parser, given)
    stray = [f for f in KSG_ONLY if f in given]
    if stray:
        parser.error(f"{', '.join(stray)}: only used by --bound ksg")
    from mi_bounds.estimation.critics import make_critic
    from mi_bounds.estimation.heldout import SAMPLE_CRITIC, SAMPLE_DEFAULTS, prepare_samples
    from mi_bounds.estimation.tasks import load_npz
    from mi_bounds.estimation.training import torch_device

    on_data = args.data is not None
    train_defaults = SAMPLE_DEFAULTS if on_data else {"batch_size": None, "lr": None}
    sizes = {k: getattr(args, k) for k in TASK_CRITIC}
    sizes = {k: (v if v is not None else (SAMPLE_CRITIC if on_data else TASK_CRITIC)[k])
             for k, v in sizes.items()}
    settings = {k: getattr(args, k) if getattr(args, k) is not None else train_defaults[k]
                for k in ("batch_size", "lr")}
    settings = {k: v for k, v in settings.items() if v is not None}
    prepared = None
    try:
        _check_threads(args.threads)
        _check_bound(args)
        if on_data and any(f in given for f in ("--mi", "--dim", "--df")):
            raise ValueError("--mi, --dim and --df describe --task; --data brings its own rows")
        for flag in ("--test-fraction", "--interval"):
            if not on_data and flag in given:
                raise ValueError(f"{flag}: only for --data (a --task draws fresh batches)")
        if args.out is not None:
            check_output_file(args.out)
        config = EstimateConfig(
            bound=args.bound, clip=args.clip, steps=args.steps, report=tuple(args.report),
            device=args.device, seed=args.seed, eval_batches=args.eval_batches,
            progress=not args.no_progress, test_fraction=args.test_fraction,
            validation_fraction=args.validation_fraction, standardize=not args.no_standardize,
            marginals=args.marginals,
            eval_every=args.eval_every, patience=args.patience,
            max_abs_score=args.max_abs_score, cap_scores=not args.no_cap_scores,
            duplicates=args.duplicates, interval=args.interval, **settings,
        )
        torch_device(config.device)  # CUDA requested but absent: an error now, not after loading
        if on_data:
            task = load_npz(args.data)
            if args.batch_size is None:  # the default batch: at most the fit rows
                from dataclasses import replace

                from mi_bounds.estimation.tasks import split_rows

                n_fit = split_rows(task.n, test_fraction=config.test_fraction,
                                   validation_fraction=config.validation_fraction,
                                   seed=config.seed).fit.size
                config = replace(config, batch_size=min(config.batch_size, n_fit))
            prepared = prepare_samples(task.x_array, task.y_array, config)
        else:
            task = _task(args, given)
        _check_sizes(args, config, task.x_dim, task.y_dim)
        for name, value in sizes.items():
            if isinstance(value, int) and value < (0 if name == "layers" else 1):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be an int >= {0 if name == 'layers' else 1}, "
                                 f"got {value}")
        if args.critic == "auto" and not on_data:
            raise ValueError("--critic auto chooses on validation rows: it needs --data")
        if args.critic == "auto" and config.validation_fraction == 0:
            raise ValueError("--critic auto chooses on validation rows: use "
                             "--validation-fraction > 0")
        for name in (("separable", "concat") if args.critic == "auto" else (args.critic,)):
            make_critic(name, task.x_dim, task.y_dim, **sizes)  # validates the sizes
    except (ValueError, TypeError, FileNotFoundError) as err:
        parser.error(_flag_names(str(err)))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        if on_data:
            from mi_bounds.estimation.heldout import estimate_mi_on_samples

            result, _ = estimate_mi_on_samples(
                task.x_array, task.y_array, config, true_mi=task.true_mi(), critic=args.critic,
                prepared=prepared, **sizes,
            )
        else:
            result, _ = estimate_mi(task, config, critic=args.critic, **sizes)
    except DivergenceError as err:
        print(f"mi-bounds estimate: error: {err}", file=sys.stderr)
        return 1
    true_mi = task.true_mi(config.steps - 1)
    for name in config.names:
        if name in result.final:
            mean, se = result.final[name]
            if on_data:
                tr, _ = result.final_train[name]
                tag = " UNRELIABLE" if result.flags.get(name) else ""
                # the interval is for this critic's bound value, not for I: the coverage study
                # (RESULTS §4.9) measured how often it covers each
                test, fit = result.extra["split"]["test"], result.extra["split"]["fit"]
                if config.interval == "bootstrap":
                    lo, hi = result.intervals[name]
                    line = (f"{name}: {mean:.4f} nats{tag}, 95 % bootstrap interval "
                            f"[{lo:.4f}, {hi:.4f}], se {se:.4f} (held out: {test} test rows; "
                            f"an interval for the {name} value of this critic, not for I; on "
                            f"the {fit} fit rows: {tr:.4f})")
                else:
                    lo, hi = result.intervals[name]
                    df = result.extra["interval"]["df"]
                    line = (f"{name}: {mean:.4f} ± {se:.4f} nats{tag} (held out: {test} test "
                            f"rows, ± 1 jackknife standard error; 95 % interval [{lo:.4f}, "
                            f"{hi:.4f}] (t, {df} df) for the {name} value of this critic, not "
                            f"for I; on the {fit} fit rows: {tr:.4f})")
            else:
                line = (f"{name}: {mean:.4f} ± {se:.4f} nats "
                        f"(± 1 standard error, {config.eval_batches} batches)")
        else:
            line = f"{name}: {result.estimates[name][-1]:.4f} nats (last training batch)"
        if name == "js":
            value = result.final[name][0] if name in result.final else result.estimates[name][-1]
            line = line.replace(" nats", "", 1) + f"; {JS_LABEL}: JSD = {_jsd(value):.4f} nats"
        print(line)
    if on_data:
        sel = result.selection
        print(f"checkpoint: step {sel['step']} of {sel['stopped_at']} (best on "
              f"{result.extra['split']['validation']} validation rows)"
              if sel["validation"] else f"checkpoint: the last step, {sel['step']}")
        if "critic" in sel:
            scores = ", ".join(f"{k} {v:.4f}" for k, v in sel["critic"]["validation_best"].items())
            print(f"critic: {sel['critic']['chosen']} (best validation {config.bound}: {scores})")
    if true_mi is not None:
        print(f"true MI: {true_mi:.4f} nats")
    sys.stdout.flush()
    for warning in result.extra.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    rate = result.steps_per_second
    print(f"{rate:.1f} steps/s on {config.device}" if math.isfinite(rate) else "",
          file=sys.stderr)
    if args.out is not None:
        record = result.to_dict()
        record["source"] = str(args.data) if on_data else _source(args)
        record["critic"] = {"name": args.critic, **sizes}
        if "critic" in result.selection:
            record["critic"]["chosen"] = result.selection["critic"]["chosen"]
        if "js" in record["final"]:
            js = record["final"]["js"]
            js.update(label=JS_LABEL, jsd=_jsd(js["estimate"]))
        code = _write(args.out, record)
        if code:
            return code
    if "interrupted_at" in result.selection:
        print(f"mi-bounds estimate: interrupted (Ctrl-C) at step "
              f"{result.selection['interrupted_at']}: the best checkpoint so far is reported "
              "above (flagged)" + (f" and written to {args.out}" if args.out else "")
              + "; run the same command again for the full run", file=sys.stderr)
        return 130
    return 0
