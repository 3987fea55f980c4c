set -x
R=/tmp/R; mkdir -p $R /tmp/etap_wheels
cp .whl/sglang/batch-01/nvidia_cutlass-4.2.0.0-py3-none-any.whl .whl/sglang/batch-01/sglang_kernel-0.4.6-cp310-abi3-manylinux2014_x86_64.whl /tmp/etap_wheels/
export PYTHONPATH=/tmp/cs:$PWD PYTHONUNBUFFERED=1 MAX_JOBS=16 ETAP_FLASHMLA_SO=/tmp/cs/sgl_kernel/flashmla_ops.abi3.so
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cs /tmp/etap_wheels/*.whl > $R/install.log 2>&1
python3 -c "import etap_kernels; etap_kernels.interface.load_extension(); print('built')" > $R/build.log 2>&1 || exit 1
ETAP_REQUIRE_GPU=1 python3 -m pytest -q tests/test_decode_fp8_gpu.py > $R/gpu_tests_fp8.log 2>&1
python3 scripts/bench_decode.py --grid quick --kv fp8 --peers flashmla --out $R/bench_fp8 > $R/bench_fp8.log 2>&1
ETAP_REQUIRE_GPU=1 python3 -m pytest -q tests/test_decode_gpu.py > $R/gpu_tests_bf16.log 2>&1
python3 scripts/bench_decode.py --grid quick --kv bf16 --peers flashmla --out $R/bench_bf16 > $R/bench_bf16.log 2>&1
echo done > $R/DONE
