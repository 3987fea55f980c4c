#!/bin/bash
TREES="fast=. f2=.ab_f2" TESTK="not h128" TIMEOUT=200 bash scripts/device_ab.sh 2>&1 | grep -E "tests|timed|built|failed|Error|error" | tail -20
PYTHONPATH=/tmp/cs:$PWD timeout 170 python3 scripts/reliability.py --sanitize-only --tools memcheck,racecheck --out /tmp/san > $OUT/sanitizer.txt 2>&1
echo "sanitizer exit $?"; tail -25 $OUT/sanitizer.txt
