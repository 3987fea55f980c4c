export PYTHONPATH=/tmp/cs:/tmp/site:/tmp/etap_shim:$PWD PYTHONUNBUFFERED=1 FLASHINFER_CUDA_ARCH_LIST=9.0a MAX_JOBS=24 ETAP_FLASHMLA_SO=/tmp/site/sgl_kernel/flashmla_ops.abi3.so CUDA_VISIBLE_DEVICES=1
F=/tmp/F
s() { n=$1; shift; echo "$(date +%T) start $n" >> $F/progress.log; "$@" > $F/$n.log 2>&1; echo "$(date +%T) end $n: exit $?" >> $F/progress.log; }
s build python3 -c "import etap_kernels; etap_kernels.interface.load_extension(); print('built')"
s gpu_tests env ETAP_REQUIRE_GPU=1 ETAP_TEST_REPORT=$F/gpu_tests.json ETAP_TEST_REPORT_FP8=$F/fp8_tests.json python3 -m pytest -q tests/test_decode_gpu.py tests/test_decode_fp8_gpu.py tests/test_flashinfer_gpu.py
s sanitizer env ETAP_SANITIZER_TIMEOUT=420 python3 scripts/reliability.py --sanitize-only --out $F/sanitizer
s bench_bf16 python3 scripts/bench_decode.py --grid quick --out $F/bench
s bench_fp8 python3 scripts/bench_decode.py --grid quick --kv fp8 --peers flashmla --out $F/bench
s reliability python3 scripts/reliability.py --cases 1000 --out $F/reliability
s bench_paper python3 scripts/bench_decode.py --grid paper --rmse --out $F/bench
echo "$(date +%T) done" >> $F/progress.log
