#!/usr/bin/env bash
# Fuzz the daemon for a few hundred requests (fixed seeds): mutated chat and
# completions bodies (tests/fuzz/chat_fuzz.py) and malformed HTTP
# (tests/fuzz/http_fuzz.py). The server must answer every request with an
# HTTP status it documents, stay healthy, drain and exit 0 on SIGTERM, and,
# in the ASan/UBSan build, report no error and no leak.
set -u
B=${VD_BUILDDIR:-.}
D=${VD_TEST_DATA:-tests/data}
S=${VD_SRCDIR:-.}
P=${VD_PLUGIN_DIR:-$B/build-plugins}
tmp=$(mktemp -d)
srv=
cleanup() { [ -n "$srv" ] && kill -9 "$srv" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
pass=0 fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
no() { echo "not ok - $1"; fail=$((fail + 1)); }

. "$S/tests/lib/daemon.sh"
up=0
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} daemon_start "$tmp/srv.log" "$B/vllmd" serve "$D/models/llava-tiny-a" \
	--plugin-dir "$P" --device cpu --served-model-name llava-tiny \
	--chat-template "$S/conf/template_llava.jinja" --limit-mm-per-prompt image=2 \
	--image-fetch-timeout 1 && up=1
srv=$daemon_pid port=$daemon_port
[ $up = 1 ] || { echo "not ok - vllmd did not start: $(cat "$tmp/srv.log")"; exit 1; }

(cd "$S" && /usr/bin/python3 tests/fuzz/chat_fuzz.py "$port" 11 150) >"$tmp/chat.out" 2>&1 &&
	ok "mutated chat/completions requests get documented statuses: $(tail -1 "$tmp/chat.out")" ||
	no "chat fuzz: $(cat "$tmp/chat.out")"
(cd "$S" && /usr/bin/python3 tests/fuzz/http_fuzz.py "$port" 12 100) >"$tmp/http.out" 2>&1 &&
	ok "malformed HTTP handled" || no "http fuzz: $(cat "$tmp/http.out")"
/usr/bin/python3 -c "import urllib.request; assert urllib.request.urlopen('http://127.0.0.1:$port/health').status == 200" \
	2>/dev/null && ok "healthy after the fuzzing" || no "unhealthy after the fuzzing"
kill -TERM "$srv"
wait "$srv"
rc=$?
srv=
[ $rc -eq 0 ] && ok "drains and exits 0 on SIGTERM" || no "exit status $rc after SIGTERM"
if grep -q "ERROR: AddressSanitizer\|runtime error\|LeakSanitizer" "$tmp/srv.log"; then
	no "sanitizer report: $(grep -A20 "ERROR: AddressSanitizer\|runtime error\|LeakSanitizer" "$tmp/srv.log" | head -40)"
else
	ok "no sanitizer report"
fi
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
