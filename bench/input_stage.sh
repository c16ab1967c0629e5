#!/usr/bin/env bash
# The input stage, measured on the tiny demo checkpoint (CPU):
#   bench/input_stage.sh images [N]   `vllmd generate` on N (256) requests, each
#                                      with its own 1024x768 JPEG: wall time, and
#                                      the engine profile (VD_PROFILE=1) of where
#                                      the engine thread's time went
#   bench/input_stage.sh long-prompt  small /v1/completions requests sent while a
#                                      50 MB prompt is being prepared: their
#                                      slowest latency, and the big one's answer
# BASE=other/vllmd BASE_PLUGINS=other/plugins runs the same against another
# build first (the before of a before/after), alternating RUNS (3) times.
# Images are drawn with python3-pil from fixed seeds, the same on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
M=tests/data/models/llava-tiny-a
RUNS=${RUNS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

builds=()
[ -n "${BASE:-}" ] && builds+=("$BASE|${BASE_PLUGINS:?BASE_PLUGINS names BASE\'s plugin dir}")
builds+=("$B/vllmd|$B/build-plugins")

images() {
	local n=${1:-256}
	/usr/bin/python3 - "$tmp" "$n" <<'PY'
import json, random, sys
from PIL import Image, ImageDraw
out, n = sys.argv[1], int(sys.argv[2])
with open(out + "/in.jsonl", "w") as f:
    for i in range(n):
        rnd = random.Random(i)
        img = Image.new("RGB", (1024, 768), tuple(rnd.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(img)
        for _ in range(40):
            x, y = rnd.randrange(1024), rnd.randrange(768)
            d.ellipse([x, y, x + rnd.randrange(20, 400), y + rnd.randrange(20, 300)],
                      fill=tuple(rnd.randrange(256) for _ in range(3)))
        img.save(f"{out}/img{i:03d}.jpg", quality=90)
        f.write(json.dumps({"prompt": f"USER: <image>\nWhat is in picture {i}?\nASSISTANT:",
                            "multi_modal_data": {"image": f"{out}/img{i:03d}.jpg"},
                            "sampling_params": {"temperature": 0, "max_tokens": 8,
                                                "ignore_eos": True}}) + "\n")
PY
	for ((r = 1; r <= RUNS; r++)); do
		for b in "${builds[@]}"; do
			bin=${b%%|*} plugins=${b#*|}
			# VLLMD_PROFILE: the name builds before the rename read
			VD_PROFILE=1 VLLMD_PROFILE=1 /usr/bin/time -f "wall %e s, user %U s, peak RSS %M KiB" \
				"$bin" generate --model "$M" --plugin-dir "$plugins" --device cpu \
				--input "$tmp/in.jsonl" --output "$tmp/out.jsonl" 2>"$tmp/log" || { cat "$tmp/log"; exit 1; }
			echo "== run $r: $bin"
			grep -E "profile|^wall" "$tmp/log"
			[ "$(wc -l <"$tmp/out.jsonl")" -eq "$n" ] || { echo "missing outputs"; exit 1; }
		done
	done
}

long_prompt() {
	source tests/lib/daemon.sh
	/usr/bin/python3 - "$tmp" <<'PY'
import json, random, sys
rnd = random.Random(7)
words = ["red", "boat", "quiet", "seven", "river", "glass", "moon", "harbour", "light", "stone"]
parts, n = [], 0
while n < 50 * 1000 * 1000:
    w = rnd.choice(words)
    parts.append(w)
    n += len(w) + 1
json.dump({"model": "m", "prompt": " ".join(parts), "max_tokens": 4}, open(sys.argv[1] + "/big.json", "w"))
json.dump({"model": "m", "prompt": "USER: hello there\nASSISTANT:", "max_tokens": 4,
           "temperature": 0}, open(sys.argv[1] + "/small.json", "w"))
PY
	for ((r = 1; r <= RUNS; r++)); do
		for b in "${builds[@]}"; do
			bin=${b%%|*} plugins=${b#*|}
			daemon_start "$tmp/d.log" "$bin" serve "$M" --plugin-dir "$plugins" --device cpu \
				--served-model-name m --max-request-body-bytes 128MiB || { cat "$tmp/d.log"; exit 1; }
			u=http://127.0.0.1:$daemon_port/v1/completions
			curl -s -o "$tmp/big.out" -H 'Content-Type: application/json' --data-binary @"$tmp/big.json" "$u" &
			big=$!
			max=0 n=0
			while kill -0 $big 2>/dev/null; do
				t=$(curl -s -o /dev/null -w "%{time_total}" -H 'Content-Type: application/json' \
					--data @"$tmp/small.json" "$u")
				n=$((n + 1))
				max=$(/usr/bin/python3 -c "print(max($max, $t))")
				sleep 0.1
			done
			wait $big || true
			daemon_stop
			echo "== run $r: $bin: $n small requests while the 50 MB prompt was in flight, slowest $max s"
			echo "   the big one: $(head -c 160 "$tmp/big.out")"
		done
	done
}

case ${1:-images} in
images) images "${2:-256}" ;;
long-prompt) long_prompt ;;
*) echo "usage: bench/input_stage.sh images [N] | long-prompt" >&2; exit 2 ;;
esac
