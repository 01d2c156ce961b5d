#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py's docstring): about 5 minutes on one H100, nothing fetched there.
#
#   bash bench/gpu_check.sh --prepare    # here, with network: wheels for Python 3.12 + the small dataset
#                                        #   into data/gpu_check/ (ignored by git: carry it, < 64 MiB)
#   bash bench/gpu_check.sh              # on the GPU machine, from the repository root
#   bash bench/gpu_check.sh --dry-run    # the same code path on the CPU, tiny shapes, seconds
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=data/gpu_check
if [[ "${1:-}" == "--prepare" ]]; then
  mkdir -p "$CACHE/wheels"
  # what the GPU machine lacks (it has torch, numpy, sentencepiece, safetensors, triton, typer, rich, scipy, ...)
  python -m pip download -q --dest "$CACHE/wheels" --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --implementation cp \
    zstandard brotli pytest pluggy iniconfig packaging
  if [[ ! -f "$CACHE/data/manifest.json" ]]; then  # the embedded corpus (vocab 1024), built here once
    d=$(PYTHONPATH=. python -c "from pgolf.data.embedded import embedded_data_dir; print(embedded_data_dir())")
    rm -rf "$CACHE/data" && cp -r "$d" "$CACHE/data" && rm -f "$CACHE/data/corpus.jsonl"
  fi
  du -sh "$CACHE"
  exit 0
fi
if [[ -d "$CACHE/wheels" ]]; then  # only what is missing; never the network
  for mod in zstandard brotli pytest; do
    python -c "import $mod" 2>/dev/null || python -m pip install -q --no-index --find-links "$CACHE/wheels" "$mod" \
      || echo "gpu_check: could not install $mod from $CACHE/wheels" >&2
  done
fi
PYTHONPATH=. exec python bench/gpu_check.py "$@"
