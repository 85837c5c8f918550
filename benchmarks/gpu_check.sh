#!/usr/bin/env bash
# The packed store's device check (issue 25), one script for a machine with one CUDA GPU, under
# six minutes: the CUDA tests, then the CUDA figures of benchmarks/packed_loader.py (loader
# samples/s ÷ model samples/s with 0/2/4 workers, packed and today's; the batched crop's ms per
# batch; `pdmp train` end to end ÷ the model alone; PDMP ÷ vanilla at batch 256).
#
#     benchmarks/gpu_check.sh                # writes bench-results/packed-gpu.json (OUT=... elsewhere)
#     PY=/path/to/python benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-bench-results/packed-gpu.json}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PDMP_CACHE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/pdmp-gpu-check-XXXXXX")
trap 'rm -rf "$PDMP_CACHE_DIR"' EXIT

"$PY" -c 'import torch, sys; ok = torch.cuda.is_available(); print("CUDA:", torch.cuda.get_device_name(0) if ok else "none"); sys.exit(0 if ok else 2)'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# each step has its own limit; together under six minutes (60 + 180 + 100 s)
echo "== CUDA tests of the packed store"
timeout 60 "$PY" -m pytest -q -m "" -x -p no:cacheprovider tests/test_packed.py -k cuda
echo "== CUDA figures"
timeout 180 "$PY" -m benchmarks.packed_loader --cuda --out "$OUT"
echo "== the other CUDA tests (every method on the device, DDP over nccl)"
timeout 100 "$PY" -m pytest -q -m "" -x -p no:cacheprovider tests/test_gpu.py
