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

echo "== daemon end-to-end tests (OpenAI client)"
e2e_pass=0 e2e_fail=0
if VLLMD=build/vllmd PLUGINS=build/build-plugins node --test tests/e2e/ >build/e2e.log 2>&1; then :; else status=1; fi
grep -E "^# (pass|fail)" build/e2e.log || tail -40 build/e2e.log
e2e_pass=$(awk '/^# pass/ {print $3}' build/e2e.log)
e2e_fail=$(awk '/^# fail/ {print $3}' build/e2e.log)
[ "${e2e_fail:-1}" = 0 ] || { grep -B2 -A20 "^not ok" build/e2e.log | head -80; status=1; }

echo "== tests under ASan/UBSan (build-asan/)"
mkdir -p build-asan
( cd build-asan
  [ -f Makefile ] && [ Makefile -nt ../configure ] || ../configure --quiet --enable-sanitizers --without-cuda
  make -j"$jobs" >/dev/null
  make -j"$jobs" check ) || { tail -80 build-asan/test-suite.log 2>/dev/null; status=1; }

pass=$(cat build/test-suite.log build-asan/test-suite.log 2>/dev/null | grep -E '^# PASS:' | awk -v e="${e2e_pass:-0}" '{s+=$3} END {print s+e}')
fail=$(cat build/test-suite.log build-asan/test-suite.log 2>/dev/null | grep -E '^# (FAIL|ERROR|XPASS):' | awk -v e="${e2e_fail:-0}" '{s+=$3} END {print s+e}')
echo "$pass passed, $fail failed"
[ "$status" -eq 0 ] && [ "$fail" -eq 0 ]
