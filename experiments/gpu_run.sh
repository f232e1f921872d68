#!/usr/bin/env bash
# The command of a GPU validation call (the device tool's `run`), from the repository root:
#
#   bash experiments/gpu_run.sh           carry [".whl"] (or [".whl", ".gguf-1"]), timeout_s 540:
#                                        steps env, decline, trl, bounds, staircase; 420 s budget
#   bash experiments/gpu_run.sh smollm2   the next call, right after: carry [".whl", ".gguf-2"],
#                                        timeout_s 300: SmolLM2 (experiments/gpu_gguf.py)
#
# It installs the carried wheels into /tmp/site, puts the checkout on PYTHONPATH (mi-bounds is
# not installed there), stashes any carried GGUF part, runs experiments/gpu_validation.py under
# `timeout` and packs whatever finished into $OUT (gpu-validation.tar.gz, summary.json,
# log.txt). Environment: OUT (default runs/gpu-out), GPU_BUDGET_S (default 420; smollm2: 200),
# GPU_STEPS (default env,decline,trl,bounds,staircase), GPU_ARGS (more options, e.g. "--smoke
# --device cpu" to rehearse this script on a CPU), GPU_SITE (default /tmp/site), PYTHON
# (default: the python3 that has torch, else /opt/torch/.venv/bin/python3). Also `make gpu`.
set -u
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-runs/gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then PY=/opt/torch/.venv/bin/python3; fi
export PYTHONUNBUFFERED=1 MI_BOUNDS_CACHE=${MI_BOUNDS_CACHE:-/tmp/mi-bounds-cache}
echo "gpu_run.sh: $(date -u +%FT%TZ) python $("$PY" -c 'import sys; print(sys.version.split()[0])')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "${GPU_SITE:-/tmp/site}" .whl/*.whl || echo "gpu_run.sh: the wheels did not install"
  export PYTHONPATH=${GPU_SITE:-/tmp/site}:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  echo "gpu_run.sh: no .whl/ carried: steps trl (and smollm2) will fail"
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -m pip list 2>/dev/null | grep -i -E "^(torch|transformers|accelerate|trl|datasets|pyarrow|fsspec|pandas|gguf|huggingface.hub|tokenizers|numpy) "
"$PY" experiments/gpu_gguf.py stash
if [ "${1:-}" = smollm2 ]; then
  "$PY" experiments/gpu_gguf.py join
  steps=smollm2
  budget=${GPU_BUDGET_S:-200}
else
  steps=${GPU_STEPS:-env,decline,trl,bounds,staircase}
  budget=${GPU_BUDGET_S:-420}
fi
name=gpu-validation
[ "$steps" = smollm2 ] && name=gpu-smollm2
work=runs/$name
timeout --kill-after=10 $((${budget%.*} + 60)) \
  "$PY" experiments/gpu_validation.py --out "$OUT" --work "$work" --name "$name" \
  --budget-s "$budget" --steps "$steps" ${GPU_ARGS:-}
rc=$?
[ $rc -ne 0 ] && echo "gpu_run.sh: gpu_validation.py exited with $rc (124: the timeout)"
"$PY" experiments/gpu_validation.py --out "$OUT" --work "$work" --name "$name" \
  --budget-s "$budget" --steps "$steps" --pack-only ${GPU_ARGS:-} > /dev/null
cat "$OUT/summary.json"
exit $rc
