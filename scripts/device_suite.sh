#!/usr/bin/env bash
# One device call's worth of checks on this tree, in the order that matters when device time is
# short: build, GPU tests (decode suites, and the FlashInfer-shim suite once flashinfer is
# installed and patched; reports), reliability (+ compute-sanitizer), FP8 and bf16 quick benchmarks.
#   bash scripts/device_suite.sh OUT_DIR [WHEEL_DIR ...]
# WHEEL_DIR: folders of wheels to install --no-deps into /tmp/site first (nvidia-cutlass,
# sglang-kernel for FlashMLA, flashinfer and its three companions).
# ETAP_FUZZ_CASES (default 1000; 0 skips reliability), ETAP_SANITIZE (compute-sanitizer tools),
# ETAP_ROUNDS (bench rounds, default 2), ETAP_PEERS (bf16 peers, default flashmla,fa2,fa3,fi_etap),
# ETAP_PEERS_FP8 (e4m3 peers, default flashmla; etap_split also times ETAP on separate latent/rope caches).
set -uo pipefail
OUT=${1:?usage: device_suite.sh OUT_DIR [WHEEL_DIR ...]}
shift
mkdir -p "$OUT"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p /tmp/etap_shim && ln -sfn "$PWD/integration" /tmp/etap_shim/etap_integration  # package name of integration/
export PYTHONPATH=/tmp/site:/tmp/etap_shim:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 FLASHINFER_CUDA_ARCH_LIST=${FLASHINFER_CUDA_ARCH_LIST:-9.0a}
export ETAP_FLASHMLA_SO=${ETAP_FLASHMLA_SO:-/tmp/site/sgl_kernel/flashmla_ops.abi3.so} MAX_JOBS=${MAX_JOBS:-16}
for d in "$@"; do python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$d"/*.whl; done
step() { echo "=== $1 ($SECONDS s)"; shift; "$@"; echo "=== exit $? ($SECONDS s)"; }
TESTS="tests/test_decode_gpu.py tests/test_decode_fp8_gpu.py"
if [ -d /tmp/site/flashinfer ]; then
  step patch-flashinfer python3 scripts/apply_flashinfer_patch.py --site-dir /tmp/site
  TESTS="$TESTS tests/test_flashinfer_gpu.py"
fi
step build python3 -c "import etap_kernels; etap_kernels.interface.load_extension()"
step gpu-tests env ETAP_REQUIRE_GPU=1 ETAP_TEST_REPORT="$OUT/gpu_tests.json" ETAP_TEST_REPORT_FP8="$OUT/fp8_tests.json" \
  python3 -m pytest -q -rs -p no:warnings $TESTS
if [ "${ETAP_FUZZ_CASES:-1000}" != 0 ]; then
  step reliability python3 scripts/reliability.py --cases "${ETAP_FUZZ_CASES:-1000}" --out "$OUT" \
    ${ETAP_SANITIZE:+--sanitize --tools "$ETAP_SANITIZE"}
fi
step bench-fp8 python3 scripts/bench_decode.py --grid quick --kv fp8 --peers "${ETAP_PEERS_FP8:-flashmla}" --rounds "${ETAP_ROUNDS:-2}" --out "$OUT"
step bench-bf16 python3 scripts/bench_decode.py --grid quick --peers "${ETAP_PEERS:-flashmla,fa2,fa3,fi_etap}" \
  --rounds "${ETAP_ROUNDS:-2}" --out "$OUT"
