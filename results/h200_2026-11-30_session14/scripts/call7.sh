#!/bin/bash
# exp/warp-arrivals (this tree, "next") against main: decode GPU tests on next, then h_q 16 rows of both dtypes
cd "$(dirname "$0")/.."
DEADLINE=540 BENCH_TIMEOUT=90 TIMEOUT=200 TESTK="test" WHERE="h_q == 16 and s_q == 1" TREES="next=. main=.ab_base" bash scripts/device_ab.sh
