#!/bin/bash
# A short device pass for one kernel change: build, the GPU decode tests, the quick grid
# (ETAP_QUICK_KV: bf16 and/or fp8) against FlashMLA with ETAP variants (ETAP_VARIANTS, as bench_decode.py --variants) as extra
# columns, the SM clock and power sampled during it, and tile traces (ETAP_QUICK_TRACE=0: none).
# Detached use:
#   mkdir -p /tmp/R && (setsid nohup bash scripts/device_quick.sh /tmp/R > /tmp/R/session.log 2>&1 < /dev/null &)
# Needs the nvidia-cutlass and sglang-kernel wheels in $WHEELS (default /tmp/etap_wheels).
set -uo pipefail
R=${1:?usage: device_quick.sh RESULT_DIR}
WHEELS=${WHEELS:-/tmp/etap_wheels}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$R"
export PYTHONPATH=/tmp/cs:$PWD PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
export ETAP_FLASHMLA_SO=/tmp/cs/sgl_kernel/flashmla_ops.abi3.so
source scripts/device_steps.sh  # log, step
[ -d /tmp/cs/cutlass_library ] || step install "$R/install.log" python3 -m pip install --no-index --no-deps \
  --no-compile --target /tmp/cs "$WHEELS"/nvidia_cutlass-*.whl "$WHEELS"/sglang_kernel-*.whl
step build "$R/build.log" python3 -c "import etap_kernels; etap_kernels.interface.load_extension(); print('built')" || exit 1
step gpu-tests "$R/gpu_tests.log" env ETAP_REQUIRE_GPU=1 python3 -m pytest -q -x ${ETAP_QUICK_TESTS:-tests/test_decode_gpu.py}
# SM clock and power while the grid runs (a memory-bound kernel can meet the power limit)
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv -lms 200 \
  > "$R/smi_during_bench.csv" 2>&1 &
SMI=$!
# ETAP_QUICK_KV: the cache dtypes to bench, in order (default bf16; "fp8 bf16" for both)
for kv in ${ETAP_QUICK_KV:-bf16}; do
  suffix=$([ "$kv" = bf16 ] || echo "_$kv")
  step "bench$suffix" "$R/bench$suffix.log" python3 scripts/bench_decode.py --grid quick --kv "$kv" --peers flashmla \
    --out "$R/bench$suffix" --rounds "${ETAP_QUICK_ROUNDS:-1}" --variants "${ETAP_VARIANTS:-}" \
    ${ETAP_QUICK_WHERE:+--where "$ETAP_QUICK_WHERE"}
done
kill $SMI
# ETAP_QUICK_SANITIZE=1: compute-sanitizer over reliability.py's driver cases
if [ "${ETAP_QUICK_SANITIZE:-0}" != 0 ]; then
  step sanitizer "$R/sanitizer.log" env ETAP_SANITIZER_TIMEOUT=${ETAP_SANITIZER_TIMEOUT:-420} \
    python3 scripts/reliability.py --sanitize-only --out "$R/sanitizer"
fi
if [ "${ETAP_QUICK_TRACE:-1}" != 0 ]; then
  step trace "$R/trace.log" bash -c "python3 scripts/trace_case.py --json $R/trace_bf16_h16.json && \
    python3 scripts/trace_case.py --h-q 32 --json $R/trace_bf16_h32.json"
fi
log "done"
