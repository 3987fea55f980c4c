#!/usr/bin/env bash
# One whole device session on nvidia-h200-x2 (2 GPUs), once SGLang's wheelhouse (+ nvidia-cutlass)
# has been copied to WHEELS (default /tmp/etap_wheels; see integration/README_sglang.md):
#   phase 0: install the wheels into /tmp/site, patch sglang and flashinfer, build ETAP
#   phase 1, in parallel
#     GPU 0: racecheck probe, compute-sanitizer (and again with ETAP_SWITCHES), SGLang backend GPU
#            tests, server under load, end to end at TP = 1 with an e4m3 KV cache against flashmla
#            (bf16 TP = 1 too with ETAP_RUN_TP1=1)
#     GPU 1: kernel + FlashInfer-shim GPU tests (and again with ETAP_SWITCHES), bf16 and FP8 quick
#            benchmarks (ETAP_VARIANTS as extra columns), reliability, the paper grid with every
#            peer (FA3 if its parts have arrived), ncu stall sections
#   phase 2 (ETAP_RUN_TP2=1), both GPUs: SGLang end to end at TP = 2 (etap, flashmla, flashinfer)
# Run it detached, it outlives one device call:  setsid nohup bash scripts/device_session.sh R &
# and poll R/progress.log; R/ holds every result file and log.
set -uo pipefail
R=${1:?usage: device_session.sh RESULT_DIR}
WHEELS=${WHEELS:-/tmp/etap_wheels}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$R"
# etap_integration (the package name of integration/, as pip installs it) for the patched FlashInfer
mkdir -p /tmp/etap_shim && ln -sfn "$PWD/integration" /tmp/etap_shim/etap_integration
# /tmp/cs: the nvidia-cutlass the early build (call 1) used; the same header path keeps that build valid
export PYTHONPATH=/tmp/cs:/tmp/site:/tmp/etap_shim:$PWD PYTHONUNBUFFERED=1 FLASHINFER_CUDA_ARCH_LIST=9.0a MAX_JOBS=${MAX_JOBS:-24}
export ETAP_FLASHMLA_SO=/tmp/site/sgl_kernel/flashmla_ops.abi3.so NCCL_NVLS_ENABLE=0
source scripts/device_steps.sh  # log, step

if [ ! -d /tmp/site/sglang ]; then
  step install "$R/install.log" python3 -m pip install --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl
fi
if [ -f "${FA3_PARTS:-/tmp/etap_fa3}/fa3.json" ] && [ ! -f /tmp/site/sgl_kernel/flash_ops.abi3.so ]; then
  # FlashAttention-3 for the FA3 MLA baseline (build_sglang_wheelhouse.py --fa3; a transfer per part)
  step unpack-fa3 "$R/unpack_fa3.log" python3 scripts/unpack_fa3.py "${FA3_PARTS:-/tmp/etap_fa3}" --site-dir /tmp/site
fi
step patch-sglang "$R/patch_sglang.log" python3 scripts/apply_sglang_patch.py --site-dir /tmp/site
step patch-flashinfer "$R/patch_flashinfer.log" python3 scripts/apply_flashinfer_patch.py --site-dir /tmp/site
step build "$R/build.log" python3 -c "import etap_kernels; etap_kernels.interface.load_extension(); print('built')" || exit 1

E2E="python3 scripts/sglang_e2e.py --num-prompts 12 --batch-sizes 1,8,32 --startup-timeout 400"
# Kernel experiment switches (ETAP_<NAME>=1, none on main now): put them here to run the
# sanitizers' second pass, the switch tests and the servers with them, and time each one with
# bench_decode.py --variants.
SWITCHES="${ETAP_SWITCHES:-}"
(
  export CUDA_VISIBLE_DEVICES=0
  step racecheck-probe "$R/racecheck_probe.log" bash -c "/usr/local/cuda/bin/nvcc -O3 -arch=sm_90a \
    scripts/racecheck_probe.cu -o /tmp/racecheck_probe && for m in 0 1 2 3; do \
    /usr/local/cuda/bin/compute-sanitizer --tool racecheck --print-limit 4 /tmp/racecheck_probe \$m; done"
  step sanitizer "$R/sanitizer.log" env ETAP_SANITIZER_TIMEOUT=${ETAP_SANITIZER_TIMEOUT:-420} \
    python3 scripts/reliability.py --sanitize-only --out "$R/sanitizer"
  if [ -n "$SWITCHES" ]; then
    step sanitizer-switches "$R/sanitizer_switches.log" env $SWITCHES ETAP_SANITIZER_TIMEOUT=${ETAP_SANITIZER_TIMEOUT:-420} \
      python3 scripts/reliability.py --sanitize-only --out "$R/sanitizer_switches"
  fi
  step sglang-backend-tests "$R/sglang_backend_tests.log" env $SWITCHES python3 -m pytest -q -rs tests/test_sglang_backend_gpu.py
  step load "$R/load.log" env $SWITCHES python3 scripts/sglang_load.py --out "$R/sglang_load.json" --log-dir "$R/logs_load"
  step e2e-tp1-fp8 "$R/e2e_tp1_fp8.log" env $SWITCHES $E2E --tp 1 --backends etap,flashmla --baseline flashmla \
    --server-arg "--kv-cache-dtype fp8_e4m3" --out "$R/sglang_e2e_tp1_fp8.json" --log-dir "$R/logs_tp1_fp8"
  if [ -n "${ETAP_RUN_TP1:-}" ]; then
    step e2e-tp1 "$R/e2e_tp1.log" env $SWITCHES $E2E --tp 1 --backends etap,flashmla,flashinfer \
      --out "$R/sglang_e2e_tp1.json" --log-dir "$R/logs_tp1"
  fi
) &
GPU0=$!
(
  export CUDA_VISIBLE_DEVICES=1
  TESTS="tests/test_decode_gpu.py tests/test_decode_fp8_gpu.py tests/test_flashinfer_gpu.py"
  step gpu-tests "$R/gpu_tests.log" env ETAP_REQUIRE_GPU=1 ETAP_TEST_REPORT="$R/gpu_tests.json" \
    ETAP_TEST_REPORT_FP8="$R/fp8_tests.json" python3 -m pytest -q $TESTS
  if [ -n "$SWITCHES" ]; then
    step gpu-tests-switches "$R/gpu_tests_switches.log" env $SWITCHES ETAP_REQUIRE_GPU=1 \
      ETAP_TEST_REPORT="$R/gpu_tests_switches.json" ETAP_TEST_REPORT_FP8="$R/fp8_tests_switches.json" \
      python3 -m pytest -q $TESTS
  fi
  # each switch (ETAP_VARIANTS, e.g. "row_loader,pdl") timed beside the default and the peers
  step bench-bf16 "$R/bench_bf16.log" python3 scripts/bench_decode.py --grid quick --out "$R/bench" \
    --variants "${ETAP_VARIANTS:-}"
  step bench-fp8 "$R/bench_fp8.log" python3 scripts/bench_decode.py --grid quick --kv fp8 --peers flashmla \
    --out "$R/bench" --variants "${ETAP_VARIANTS:-}"
  step reliability "$R/reliability.log" env $SWITCHES python3 scripts/reliability.py \
    --cases "${ETAP_FUZZ_CASES:-1000}" --out "$R/reliability"
  if [ -f "${FA3_PARTS:-/tmp/etap_fa3}/fa3.json" ] && [ ! -f /tmp/site/sgl_kernel/flash_ops.abi3.so ]; then
    # FlashAttention-3 parts travel while the session runs (one transfer each)
    step unpack-fa3 "$R/unpack_fa3.log" python3 scripts/unpack_fa3.py "${FA3_PARTS:-/tmp/etap_fa3}" --site-dir /tmp/site
  fi
  # the paper's table: b = 16, h_q = 16, its lengths, every peer, output RMSE vs float64
  step bench-paper "$R/bench_paper.log" python3 scripts/bench_decode.py --grid paper --rmse --out "$R/bench"
  # what one 64 x N x 16 WGMMA costs alone, by N and by how many warpgroups issue at once
  step wgmma-probe "$R/wgmma_probe.log" bash -c "/usr/local/cuda/bin/nvcc -O3 -std=c++17 -arch=sm_90a \
    --expt-relaxed-constexpr -I\$(python3 -c 'import etap_kernels._build as b; print(b.cutlass_include())') \
    scripts/wgmma_probe.cu -o /tmp/wgmma_probe && /tmp/wgmma_probe"
  # per-step tile traces (a -DETAP_TRACE build of its own)
  step trace "$R/trace.log" bash -c "python3 scripts/trace_case.py --json $R/trace_bf16_h16.json && \
    python3 scripts/trace_case.py --h-q 64 --json $R/trace_bf16_h64.json && \
    python3 scripts/trace_case.py --kv fp8 --json $R/trace_fp8_h16.json"
  # where the time goes: page size 1, h_q = 64 and the FP8 headline row, ncu's stall sections
  NCU="/usr/local/cuda/bin/ncu --kernel-name regex:decode_kernel --launch-skip 3 --launch-count 1 \
    --section SchedulerStats --section WarpStateStats --section SourceCounters --section MemoryWorkloadAnalysis"
  step profile-page1 "$R/ncu_page1.txt" $NCU python3 scripts/profile_case.py --page-size 1
  step profile-h64 "$R/ncu_h64.txt" $NCU python3 scripts/profile_case.py --h-q 64
  step profile-fp8 "$R/ncu_fp8_b16_64k.txt" $NCU python3 scripts/profile_case.py --kv fp8
) &
GPU1=$!
wait $GPU0 $GPU1
if [ -n "${ETAP_RUN_TP2:-}" ]; then
  step e2e-tp2 "$R/e2e_tp2.log" env CUDA_VISIBLE_DEVICES=0,1 $SWITCHES $E2E --tp 2 --backends etap,flashmla,flashinfer \
    --out "$R/sglang_e2e_tp2.json" --log-dir "$R/logs_tp2"
fi
python3 scripts/reliability_summary.py "$R" --json "$R/reliability_summary.json" > "$R/reliability_summary.md" 2>&1
log "done"
