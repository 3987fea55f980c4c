#!/bin/bash
# A/B of revisions on the device: this tree ("next") against other revisions unpacked in ignored
# folders (carry them):  rm -rf .ab_base && mkdir .ab_base && git archive REV | tar -x -C .ab_base
# TREES: name=folder pairs (folders relative to this tree), default "next=. main=.ab_base"; e.g. "s8=. main=.ab_base pt=.ab_pt".
# All trees are built side by side. TESTK: a pytest -k expression run first (decode suites, bf16
# and e4m3) on TEST_TREES (default: every tree but "main"); the timing is skipped if one fails.
# TIMEOUT: seconds for each tree's test process (default 300); BENCH_TIMEOUT: per bench process (default 120). Then the quick grid
# (--rounds 2, FlashMLA as the same-process reference) runs as separate processes, the trees in
# turn, twice. KVS: cache dtypes (default "bf16 fp8"); WHERE: a bench_decode.py --where filter;
# VARIANTS: its --variants (e.g. heads_on_m=0). The tables go to stdout, each line prefixed by the
# tree's name and round, and one file per dtype to $OUT (the device returns at most 8 files).
# DEADLINE (seconds, default 560): no process starts that could outlive it, so the device call's own
# limit never kills one (a process killed while loading the extension used to leave the JIT lock).
set -u
DEADLINE=${DEADLINE:-560} BENCH_TIMEOUT=${BENCH_TIMEOUT:-120}
# fits SECONDS: whether a process of that many seconds still ends before DEADLINE
fits() { [ $((SECONDS + $1)) -le $DEADLINE ] || { echo "skipped (would pass DEADLINE=$DEADLINE s): $2"; return 1; }; }
mkdir -p /tmp/etap_wheels && cp .whl/sglang/batch-01/nvidia_cutlass-4.2.0.0-py3-none-any.whl .whl/sglang/batch-01/sglang_kernel-0.4.6-*.whl /tmp/etap_wheels/ 2>/dev/null
[ -d /tmp/cs/cutlass_library ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cs /tmp/etap_wheels/*.whl
TREES=${TREES:-"next=. main=.ab_base"}
ntrees=$(echo $TREES | wc -w)
export ETAP_FLASHMLA_SO=/tmp/cs/sgl_kernel/flashmla_ops.abi3.so MAX_JOBS=$((16 / ntrees > 4 ? 16 / ntrees : 4)) PYTHONUNBUFFERED=1
ROOT=$PWD
t0=$SECONDS
for tree in $TREES; do
  name=${tree%%=*}; d=$(cd $ROOT/${tree#*=} && pwd)
  (cd $d && PYTHONPATH=/tmp/cs:$d python3 -c "import etap_kernels; etap_kernels.interface.load_extension()" \
     > /tmp/build_$name.log 2>&1 || { echo "build of $name failed"; tail -20 /tmp/build_$name.log; }) &
done
wait
echo "built $TREES: $((SECONDS - t0)) s"
if [ -n "${TESTK:-}" ]; then
  for tree in $TREES; do
    name=${tree%%=*}; d=$(cd $ROOT/${tree#*=} && pwd)
    case " ${TEST_TREES:-$(echo $TREES | tr ' ' '\n' | grep -v '^main=' | cut -d= -f1 | tr '\n' ' ')} " in
      *" $name "*) ;;
      *) continue ;;
    esac
    fits ${TIMEOUT:-300} "tests on $name" || exit 1
    (cd $d && ETAP_REQUIRE_GPU=1 PYTHONPATH=/tmp/cs:$d timeout ${TIMEOUT:-300} python3 -m pytest -q -x -p no:warnings \
      tests/test_decode_gpu.py tests/test_decode_fp8_gpu.py -k "$TESTK" > /tmp/ab_tests_$name.log 2>&1)
    rc=$?
    tail -3 /tmp/ab_tests_$name.log | sed "s/^/$name tests: /"
    echo "tests on $name: exit $rc, $((SECONDS - t0)) s"
    [ $rc = 0 ] || { tail -40 /tmp/ab_tests_$name.log; exit 1; }
  done
fi
for KV in ${KVS:-bf16 fp8}; do
 for i in 1 2; do
  for tree in $TREES; do
   name=${tree%%=*}; d=$(cd $ROOT/${tree#*=} && pwd)
   fits $BENCH_TIMEOUT "$KV $name round $i" || continue
   (cd $d && PYTHONPATH=/tmp/cs:$d timeout $BENCH_TIMEOUT python3 scripts/bench_decode.py --grid quick --kv $KV --peers flashmla \
      --rounds 2 --out /tmp/ab_$name$i ${WHERE:+--where "$WHERE"} ${VARIANTS:+--variants "$VARIANTS"} \
      > /tmp/ab_${KV}_${name}_$i.log 2>&1; grep -E '\|' /tmp/ab_${KV}_${name}_$i.log | sed "s/^/$name-$i /" | tee -a $OUT/ab_${KV}.txt \
      || tail -5 /tmp/ab_${KV}_${name}_$i.log)
  done
 done
 echo "$KV timed: $((SECONDS - t0)) s"
done
