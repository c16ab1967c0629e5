#!/usr/bin/env bash
# Memory stays bounded: peak RSS of `vllmd generate` over 200 and over 2,000
# requests (each with an image and a short prompt, 8 output tokens) on the
# tiny demo checkpoint. Prints both peaks and their ratio; the engine admits
# a bounded window of requests at a time, so the ratio should be ~1.
#   bench/mem_bounded.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
M=tests/data/models/llava-tiny-a
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
imgs=(wide tall small square big)
gen() {
	for ((i = 0; i < $1; i++)); do
		printf '{"prompt": "USER: <image>\\nWhat is in picture %d?\\nASSISTANT:", "multi_modal_data": {"image": "tests/data/models/images/%s.png"}, "sampling_params": {"temperature": 0.8, "seed": %d, "max_tokens": 8, "ignore_eos": true}}\n' \
			"$i" "${imgs[$((i % 5))]}" "$i"
	done
}
run() {
	gen "$1" >"$tmp/in.jsonl"
	/usr/bin/time -f "%M" -o "$tmp/rss" "$B/vllmd" generate --model "$M" --plugin-dir "$B/build-plugins" \
		--max-num-seqs 64 --input "$tmp/in.jsonl" --output "$tmp/out.jsonl" 2>"$tmp/log"
	[ "$(wc -l <"$tmp/out.jsonl")" -eq "$1" ] || { echo "missing outputs"; exit 1; }
	cat "$tmp/rss"
}
r200=$(run 200)
r2000=$(run 2000)
echo "requests  peak RSS (KiB)"
echo "200       $r200"
echo "2000      $r2000"
awk -v a="$r200" -v b="$r2000" 'BEGIN { printf "ratio     %.3f (target <= 1.10)\n", b / a; exit !(b <= 1.10 * a) }'
