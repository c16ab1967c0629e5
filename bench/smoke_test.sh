#!/usr/bin/env bash
# Smoke test of the two benchmarks on the tiny LLaVA checkpoint (a few
# seconds): bench/throughput through the C API, then bench/serving against a
# vllmd started here on a port the kernel picks. Checks their JSON results, not speed.
set -u
B=${VD_BUILDDIR:-build}
D=${VD_TEST_DATA:-tests/data}
S=${VD_SRCDIR:-.}
P=${VD_PLUGIN_DIR:-$B/build-plugins}
M="$D/models/llava-tiny-a"
tmp=$(mktemp -d)
srv=
cleanup() { [ -n "$srv" ] && kill "$srv" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
pass=0 fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
no() { echo "not ok - $1"; fail=$((fail + 1)); }

# 1. offline throughput: every request exact, results in the JSON
"$B/bench/throughput" --model "$M" --plugin-dir "$P" --device cpu --num-prompts 8 --warmup 2 \
	--output-len 4 --image-size 64 --input-len 16 --output-json "$tmp/tp.json" >"$tmp/tp.out" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "^Throughput: .* requests/s, .* total tokens/s, .* output tokens/s" "$tmp/tp.out" &&
	/usr/bin/python3 - "$tmp/tp.json" <<'PY'; then
import json, sys
j = json.load(open(sys.argv[1]))
assert j["num_requests"] == 8 and j["total_output_tokens"] == 32, j
assert j["text_tokens_per_prompt"] == 16 and j["mean_prompt_tokens"] > 16, j
assert j["requests_per_second"] > 0 and j["args"]["enable_prefix_caching"] is False, j
PY
	ok "bench/throughput runs and writes its JSON"
else
	no "bench/throughput: rc=$rc $(cat "$tmp/tp.out")"
fi

# 2. a bad option is refused by name
"$B/bench/throughput" --model "$M" --kv-cache-memory 8Q >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--kv-cache-memory '8Q'" "$tmp/err" && ok "bad option named" ||
	no "bad option: $(cat "$tmp/err")"

# 3. latency and the vision tower alone, on every family
for m in llava-tiny-a phi3v-tiny-a qwen2vl-tiny-a; do
	"$B/bench/latency" --model "$D/models/$m" --plugin-dir "$P" --device cpu --output-len 4 \
		--num-iters 1 --num-iters-warmup 1 --image-size 64 --input-len 8 \
		--output-json "$tmp/lat.json" >"$tmp/lat.out" 2>&1
	rc=$?
	if [ $rc -eq 0 ] && grep -q "^Decode step: " "$tmp/lat.out" &&
		/usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["avg_latency"] > 0 and j["prefill_latency"] > 0 and j["output_len"] == 4 and isinstance(j["decode_step_ms"], float), j' "$tmp/lat.json"; then
		ok "bench/latency on $m"
	else
		no "bench/latency on $m: rc=$rc $(cat "$tmp/lat.out")"
	fi
	"$B/bench/vision" --model "$D/models/$m" --plugin-dir "$P" --device cpu --batch-size 2 \
		--num-iters 1 --num-iters-warmup 0 --image-size 64 --output-json "$tmp/vis.json" \
		>"$tmp/vis.out" 2>&1
	rc=$?
	if [ $rc -eq 0 ] && /usr/bin/python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["images_per_s"] > 0 and j["batch_size"] == 2, j' "$tmp/vis.json"; then
		ok "bench/vision on $m"
	else
		no "bench/vision on $m: rc=$rc $(cat "$tmp/vis.out")"
	fi
done
"$B/bench/latency" --model "$M" --output-len 1 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "output-len '1': want an integer in \[2," "$tmp/err" && ok "bench/latency refuses --output-len 1" ||
	no "bench/latency --output-len 1: $(cat "$tmp/err")"

# 4. serving against a live vllmd
. "$S/tests/lib/daemon.sh"
up=0
daemon_start "$tmp/srv.log" "$B/vllmd" serve "$M" --plugin-dir "$P" --device cpu \
	--chat-template "$S/conf/template_llava.jinja" && up=1
srv=$daemon_pid port=$daemon_port
if [ $up -eq 1 ]; then
	"$B/bench/serving" --port "$port" --num-prompts 8 --request-rate 50 --output-len 4 \
		--image-size 64 --result-file "$tmp/sv.json" >"$tmp/sv.out" 2>&1
	rc=$?
	if [ $rc -eq 0 ] && grep -q "Mean TTFT (ms):" "$tmp/sv.out" &&
		/usr/bin/python3 - "$tmp/sv.json" <<'PY'; then
import json, sys
j = json.load(open(sys.argv[1]))
assert j["completed"] == 8 and j["failed"] == 0 and j["total_output_tokens"] == 32, j
assert all(t > 0 for t in j["ttfts"]) and j["mean_e2el_ms"] >= j["mean_ttft_ms"] > 0, j
assert j["output_lens"] == [4] * 8 and all(l > 16 for l in j["input_lens"]), j
PY
		ok "bench/serving streams 8 requests and writes its JSON"
	else
		no "bench/serving: rc=$rc $(cat "$tmp/sv.out")"
	fi
else
	no "vllmd did not come up: $(cat "$tmp/srv.log")"
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
