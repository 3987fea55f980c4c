#!/bin/bash
# A second bf16 quick grid at HEAD (3 rounds, FlashMLA and FlashInfer fa3 beside): the final run's 64K rows spread 5-6% between rounds
cd "$(dirname "$0")/.."
for d in .whl/final; do python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$d"/*.whl; done
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 FLASHINFER_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 ETAP_FLASHMLA_SO=/tmp/site/sgl_kernel/flashmla_ops.abi3.so
timeout 240 python3 -c "import etap_kernels; etap_kernels.interface.load_extension()" 2>&1 | tail -3
echo "=== built ($SECONDS s)"
timeout $((570 - SECONDS)) python3 scripts/bench_decode.py --grid quick --peers flashmla,fa3 --rounds 3 --out $OUT 2>&1 | grep -E '\||copy|wrote|rror'
echo "=== done ($SECONDS s)"
