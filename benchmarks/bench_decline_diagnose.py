"""How long ``mi-bounds diagnose`` takes on a 10,000-row log (docs/THEORY.md §6).

Writes a TRL ``trainer_state.json`` with 10,000 train log entries (a rise-then-fall chosen
curve with AR(1) noise, margin and rejected beside it) into a temporary folder, then times

* the whole command, ``python -m mi_bounds.cli diagnose FILE --json`` in a fresh process
  (imports, reading, the rule's simulated tables, the report), ``--repeats`` times;
* :func:`mi_bounds.decline.diagnose.diagnose` alone in a fresh process (first call: the
  simulated tables are built; they are cached within a process).

Prints the median and the range of each.

    OMP_NUM_THREADS=1 python benchmarks/bench_decline_diagnose.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import signal

ROOT = Path(__file__).resolve().parents[1]


def write_log(path: Path, n: int = 10_000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    u = np.linspace(0, 1, n)
    noise = signal.lfilter([1.0], [1.0, -0.5], rng.normal(0, 0.3, n))
    chosen = np.where(u < 0.4, -10 + 2 * u, -9.2 - 4 * (u - 0.4)) + noise
    entries = [{"loss": 0.6, "logps/chosen": float(c), "logps/rejected": float(c - 2 * x),
                "rewards/margins": float(0.1 + x + 0.05 * rng.normal()), "epoch": float(x),
                "step": i + 1} for i, (c, x) in enumerate(zip(chosen, u, strict=True))]
    path.write_text(json.dumps({"global_step": n, "log_history": entries}))
    return path


IN_PROCESS = """
import sys, time
t0 = time.perf_counter()
from mi_bounds.decline.diagnose import diagnose, read_log
log = read_log(sys.argv[1])
t1 = time.perf_counter()
r = diagnose(log)
t2 = time.perf_counter()
print(t2 - t1, r["shape"])
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = write_log(Path(tmp) / "trainer_state.json")
        cli, call = [], []
        shape = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "mi_bounds.cli", "diagnose", str(log),
                                  "--json"], cwd=ROOT, capture_output=True, text=True,
                                 check=True)
            cli.append(time.perf_counter() - t0)
            shape = json.loads(out.stdout)["shape"]
            res = subprocess.run([sys.executable, "-c", IN_PROCESS, str(log)], cwd=ROOT,
                                 capture_output=True, text=True, check=True)
            call.append(float(res.stdout.split()[0]))
    print(f"10,000-row trainer_state.json, verdict {shape}")
    print(f"mi-bounds diagnose --json (fresh process): median {statistics.median(cli):.2f} s "
          f"(min {min(cli):.2f}, max {max(cli):.2f}) over {args.repeats}")
    print(f"diagnose() first call in a process: median {statistics.median(call):.2f} s "
          f"(min {min(call):.2f}, max {max(call):.2f})")


if __name__ == "__main__":
    main()
