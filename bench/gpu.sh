#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script (CI has no GPU and never runs it):
# tests/test_cuda.py (--device cuda against the CPU), then python -m bench.device.
# Needs python3 with torch (CUDA), numpy, scipy, rich, pytest, hypothesis and lark importable;
# certify itself is taken from this checkout (PYTHONPATH), not installed.
#     bash bench/gpu.sh [OUTDIR]        # writes OUTDIR/device.json and OUTDIR/test_cuda.log
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import sys, torch
if not torch.cuda.is_available(): sys.exit('bench/gpu.sh: no CUDA device (torch ' + torch.__version__ + ')')
print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 2
python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py 2>&1 | tee "$out/test_cuda.log"
tests=${PIPESTATUS[0]}
python3 -m bench.device --device cuda --out "$out/device.json"
bench=$?
exit $(( tests != 0 ? tests : bench ))
