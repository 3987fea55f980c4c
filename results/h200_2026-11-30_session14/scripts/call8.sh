#!/bin/bash
# exp/producer-warps alone: build, decode GPU tests, h_q 16 rows of both dtypes with FlashMLA beside
cd "$(dirname "$0")/.."
mkdir -p /tmp/etap_wheels && cp .whl/sglang/batch-01/nvidia_cutlass-4.2.0.0-py3-none-any.whl .whl/sglang/batch-01/sglang_kernel-0.4.6-*.whl /tmp/etap_wheels/
[ -d /tmp/cs/cutlass_library ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cs /tmp/etap_wheels/*.whl
export PYTHONPATH=/tmp/cs:$PWD MAX_JOBS=16 PYTHONUNBUFFERED=1 ETAP_FLASHMLA_SO=/tmp/cs/sgl_kernel/flashmla_ops.abi3.so
timeout 150 python3 -c "import etap_kernels; etap_kernels.interface.load_extension()" 2>&1 | tail -3
echo "=== built ($SECONDS s)"
ETAP_REQUIRE_GPU=1 timeout 110 python3 -m pytest -q -x -p no:warnings tests/test_decode_gpu.py tests/test_decode_fp8_gpu.py 2>&1 | tail -4
echo "=== tests ($SECONDS s)"
W="h_q == 16 and s_q == 1"
for kv in fp8 bf16; do
  [ $SECONDS -lt 230 ] || { echo "skipped $kv"; continue; }
  timeout 45 python3 scripts/bench_decode.py --grid quick --kv $kv --peers flashmla --rounds 2 --where "$W" --out /tmp/b 2>&1 | grep -E '\||copy|rror'
done
echo "=== done ($SECONDS s)"
