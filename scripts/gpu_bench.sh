#!/usr/bin/env bash
# The GPU check of issue 20 on one CUDA device, a few minutes: pipeline / raw forward (128 px crops
# resized to 224 on the device, 224 px crops; bf16 and fp32), the peers' loops side by side, the
# host's feed per core and the codecs. Writes docs/bench/gpu-<device>-<time>.json (machine,
# versions, git revision), rewritten after each section. Extra arguments name sections to run:
# staged_copies extraction_gpu peers host_feed codecs (in that order by default). Under a 10-minute
# limit per command, run `scripts/gpu_bench.sh staged_copies extraction_gpu` first and
# `scripts/gpu_bench.sh peers host_feed codecs` second if the whole does not fit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
export HF_HUB_OFFLINE=1 WANDB_MODE=offline
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m xferlab.benchmarks.gpu --out docs/bench "$@"
