#!/usr/bin/env bash
# One whole device session on nvidia-h200-x2 (2 GPUs), once SGLang's wheelhouse (+ nvidia-cutlass)
# has been copied to WHEELS (default /tmp/etap_wheels; see integration/README_sglang.md):
#   phase 0: install the wheels into /tmp/site, patch sglang and flashinfer, build ETAP
#   phase 1, in parallel
#     GPU 0: SGLang backend GPU tests, end to end at TP = 1 (bf16, then an e4m3 KV cache against
#            flashmla), server under load, racecheck probe, compute-sanitizer
#     GPU 1: kernel + FlashInfer-shim GPU tests, reliability, FP8 and bf16 quick benchmarks,
#            experiments, ncu stall sections
#   phase 2, both GPUs: SGLang end to end at TP = 2 (etap, flashmla, flashinfer)
# Run it detached, it outlives one device call:  setsid nohup bash scripts/device_session.sh R &
# and poll R/progress.log; R/ holds every result file and log.
set -uo pipefail
R=${1:?usage: device_session.sh RESULT_DIR}
WHEELS=${WHEELS:-/tmp/etap_wheels}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$R"
# etap_integration (the package name of integration/, as pip installs it) for the patched FlashInfer
mkdir -p /tmp/etap_shim && ln -sfn "$PWD/integration" /tmp/etap_shim/etap_integration
export PYTHONPATH=/tmp/site:/tmp/etap_shim:$PWD PYTHONUNBUFFERED=1 FLASHINFER_CUDA_ARCH_LIST=9.0a MAX_JOBS=${MAX_JOBS:-24}
export ETAP_FLASHMLA_SO=/tmp/site/sgl_kernel/flashmla_ops.abi3.so NCCL_NVLS_ENABLE=0
log() { echo "$(date +%T) $*" >> "$R/progress.log"; }
step() {  # step NAME LOGFILE COMMAND...
  local name=$1 out=$2 t0=$SECONDS rc
  shift 2
  log "start $name"
  "$@" > "$out" 2>&1
  rc=$?
  log "end   $name: exit $rc, $((SECONDS - t0)) s"
  return $rc
}

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
(
  export CUDA_VISIBLE_DEVICES=0
  step sglang-backend-tests "$R/sglang_backend_tests.log" python3 -m pytest -q -rs tests/test_sglang_backend_gpu.py
  step e2e-tp1 "$R/e2e_tp1.log" $E2E --tp 1 --backends etap,flashmla,flashinfer \
    --out "$R/sglang_e2e_tp1.json" --log-dir "$R/logs_tp1"
  step load "$R/load.log" python3 scripts/sglang_load.py --out "$R/sglang_load.json" --log-dir "$R/logs_load"
  step e2e-tp1-fp8 "$R/e2e_tp1_fp8.log" $E2E --tp 1 --backends etap,flashmla --baseline flashmla \
    --server-arg "--kv-cache-dtype fp8_e4m3" --out "$R/sglang_e2e_tp1_fp8.json" --log-dir "$R/logs_tp1_fp8"
  step racecheck-probe "$R/racecheck_probe.log" bash -c "/usr/local/cuda/bin/nvcc -O3 -arch=sm_90a \
    scripts/racecheck_probe.cu -o /tmp/racecheck_probe && for m in 0 1 2 3; do \
    /usr/local/cuda/bin/compute-sanitizer --tool racecheck --print-limit 4 /tmp/racecheck_probe \$m; done"
  step sanitizer "$R/sanitizer.log" env ETAP_SANITIZER_TIMEOUT=${ETAP_SANITIZER_TIMEOUT:-420} \
    python3 scripts/reliability.py --sanitize-only --out "$R/sanitizer"
  # experiment: the KV-split merge on mbarriers, under racecheck
  step racecheck-merge-mbarrier "$R/racecheck_merge_mbarrier.log" env ETAP_MERGE_MBARRIER=1 \
    ETAP_SANITIZER_TIMEOUT=${ETAP_SANITIZER_TIMEOUT:-420} python3 scripts/reliability.py --sanitize-only \
    --tools racecheck --out "$R/sanitizer_merge_mbarrier"
) &
GPU0=$!
(
  export CUDA_VISIBLE_DEVICES=1
  step gpu-tests "$R/gpu_tests.log" env ETAP_REQUIRE_GPU=1 ETAP_TEST_REPORT="$R/gpu_tests.json" \
    ETAP_TEST_REPORT_FP8="$R/fp8_tests.json" python3 -m pytest -q tests/test_decode_gpu.py tests/test_decode_fp8_gpu.py \
    tests/test_flashinfer_gpu.py
  step reliability "$R/reliability.log" python3 scripts/reliability.py --cases "${ETAP_FUZZ_CASES:-1000}" --out "$R/reliability"
  step bench-fp8 "$R/bench_fp8.log" python3 scripts/bench_decode.py --grid quick --kv fp8 --peers flashmla --out "$R/bench"
  step bench-bf16 "$R/bench_bf16.log" python3 scripts/bench_decode.py --grid quick --out "$R/bench"
  # the paper's table: b = 16, h_q = 16, its lengths, every peer, output RMSE vs float64
  step bench-paper "$R/bench_paper.log" python3 scripts/bench_decode.py --grid paper --rmse --out "$R/bench"
  # experiment: the row loader on the cp.async path (page size 1, partial tiles), same process
  step bench-rowloader "$R/bench_rowloader.log" env ETAP_ROW_LOADER=1 python3 scripts/bench_decode.py --grid quick \
    --where "page_size == 1 or ctx <= 8192" --peers fa3 --tag _rowloader --out "$R/bench"
  # experiment: the consumer warpgroups take turns to issue WGMMAs (16-bit, 16-128 heads)
  step bench-pingpong "$R/bench_pingpong.log" env ETAP_PINGPONG=1 python3 scripts/bench_decode.py --grid quick \
    --where "page_size == 64" --peers flashmla,fa3 --tag _pingpong --out "$R/bench"
  # where the time goes: page size 1 (both loaders) and the FP8 headline row, ncu's stall sections
  NCU="/usr/local/cuda/bin/ncu --kernel-name regex:decode_kernel --launch-skip 3 --launch-count 1 \
    --section SchedulerStats --section WarpStateStats --section SourceCounters --section MemoryWorkloadAnalysis"
  step profile-page1 "$R/ncu_page1.txt" $NCU python3 scripts/profile_case.py --page-size 1
  step profile-page1-rowloader "$R/ncu_page1_rowloader.txt" env ETAP_ROW_LOADER=1 $NCU python3 scripts/profile_case.py --page-size 1
  step profile-fp8 "$R/ncu_fp8_b16_64k.txt" $NCU python3 scripts/profile_case.py --kv fp8
) &
GPU1=$!
wait $GPU0 $GPU1
# last, on both GPUs (FlashInfer's JIT cache is warm by now: the first server start at TP = 1
# compiled it while GPU 1 ran the kernel work)
step e2e-tp2 "$R/e2e_tp2.log" env CUDA_VISIBLE_DEVICES=0,1 $E2E --tp 2 --backends etap,flashmla,flashinfer \
  --out "$R/sglang_e2e_tp2.json" --log-dir "$R/logs_tp2"
python3 scripts/reliability_summary.py "$R" --json "$R/reliability_summary.json" > "$R/reliability_summary.md" 2>&1
log "done"
