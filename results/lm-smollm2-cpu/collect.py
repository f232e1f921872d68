"""Copy what is worth keeping of a SmolLM2 run directory (`smollm2-cpu`, the three-epoch run,
or the learning-rate probe with a grid) into this folder (:func:`mi_bounds.lm.collect.collect_run`
says what is kept).

    python results/lm-smollm2-cpu/collect.py runs/smollm2-cpu results/lm-smollm2-cpu
    python results/lm-smollm2-cpu/collect.py runs/smollm2-long results/lm-smollm2-cpu/long
    python results/lm-smollm2-cpu/collect.py runs/smollm2-probe results/lm-smollm2-cpu/probe
"""

import sys
from pathlib import Path

from mi_bounds.lm.collect import collect_run

if __name__ == "__main__":
    collect_run(Path(sys.argv[1]), Path(sys.argv[2]))
