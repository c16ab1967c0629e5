#!/usr/bin/env bash
# End-to-end checks of `vllmd generate`: output shape, a bad line among good
# ones, the missing-plugin refusal, and --help listing every option.
set -u
B=${VD_BUILDDIR:-.}
D=${VD_TEST_DATA:-tests/data}
P=${VD_PLUGIN_DIR:-$B/build-plugins}
V="$B/vllmd"
M="$D/models/llava-tiny-a"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
no() { echo "not ok - $1"; fail=$((fail + 1)); }

# 1. three requests, the middle one malformed
cat >"$tmp/in.jsonl" <<JSON
{"prompt": "USER: <image>\nWhat is this?\nASSISTANT:", "multi_modal_data": {"image": "$D/models/images/wide.png"}, "sampling_params": {"temperature": 0, "max_tokens": 5, "logprobs": 2}}
{"prompt": 42}
{"prompt_token_ids": [1, 3148, 1001, 29901], "sampling_params": {"temperature": 0.7, "seed": 3, "max_tokens": 4, "stop_token_ids": [2]}}
JSON
"$V" generate --model "$M" --plugin-dir "$P" --input "$tmp/in.jsonl" --output "$tmp/out.jsonl" 2>"$tmp/err"
rc=$?
[ $rc -eq 2 ] && ok "a bad line makes the exit status 2" || no "exit status $rc (want 2): $(cat "$tmp/err")"
/usr/bin/python3 - "$tmp/out.jsonl" <<'PY' && ok "output lines have vLLM's RequestOutput shape" || no "output shape"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 3, len(lines)
a, b, c = lines
assert a["request_id"] == "0" and a["prompt"].startswith("USER:")
assert a["prompt_token_ids"][:5] == [1, 3148, 1001, 29901, 29871] and a["prompt_token_ids"].count(32000) == 16
o = a["outputs"][0]
assert o["index"] == 0 and len(o["token_ids"]) == 5 and o["finish_reason"] == "length"
assert isinstance(o["text"], str) and isinstance(o["cumulative_logprob"], float)
assert len(o["logprobs"]) == 5
for pos, tok in zip(o["logprobs"], o["token_ids"]):
    assert str(tok) in pos and 2 <= len(pos) <= 3
    for v in pos.values():
        assert set(v) == {"logprob", "rank", "decoded_token"} and v["logprob"] <= 0
assert b["line"] == 2 and "prompt" in b["error"]["message"] and b["error"]["code"] == 400
assert c["prompt"] is None and c["prompt_token_ids"] == [1, 3148, 1001, 29901]
assert 1 <= len(c["outputs"][0]["token_ids"]) <= 4
PY

# 2. greedy output is deterministic across runs
"$V" generate --model "$M" --plugin-dir "$P" --input "$tmp/in.jsonl" --output "$tmp/out2.jsonl" 2>/dev/null
cmp -s "$tmp/out.jsonl" "$tmp/out2.jsonl" && ok "same output on a second run" || no "outputs differ between runs"

# 3. no plugin serves the architecture
mkdir "$tmp/empty"
"$V" generate --model "$M" --plugin-dir "$tmp/empty" </dev/null >/dev/null 2>"$tmp/err"
rc=$?
if [ $rc -ne 0 ] && grep -q "no plugin serves architecture LlavaForConditionalGeneration" "$tmp/err"; then
	ok "missing plugin is refused by name"
else
	no "missing plugin: rc=$rc $(cat "$tmp/err")"
fi

# 3b. the CPU computes in float32 only: other dtypes are refused by name
"$V" generate --model "$M" --plugin-dir "$P" --device cpu --dtype bfloat16 </dev/null >/dev/null 2>"$tmp/err"
rc=$?
if [ $rc -ne 0 ] && grep -q "dtype bfloat16: the CPU backend computes in float32 only" "$tmp/err"; then
	ok "bfloat16 on the CPU is refused with the reason"
else
	no "dtype bfloat16 on cpu: rc=$rc $(cat "$tmp/err")"
fi

# 3c. a chat template that is neither a readable file nor template text
timeout 120 "$V" serve "$M" --plugin-dir "$P" --port 0 --chat-template "$tmp/missing.jinja" \
	</dev/null >/dev/null 2>"$tmp/err"
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "cannot read chat template file $tmp/missing.jinja" "$tmp/err"; then
	ok "an unreadable chat template file is refused at start-up"
else
	no "missing chat template: rc=$rc $(cat "$tmp/err")"
fi

# 4. --help lists every option with its YAML key
"$V" --help >"$tmp/help"
missing=0
for k in model max_model_len limit_mm_per_prompt plugin_dir kv_cache_memory enable_prefix_caching \
	chat_template api_key port image_fetch_timeout allowed_local_media_path; do
	grep -q "$k" "$tmp/help" || { echo "# help lacks $k"; missing=1; }
done
[ $missing -eq 0 ] && ok "--help lists the options" || no "--help incomplete"

# 5. unknown option names the flag
"$V" generate --model "$M" --max-modle-len 5 </dev/null >/dev/null 2>"$tmp/err"
[ $? -ne 0 ] && grep -q -- "--max-modle-len" "$tmp/err" && ok "unknown flag is named" || no "unknown flag: $(cat "$tmp/err")"

# 6. precomputed image embeddings from a safetensors file (Qwen2-VL)
Q="$D/models/qwen2vl-tiny-a"
if [ -d "$Q" ]; then
	/usr/bin/python3 - "$Q" "$tmp/q.jsonl" <<'PY'
import json, sys
ref = json.load(open(sys.argv[1] + "/reference.json"))
c = ref["cases"][0]
line = {"prompt": c["prompt"], "multi_modal_data": {"image": {"image_embeds": sys.argv[1] + "/stages.safetensors"}},
        "sampling_params": {"temperature": 0, "max_tokens": ref["steps"], "ignore_eos": True}}
open(sys.argv[2], "w").write(json.dumps(line) + "\n")
PY
	"$V" generate --model "$Q" --plugin-dir "$P" --input "$tmp/q.jsonl" --output "$tmp/q.out" 2>/dev/null
	/usr/bin/python3 - "$Q" "$tmp/q.out" <<'PY' && ok "image_embeds from a file give the reference tokens" || no "image_embeds input"
import json, sys
ref = json.load(open(sys.argv[1] + "/reference.json"))
out = json.loads(open(sys.argv[2]).read())
assert out["outputs"][0]["token_ids"] == [s["token"] for s in ref["cases"][0]["steps"]], out
PY
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
