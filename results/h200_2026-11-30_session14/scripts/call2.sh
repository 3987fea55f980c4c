#!/bin/bash
# session 14 call 2: e4m3 fixed cost 2 A/B, then the e4m3 loads-only diagnostic
cd "$(dirname "$0")/.."
DEADLINE=330 TREES="main=. alt=.ab_alt" KVS=fp8 bash scripts/device_ab.sh
echo "=== diagnostic ($SECONDS s)"
export PYTHONPATH=/tmp/cs:$PWD ETAP_FLASHMLA_SO=/tmp/cs/sgl_kernel/flashmla_ops.abi3.so MAX_JOBS=16 PYTHONUNBUFFERED=1
W="b == 16 and ctx == 65536 and h_q == 16 and s_q == 1 and page_size == 64"
left() { echo $((575 - SECONDS)); }
timeout $(left) python3 scripts/bench_decode.py --grid quick --kv fp8 --variants disable_tma --rounds 2 --where "$W" 2>&1 | grep -E '\||copy'
for f in "-DETAP_EXP_NO_MATH" "-DETAP_EXP_NO_MATH -DETAP_EXP_BULK_PAGE"; do for kv in fp8 bf16; do
  [ $(left) -gt 30 ] || { echo "skipped $f $kv"; continue; }
  echo "--- $f $kv ($SECONDS s)"
  ETAP_EXTRA_NVCC_FLAGS="$f" timeout $(left) python3 scripts/bench_decode.py --grid quick --kv $kv --peers etap_split --rounds 2 --where "$W" --out /tmp/nm 2>&1 | grep -E '\||copy|rror'
done; done
echo "=== done ($SECONDS s)"
