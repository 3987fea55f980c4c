#!/bin/bash
# e4m3 loads-only diagnostic at h_q 32 in the dims-split form (heads_on_m=0): the h_q 16 KV-split
# form faults under NO_MATH at b16/64K, and the heads-on-M form has no NO_MATH switch.
cd "$(dirname "$0")/.."
mkdir -p /tmp/etap_wheels && cp .whl/sglang/batch-01/nvidia_cutlass-4.2.0.0-py3-none-any.whl /tmp/etap_wheels/
[ -d /tmp/cs/cutlass_library ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cs /tmp/etap_wheels/*.whl
export PYTHONPATH=/tmp/cs:$PWD MAX_JOBS=16 PYTHONUNBUFFERED=1
left() { echo $((570 - SECONDS)); }
W="b == 16 and ctx == 65536 and h_q == 32 and s_q == 1 and page_size == 64"
for f in "" "-DETAP_EXP_NO_MATH" "-DETAP_EXP_NO_MATH -DETAP_EXP_BULK_PAGE"; do
  [ $(left) -gt 40 ] || { echo "skipped $f"; continue; }
  echo "--- [$f] fp8 h32 ($SECONDS s)"
  ETAP_EXTRA_NVCC_FLAGS="$f" timeout $(left) python3 scripts/bench_decode.py --grid quick --kv fp8 --peers "" --variants heads_on_m=0 --rounds 3 --where "$W" --out /tmp/nm 2>&1 | grep -E '\||copy|rror'
done
echo "=== done ($SECONDS s)"
