#!/usr/bin/env bash
# Run on the GPU machine from the repo root (needs transformers 5.17 + torch;
# everything runs on the CPU): make the Qwen2-VL and Phi-3.5-vision golden
# fixtures in a temp dir and pack them into $OUT as qwen2vl_fixtures.tgz and
# phi3v_fixtures.tgz (each holds models/<name>/... and models/images/...).
# The two generators run side by side; one failing does not stop the other.
# Qwen's tokenizer.json is left out of its tarball when it is byte-identical
# to tests/data/tok/qwen2/tokenizer.json (copy it back after unpacking).
# Usage: OUT=/some/dir bash tests/gen/device_more_fixtures.sh
set -u -o pipefail
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the output folder}"
mkdir -p "$OUT"
work=$(mktemp -d)
limit=${GEN_TIMEOUT:-300}
start=$(date +%s)

python3 - <<'PY' 2>&1 | tee "$OUT/summary.txt"
import importlib, os
for m in ("transformers", "torch", "torchvision", "tokenizers", "PIL", "numpy", "safetensors", "jinja2"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:
        print(m, "MISSING", repr(e))
print("cpus", os.cpu_count())
PY
python3 -m py_compile tests/gen/fixture_common.py tests/gen/qwen2vl_reference.py tests/gen/phi3v_reference.py \
    tests/gen/make_qwen2vl_fixtures.py tests/gen/make_phi3v_fixtures.py && echo "py_compile ok"
python3 tests/gen/check_gen_notorch.py "$work/selftest" > "$work/selftest_log.txt" 2>&1
echo "generator self-test (check_gen_notorch.py) exit $?: $(grep -c '^FAIL' "$work/selftest_log.txt") failure(s)" | tee -a "$OUT/summary.txt"
grep '^FAIL' "$work/selftest_log.txt" | tee -a "$OUT/summary.txt"

mkdir -p "$work/qwen2vl" "$work/phi3v"
GEN_THREADS=8 timeout "$limit" python3 tests/gen/make_qwen2vl_fixtures.py --out "$work/qwen2vl/models" \
    > "$OUT/qwen2vl_log.txt" 2>&1 &
qpid=$!
GEN_THREADS=8 timeout "$limit" python3 tests/gen/make_phi3v_fixtures.py --out "$work/phi3v/models" \
    > "$OUT/phi3v_log.txt" 2>&1 &
ppid=$!
wait "$qpid"; qrc=$?
wait "$ppid"; prc=$?
echo "generators done after $(( $(date +%s) - start )) s: qwen2vl exit $qrc, phi3v exit $prc"

pack() {  # pack FAMILY: $work/FAMILY/models -> $OUT/FAMILY_fixtures.tgz (split if too big)
	local fam=$1 dir="$work/$1" name="$1_fixtures" t size m b
	if [ ! -d "$dir/models" ]; then
		echo "$fam: no output to pack"
		return
	fi
	if [ "$fam" = qwen2vl ]; then
		for t in "$dir"/models/qwen2vl-*/tokenizer.json; do
			[ -f "$t" ] || continue
			if cmp -s "$t" tests/data/tok/qwen2/tokenizer.json; then
				rm -f "$t"
			else
				echo "WARNING: $t differs from tests/data/tok/qwen2/tokenizer.json; packed"
			fi
		done
	fi
	tar -C "$dir" -czf "$OUT/$name.tgz" models
	size=$(stat -c %s "$OUT/$name.tgz")
	if [ "$size" -gt $((16 * 1024 * 1024 - 65536)) ]; then
		# at most 8 files come back: one tarball per model, images in the first
		echo "$name.tgz is $size bytes, over the 16 MiB limit: one tarball per model instead"
		rm -f "$OUT/$name.tgz"
		local extra=models/images
		for m in "$dir"/models/*/; do
			b=$(basename "$m")
			[ "$b" = images ] && continue
			tar -C "$dir" -czf "$OUT/${name}_$b.tgz" "models/$b" $extra
			extra=
		done
	fi
}
pack qwen2vl
pack phi3v

echo "=== warnings and errors"
grep -h -E "WARNING|ERROR|Error|Traceback|forward variant|rope check|reload check|done:|finished" \
	"$OUT/qwen2vl_log.txt" "$OUT/phi3v_log.txt" | cut -c1-400 | head -n 80
for f in "$OUT/qwen2vl_log.txt" "$OUT/phi3v_log.txt"; do
	echo "--- last lines of $(basename "$f")"
	tail -n 4 "$f" | cut -c1-400
done
echo "=== summary"
python3 - "$work" <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import glob, json, os, sys
for ref in sorted(glob.glob(os.path.join(sys.argv[1], "*", "models", "*", "reference.json"))):
    r = json.load(open(ref))
    d = os.path.dirname(ref)
    sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
    bad = [i for i, c in enumerate(r["cases"]) if "error" in c]
    print("%s: %d cases, failed %s, files %s" % (r["model"], len(r["cases"]), bad, sizes))
    print("  checks:", json.dumps(r["checks"])[:1500])
    for i, c in enumerate(r["cases"]):
        if "error" in c:
            print("  case %d ERROR: %s" % (i, c["error"].strip().splitlines()[-1][:300]))
            continue
        extra = {k: c[k] for k in ("image_tokens", "image_grid_thw", "rope_delta", "positions_match_hf",
                                    "mrope_positions_source", "grid_matches_ours", "rope_regime", "hits_eos")
                 if k in c}
        print("  case %d: len %d margin %.4f tokens %s %s" % (i, len(c["expanded_ids"]), c["min_top1_margin"],
                                                              [s["token"] for s in c["steps"]], extra))
PY
ls -la "$OUT" | tee -a "$OUT/summary.txt"
echo "total $(( $(date +%s) - start )) s" | tee -a "$OUT/summary.txt"
