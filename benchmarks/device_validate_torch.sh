#!/usr/bin/env bash
# One device lease's `xpusim validate torch --device cuda` runs, each in its own process (the host probe in each
# run's provenance shows how fast that process's host issued ops). Run from the repository root on the device
# machine with the wheels of simpy, pulp and highspy in .whl/ (the device has torch, numpy, scipy):
#   bash benchmarks/device_validate_torch.sh OUT_DIR [SECONDS_BUDGET]
# Writes OUT_DIR/<run>/ (ops.csv, steps.csv), OUT_DIR/<run>.json (what --json printed) and OUT_DIR/log.txt.
# The device tool returns a limited number of files: give an OUT_DIR outside $OUT and tar it into $OUT, e.g.
#   bash benchmarks/device_validate_torch.sh /tmp/lease 420; tar czf $OUT/lease.tgz -C /tmp/lease .
# A run starts only while the budget has room for one more (~100 s each); the later runs are the optional ones.
set -u
OUT=${1:?usage: device_validate_torch.sh OUT_DIR [SECONDS_BUDGET]}
BUDGET=${2:-420}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
printf 'import sys\nsys.argv[0] = "xpusim"\nfrom xpusim.cli import main\nmain()\n' > /tmp/xp.py
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit,temperature.gpu --format=csv > "$OUT/smi.csv" 2>&1
start=$(date +%s)
run() {
  local name=$1; shift
  local left=$(( BUDGET - ($(date +%s) - start) ))
  if (( left < 110 )); then echo "$name skipped ($left s left)" >> "$OUT/log.txt"; return; fi
  timeout $(( left - 5 )) python3 /tmp/xp.py validate torch --device cuda --repeats 5 --json --out "$OUT/$name" "$@" \
    > "$OUT/$name.json" 2> "$OUT/$name.err"
  echo "$name rc=$? $(date -u +%FT%TZ) $*" >> "$OUT/log.txt"
}
run validate_torch_llama-3.2-1b --model llama-3.2-1b --batch 4 --prompt 512 --decode 32
run validate_torch_llama-3.1-8b --model llama-3.1-8b --batch 4 --prompt 512 --decode 32
run validate_torch_llama-3.1-8b-again --model llama-3.1-8b --batch 4 --prompt 512 --decode 32
run validate_torch_llama-3.2-3b --model llama-3.2-3b --batch 4 --prompt 512 --decode 32
run validate_torch_qwen3-8b --model qwen3-8b --batch 4 --prompt 512 --decode 32
cat "$OUT/log.txt"
