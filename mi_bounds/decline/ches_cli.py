"""``mi-bounds ches``: score a preference data set with CHES before training, and filter it.

    mi-bounds ches --model smollm2|DIR|FILE.gguf --pairs PAIRS.jsonl --out SCORES.jsonl
                   [--drop-top FRACTION --filtered OUT.jsonl] [--rank-by ches|ches_normalized]
                   [--batch-size N] [--threads N] [--format auto|raw|chat] [--system TEXT]
                   [--no-share-prompt] [--padding right|left] [--no-progress]

PAIRS.jsonl is TRL's preference format: one JSON object per line with string fields
``prompt``, ``chosen`` and ``rejected`` (other fields are ignored and kept by ``--filtered``;
blank lines are skipped) — also the small-LM path's own pairs files. Each pair is encoded as the
small-LM path scores it (:meth:`mi_bounds.lm.task_format.TaskFormat.encode`: the chat template
for a chat model, ``[BOS] prompt response EOS`` otherwise), and scored with
:func:`mi_bounds.decline.ches.ches_scores`.

SCORES.jsonl gets one line per pair, in order: ``index`` (0-based pair number), ``line``
(1-based line in PAIRS.jsonl), ``ches``, ``ches_normalized``, ``n_chosen`` and ``n_rejected``
(scored tokens, EOS included), ``edit_distance`` (token Levenshtein distance between the two
responses) and ``pair_sha`` (a hash of the pair's token ids). Lines are appended as the pairs
are scored; a rerun with the same arguments checks the lines already there (index and hash: a
different pairs file, tokenizer, format or system message is refused), drops a truncated last
line, and continues. The model's weights are not part of the hash.

``--drop-top F --filtered OUT.jsonl`` writes PAIRS.jsonl's lines without the round(F·N) pairs of
highest CHES (``--rank-by``; ties: the lower index goes first), in their original order.

Bad input — a missing or empty field, a line that is not JSON, a sequence longer than the
model's context, an output path that cannot be written — is reported on stderr naming the line
or argument, with exit code 2, before the model is loaded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mi_bounds._validation import int_arg
from mi_bounds.decline.displacement import token_edit_distance
from mi_bounds.lm.data import iter_pair_rows

__all__ = ["PairRecord", "encode_pair", "main", "pair_sha", "read_pairs", "select_top"]


#: pairs scored between two flushes of the output file (x batch size)
_CHUNK_BATCHES = 4


class InputError(ValueError):
    """Bad user input: reported as one line and exit code 2."""


@dataclass(frozen=True)
class PairRecord:
    """One pair of the input file: where it is, its raw line, its two encoded sequences."""

    index: int
    line: int
    raw: str
    chosen: tuple[list[int], int]
    rejected: tuple[list[int], int]

    @property
    def sha(self) -> str:
        return pair_sha(self.chosen, self.rejected)


def pair_sha(chosen: tuple[Sequence[int], int], rejected: tuple[Sequence[int], int]) -> str:
    """The ``pair_sha`` of a scores line: a hash of the pair's two encoded sequences
    ``(ids, n_prompt)`` (so of the pair, the tokenizer, the format and the system message)."""
    data = json.dumps([[int(t) for t in chosen[0]], int(chosen[1]),
                       [int(t) for t in rejected[0]], int(rejected[1])], separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def encode_pair(row: Any, encode: Any, context: int, where: str,
                ) -> tuple[tuple[list[int], int], tuple[list[int], int]]:
    """The chosen and rejected sequences ``(ids, n_prompt)`` of one checked pair row, as
    ``encode(prompt, response)`` gives them (a :class:`~mi_bounds.lm.task_format.TaskFormat`'s
    ``encode``); :class:`InputError` naming ``where`` if a response cannot be encoded or a
    sequence is longer than ``context``."""
    seqs = []
    for name in ("chosen", "rejected"):
        try:
            ids, n_prompt = encode(row["prompt"], row[name])
        except ValueError as err:  # e.g. a character outside a char tokenizer
            raise InputError(f"{where} ({name}): {err}") from None
        if len(ids) > context:
            raise InputError(f"{where} ({name}): prompt + response is {len(ids)} tokens,"
                             f" longer than the model's context of {context} tokens")
        seqs.append((list(ids), int(n_prompt)))
    return seqs[0], seqs[1]


def read_pairs(path: Path, encode: Any, context: int) -> list[PairRecord]:
    """Read, validate and encode every pair; :class:`InputError` names the file and line."""
    if not path.is_file():
        raise InputError(f"--pairs {str(path)!r} is not a file")
    out: list[PairRecord] = []
    try:
        rows = list(iter_pair_rows(path))  # the checks every reader of pairs makes
    except ValueError as err:
        raise InputError(str(err)) from None
    for lineno, line, row in rows:
        chosen, rejected = encode_pair(row, encode, context, f"{path}:{lineno}")
        out.append(PairRecord(len(out), lineno, line.rstrip("\n"), chosen, rejected))
    if not out:
        raise InputError(f"--pairs {str(path)!r} holds no pairs")
    return out


def select_top(values: Sequence[float], fraction: float) -> list[int]:
    """Indices of the round(fraction·N) highest values, ties broken by the lower index."""
    k = round(fraction * len(values))
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]


def _check_writable(path: Path, flag: str) -> None:
    if path.is_dir():
        raise InputError(f"{flag} {str(path)!r} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{flag} {str(path)!r} cannot be written: folder {str(parent)!r} "
                         "does not exist")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        raise InputError(f"{flag} {str(path)!r} cannot be written (no write permission on "
                         f"{str(target)!r})")


def _resume(out: Path, records: list[PairRecord]) -> int:
    """How many leading pairs ``out`` already holds (checked); a truncated tail is cut off."""
    if not out.exists():
        return 0
    good_bytes, done = 0, 0
    with open(out, "rb") as fh:
        data = fh.read()
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break  # a line cut by an interrupted write: scored again
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            raise InputError(f"--out {str(out)!r} line {done + 1} is not valid JSON: not a "
                             "scores file of this command (choose another --out)") from None
        if done >= len(records):
            raise InputError(f"--out {str(out)!r} holds more lines than --pairs has pairs "
                             f"({len(records)}): it belongs to another pairs file")
        rec = records[done]
        if not isinstance(row, dict) or row.get("index") != rec.index \
                or row.get("pair_sha") != rec.sha:
            raise InputError(f"--out {str(out)!r} line {done + 1} does not match pair "
                             f"{rec.index} (line {rec.line} of --pairs): it was written for "
                             "other pairs, tokenizer, --format or --system (choose another "
                             "--out)")
        good_bytes += len(raw)
        done += 1
    if good_bytes < len(data):
        with open(out, "r+b") as fh:
            fh.truncate(good_bytes)
    return done


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mi-bounds ches",
        description="Score each preference pair with CHES (Razin et al., ICLR 2025): high CHES "
        "predicts that DPO lowers the pair's chosen likelihood (docs/THEORY.md, 'Which pairs "
        "displace: CHES'). Optionally write the data set without the top-CHES pairs.")
    p.add_argument("--model", required=True,
                   help="smollm2 | a checkpoint directory (e.g. an LM run's base/model) | a "
                   ".gguf file")
    p.add_argument("--pairs", required=True, type=Path,
                   help="JSONL with string fields prompt, chosen, rejected (TRL's format)")
    p.add_argument("--out", required=True, type=Path,
                   help="scores JSONL, one line per pair (resumed if it exists)")
    p.add_argument("--drop-top", type=float, metavar="FRACTION",
                   help="with --filtered: remove the round(FRACTION*N) highest-CHES pairs")
    p.add_argument("--filtered", type=Path, metavar="OUT.jsonl",
                   help="where to write the pairs that remain after --drop-top")
    p.add_argument("--rank-by", choices=("ches", "ches_normalized"), default="ches",
                   help="score that --drop-top ranks by (default: ches)")
    p.add_argument("--batch-size", type=int_arg(1), default=16,
                   help="pairs per forward pass (default: 16)")
    p.add_argument("--threads", type=int_arg(1), default=None,
                   help="torch CPU threads (default: torch's own)")
    p.add_argument("--format", choices=("auto", "raw", "chat"), default="auto",
                   help="auto: the chat template when the tokenizer has one (default)")
    p.add_argument("--system", default=None,
                   help="chat format: system message (default: the template's own)")
    p.add_argument("--no-share-prompt", action="store_true",
                   help="run each sequence in full instead of computing the prompt once and "
                   "continuing both responses from its KV cache (same scores)")
    p.add_argument("--padding", choices=("right", "left"), default="right",
                   help="padding side with --no-share-prompt (same scores; default: right)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if (args.drop_top is None) != (args.filtered is None):
        raise InputError("--drop-top and --filtered go together (give both or neither)")
    if args.drop_top is not None and not 0 <= args.drop_top < 1:
        raise InputError(f"--drop-top must be a fraction in [0, 1), got {args.drop_top}")
    if not args.pairs.is_file():
        raise InputError(f"--pairs {str(args.pairs)!r} is not a file")
    for flag, path in (("--out", args.out), ("--filtered", args.filtered)):
        if path is not None and path.resolve() == args.pairs.resolve():
            raise InputError(f"{flag} must not be the --pairs file")
    if args.filtered is not None and args.filtered.resolve() == args.out.resolve():
        raise InputError("--filtered must not be the --out file")
    _check_writable(args.out, "--out")
    if args.filtered is not None:
        _check_writable(args.filtered, "--filtered")


def _score(args: argparse.Namespace, model: Any, pad_id: int, records: list[PairRecord],
           start: int) -> None:
    import torch
    from tqdm.auto import tqdm

    from mi_bounds.decline.ches import ches_scores

    model.eval()
    chunk = args.batch_size * _CHUNK_BATCHES
    bar = tqdm(total=len(records), initial=start, disable=args.no_progress, unit="pair",
               desc="ches", file=sys.stderr)
    with open(args.out, "a", encoding="utf-8") as fh:
        for lo in range(start, len(records), chunk):
            part = records[lo : lo + chunk]
            with torch.no_grad():
                s = ches_scores(model, [(r.chosen, r.rejected) for r in part],
                                pad_id, batch_size=args.batch_size,
                                side=args.padding, share_prompt=not args.no_share_prompt)
            if not (torch.isfinite(s.ches).all() and torch.isfinite(s.ches_normalized).all()):
                bad = next(r for r, a in zip(part, s.ches.tolist(), strict=True)
                           if not math.isfinite(a))
                raise RuntimeError(f"the model's hidden states are not finite for pair "
                                   f"{bad.index} (line {bad.line}); nothing more is written")
            lines = []
            for j, r in enumerate(part):
                lines.append(json.dumps({
                    "index": r.index, "line": r.line, "ches": float(s.ches[j]),
                    "ches_normalized": float(s.ches_normalized[j]),
                    "n_chosen": int(s.n_chosen[j]), "n_rejected": int(s.n_rejected[j]),
                    "edit_distance": token_edit_distance(r.chosen[0][r.chosen[1]:],
                                                         r.rejected[0][r.rejected[1]:]),
                    "pair_sha": r.sha,
                }) + "\n")
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
            bar.update(len(part))
    bar.close()


def _filter(args: argparse.Namespace, records: list[PairRecord]) -> str:
    from mi_bounds.decline.displacement import read_ches_scores

    rows = read_ches_scores(args.out)
    values = [float(r[args.rank_by]) for r in rows]
    dropped = set(select_top(values, args.drop_top))
    tmp = args.filtered.with_name(args.filtered.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            if r.index not in dropped:
                fh.write(r.raw + "\n")
    os.replace(tmp, args.filtered)
    least = min((values[i] for i in dropped), default=math.nan)
    return (f"removed {len(dropped)} of {len(records)} pairs (top {args.drop_top:g} by "
            f"{args.rank_by}, {args.rank_by} >= {least:.6g}); {len(records) - len(dropped)} "
            f"written to {args.filtered}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mi-bounds ches``; returns the exit code (2 for bad input)."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        _check_args(args)
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        # everything taken from the small-LM path, in one place
        from transformers import AutoConfig

        from mi_bounds.lm.model import load_model_dir
        from mi_bounds.lm.pretrained import resolve_model
        from mi_bounds.lm.task_format import task_format
        from mi_bounds.lm.tokenizer import load_tokenizer

        # resolve the model and read its tokenizer and config: the input is checked before
        # any weights are loaded

        model_dir = resolve_model(args.model)
        if not (Path(model_dir) / "config.json").is_file():
            raise InputError(f"--model {args.model!r}: {str(model_dir)!r} has no config.json "
                             "(not a transformers checkpoint)")
        tokenizer = load_tokenizer(model_dir)
        fmt = task_format(tokenizer, args.format, args.system)
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
        context = int(getattr(config, "max_position_embeddings", 0) or sys.maxsize)
        records = read_pairs(args.pairs, fmt.encode, context)
        start = _resume(args.out, records)
        if start < len(records):
            model, _ = load_model_dir(model_dir)
            _score(args, model.eval(), fmt.pad_id, records, start)
        print(f"{len(records)} pairs scored ({start} already in {args.out}); format "
              f"{fmt.kind}; scores in {args.out}", file=sys.stderr)
        if args.filtered is not None:
            print(_filter(args, records), file=sys.stderr)
    except (InputError, ValueError, ImportError, RuntimeError) as err:
        print(f"mi-bounds ches: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
