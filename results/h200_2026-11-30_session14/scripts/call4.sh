#!/bin/bash
cd "$(dirname "$0")/.."
mkdir -p /tmp/etap_wheels && cp .whl/sglang/batch-01/nvidia_cutlass-4.2.0.0-py3-none-any.whl /tmp/etap_wheels/
[ -d /tmp/cs/cutlass_library ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cs /tmp/etap_wheels/*.whl
export PYTHONPATH=/tmp/cs:$PWD MAX_JOBS=16 PYTHONUNBUFFERED=1 ETAP_EXTRA_NVCC_FLAGS="-DETAP_EXP_NO_MATH -lineinfo"
timeout 240 python3 -c "import etap_kernels; etap_kernels.interface.load_extension()" 2>&1 | tail -3
echo "=== built ($SECONDS s)"
for i in 0 1 2 3 4; do
  timeout 90 python3 .ab_run/nomath_big.py $i 2>&1 | tail -3 | tee /tmp/big_$i.txt
  if grep -q FAULT /tmp/big_$i.txt; then
    echo "=== memcheck $i ($SECONDS s)"
    timeout 240 /usr/local/cuda/bin/compute-sanitizer --tool memcheck --print-limit 3 python3 .ab_run/nomath_big.py $i 2>&1 | grep -v "Host Frame" | head -60
    break
  fi
done
echo "=== done ($SECONDS s)"
