#!/usr/bin/env bash
# The whole test suite: set up and build (build/), run every test, then the
# same suite built with AddressSanitizer + UBSan (build-asan/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)
status=0
echo "== tests (build/)"
make -C build -j"$jobs" check || { cat build/test-suite.log 2>/dev/null | tail -80; status=1; }

echo "== tests under ASan/UBSan (build-asan/)"
mkdir -p build-asan
( cd build-asan
  [ -f Makefile ] && [ Makefile -nt ../configure ] || ../configure --quiet --enable-sanitizers --without-cuda
  make -j"$jobs" >/dev/null
  make -j"$jobs" check ) || { tail -80 build-asan/test-suite.log 2>/dev/null; status=1; }

pass=$(cat build/test-suite.log build-asan/test-suite.log 2>/dev/null | grep -E '^# PASS:' | awk '{s+=$3} END {print s+0}')
fail=$(cat build/test-suite.log build-asan/test-suite.log 2>/dev/null | grep -E '^# (FAIL|ERROR|XPASS):' | awk '{s+=$3} END {print s+0}')
echo "$pass passed, $fail failed"
[ "$status" -eq 0 ] && [ "$fail" -eq 0 ]
