#!/usr/bin/env bash
# One device session's worth of checks, in the order that matters when device time is short:
# build, GPU tests (reports), reliability (+ compute-sanitizer), FP8 and bf16 quick benchmarks.
#   bash scripts/device_suite.sh OUT_DIR [WHEEL_DIR ...]
# WHEEL_DIR: folders of wheels to install --no-deps into /tmp/site first (nvidia-cutlass,
# flashinfer and its three companions); ETAP_FLASHMLA_SO points at FlashMLA's library.
set -uo pipefail
OUT=${1:?usage: device_suite.sh OUT_DIR [WHEEL_DIR ...]}
shift
mkdir -p "$OUT"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p /tmp/etap_shim && ln -sfn "$PWD/integration" /tmp/etap_shim/etap_integration  # package name of integration/
export PYTHONPATH=/tmp/site:/tmp/etap_shim:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 FLASHINFER_CUDA_ARCH_LIST=${FLASHINFER_CUDA_ARCH_LIST:-9.0a}
for d in "$@"; do python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$d"/*.whl; done
step() { echo "=== $1"; shift; "$@"; echo "=== exit $?"; }
step build python3 -c "import etap_kernels; etap_kernels.interface.load_extension()"
step gpu-tests env ETAP_REQUIRE_GPU=1 ETAP_TEST_REPORT="$OUT/gpu_tests.json" ETAP_TEST_REPORT_FP8="$OUT/fp8_tests.json" \
  python3 -m pytest -q tests/test_decode_gpu.py tests/test_decode_fp8_gpu.py
step reliability python3 scripts/reliability.py --cases "${ETAP_FUZZ_CASES:-1000}" --out "$OUT" \
  ${ETAP_SANITIZE:+--sanitize --tools "$ETAP_SANITIZE"}
step bench-fp8 python3 scripts/bench_decode.py --grid quick --kv fp8 --peers flashmla --out "$OUT"
step bench-bf16 python3 scripts/bench_decode.py --grid quick --out "$OUT"
