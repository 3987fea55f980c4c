# one foreground pass: build, FP8 GPU tests, FP8 quick grid (+ h16 through the dims split), bf16 GPU tests
R=${OUT:-/tmp/R}/r; mkdir -p $R /tmp/etap_wheels
cp .whl/sglang/batch-01/nvidia_cutlass-4.2.0.0-py3-none-any.whl .whl/sglang/batch-01/sglang_kernel-0.4.6-cp310-abi3-manylinux2014_x86_64.whl /tmp/etap_wheels/
export PYTHONPATH=/tmp/cs:$PWD PYTHONUNBUFFERED=1 MAX_JOBS=16 ETAP_FLASHMLA_SO=/tmp/cs/sgl_kernel/flashmla_ops.abi3.so
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cs /tmp/etap_wheels/*.whl > $R/install.log 2>&1
date -u +%T > $R/times.txt
python3 -c "import etap_kernels; etap_kernels.interface.load_extension(); print('built')" > $R/build.log 2>&1 || exit 1
date -u +%T >> $R/times.txt
ETAP_REQUIRE_GPU=1 python3 -m pytest -q -x tests/test_decode_fp8_gpu.py > $R/gpu_tests_fp8.log 2>&1 || { tail -40 $R/gpu_tests_fp8.log; exit 2; }
date -u +%T >> $R/times.txt
python3 scripts/bench_decode.py --grid quick --kv fp8 --peers flashmla --variants kv_split_max_rows_fp8=8 --out $R/bench_fp8 > $R/bench_fp8.log 2>&1
date -u +%T >> $R/times.txt
tail -30 $R/bench_fp8.log
ETAP_REQUIRE_GPU=1 python3 -m pytest -q tests/test_decode_gpu.py > $R/gpu_tests_bf16.log 2>&1
date -u +%T >> $R/times.txt
tail -2 $R/gpu_tests_fp8.log $R/gpu_tests_bf16.log
