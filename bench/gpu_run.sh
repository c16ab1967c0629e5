#!/usr/bin/env bash
# Everything vllmd does on a GPU machine, in one run: unpack a build made on a
# CPU machine (scripts/device-pack.sh), run the CUDA tests, then the
# benchmarks, and write every log and result under $OUT.
#
#   bench/gpu_run.sh [PHASE ...]     (default: tests bench)
#
# Phases:
#   tests   op-by-op CUDA-vs-CPU parity (test_ops_cuda) and the three
#           families' golden tests on the GPU, in float32 (strict) and bf16
#   bench   full-size random-weight checkpoints (bench/make_checkpoint.py),
#           bench/latency, bench/vision, bench/throughput, bench/serving, and
#           the same workloads through transformers (bench/hf_throughput.py)
#
# Environment: OUT (where summary.txt, results.tgz and logs.tgz go,
# default /tmp/vllmd-gpu), PACK (default
# .devpack.tar.xz), CKPT_DIR (where checkpoints are written, default
# /tmp/ckpt), NUM_PROMPTS (throughput requests, default 1000).
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-/tmp/vllmd-gpu}
OUT=/tmp/vllmd-gpu-logs
PACK=${PACK:-.devpack.tar.xz}
CKPT_DIR=${CKPT_DIR:-/tmp/ckpt}
NUM_PROMPTS=${NUM_PROMPTS:-1000}
PHASES=("$@")
[ ${#PHASES[@]} -gt 0 ] || PHASES=(tests bench)
rm -rf "$OUT" && mkdir -p "$OUT" "$RESULTS"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
has_phase() { local p; for p in "${PHASES[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

# ---- unpack, and point the loader at the libraries this machine lacks
P=/tmp/vllmd-pack
rm -rf "$P" && mkdir -p "$P/use" && tar -C "$P" -xJf "$PACK" || { say "cannot unpack $PACK"; exit 1; }
for _ in 1 2 3; do
	for f in "$P"/bin/* "$P"/plugins/*; do
		LD_LIBRARY_PATH="$P/use" ldd "$f" 2>/dev/null | awk '/not found/{print $1}'
	done | sort -u | while read -r l; do
		[ -e "$P/lib/$l" ] && ln -sf "$P/lib/$l" "$P/use/$l"
	done
done
export LD_LIBRARY_PATH="$P/use${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export VD_PLUGIN_DIR="$P/plugins" VLLMD_PLUGIN_DIR="$P/plugins" VD_TEST_DATA=tests/data
for d in tests/data/models/qwen2vl-tiny-*; do
	[ -s "$d/tokenizer.json" ] || cp "$P/tok/tokenizer.json" "$d/"
done
BIN="$P/bin"
say "libraries taken from the pack: $(ls "$P/use" | tr '\n' ' ')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
GPU_NAME=$(head -1 "$OUT/gpu.txt" | cut -d, -f1)
say "gpu: $GPU_NAME; date: $(date -u +%F)"

# run NAME TIMEOUT CMD...: log to $OUT/NAME.log, one summary line
run() {
	local name=$1 lim=$2 t0 rc
	shift 2
	t0=$(date +%s%N)
	timeout "$lim" "$@" >"$OUT/$name.log" 2>&1
	rc=$?
	say "$(printf '%-28s rc=%-3s %6d ms' "$name" "$rc" $((($(date +%s%N) - t0) / 1000000)))"
	return $rc
}

if has_phase tests; then
	run ops_cuda 300 "$BIN/test_ops_cuda"
	for t in test_llava test_phi3v test_qwen2vl test_engine; do
		VD_TEST_DEVICE=cuda VD_TEST_DTYPE=float32 run "${t}_cuda_f32" 300 "$BIN/$t"
	done
	for t in test_llava test_phi3v test_qwen2vl; do
		VD_TEST_DEVICE=cuda VD_TEST_DTYPE=bfloat16 run "${t}_cuda_bf16" 300 "$BIN/$t"
	done
	grep -h "match transformers\|diverged" "$OUT"/test_*_cuda_*.log >>"$SUMMARY"
fi

if has_phase bench; then
	[ -f bench/gpu_bench.sh ] && source bench/gpu_bench.sh
fi
say "done"
# everything back as few files: the summary, results JSON, and the logs
cp "$SUMMARY" "$RESULTS/"
ls "$OUT"/*.json >/dev/null 2>&1 && tar -C "$OUT" -czf "$RESULTS/results.tgz" $(cd "$OUT" && ls *.json)
tar -C "$OUT" -czf "$RESULTS/logs.tgz" .
