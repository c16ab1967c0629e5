#!/usr/bin/env bash
# Everything vllmd does on a GPU machine, in one run: unpack a build made on a
# CPU machine (scripts/device-pack.sh), run the CUDA tests, then the
# benchmarks, and write every log and result under $OUT.
#
#   bench/gpu_run.sh [PHASE ...]     (default: tests llava)
#
# Phases:
#   tests   op-by-op CUDA-vs-CPU parity (test_ops_cuda) and the three
#           families' golden tests on the GPU, in float32 (strict) and bf16,
#           and the FP8 KV cache's agreement test (test_kv_fp8)
#   fp8test the FP8 agreement test alone
#   llava, qwen2vl2b, qwen2vl7b, phi35
#           a full-size random-weight checkpoint (bench/make_checkpoint.py),
#           bench/latency, bench/vision, bench/throughput, and the same
#           workloads through transformers (bench/hf_throughput.py)
#   fp8     LLaVA's latency and throughput again with --kv-cache-dtype fp8
#   coldstart  vllmd serve LLaVA to 200 on /health (bench/cold_start.py)
#   serving vllmd serve on the LLaVA checkpoint + bench/serving (Poisson)
#   serving_qwen7b  the same on Qwen2-VL-7B, 10 requests/s of 1024x768 JPEGs
#   profile per-op GPU time (VD_CUDA_PROFILE=1) of LLaVA's vision tower and
#           decode
#   sanitize compute-sanitizer memcheck and racecheck over the attention
#           parity tests, memcheck over the row ops (sampler, patch_conv)
#
# Environment: OUT (where summary.txt, results.tgz and logs.tgz go,
# default /tmp/vllmd-gpu), PACK (default .devpack.tar.xz), CKPT_DIR (where
# checkpoints are written, default /dev/shm/ckpt), NUM_PROMPTS (vllmd
# throughput requests, default 1000), HF_PROMPTS (transformers', 256),
# SKIP_HF=1, HF_BATCHES (32,64,128), SERVE_RATE, SERVE_PROMPTS.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-/tmp/vllmd-gpu}
OUT=/tmp/vllmd-gpu-logs
PACK=${PACK:-.devpack.tar.xz}
CKPT_DIR=${CKPT_DIR:-/dev/shm/ckpt}
HF_PROMPTS=${HF_PROMPTS:-256}
NUM_PROMPTS=${NUM_PROMPTS:-1000}
PHASES=("$@")
[ ${#PHASES[@]} -gt 0 ] || PHASES=(tests llava)
rm -rf "$OUT" && mkdir -p "$OUT" "$RESULTS"
SUMMARY="$RESULTS/summary.txt" # written as it goes: a run cut short still returns it
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
export VD_PLUGIN_DIR="$P/plugins" VD_TEST_DATA=tests/data
for d in tests/data/models/qwen2vl-tiny-*; do
	[ -s "$d/tokenizer.json" ] || cp "$P/tok/tokenizer.json" "$d/"
done
mkdir -p tests/data/tok/qwen2 && cp -n "$P"/tok/tokenizer*.json tests/data/tok/qwen2/
BIN="$P/bin"
say "libraries taken from the pack: $(ls "$P/use" | tr '\n' ' ')"
# cuDNN is opened at run time (patch_conv); when the loader's search path
# lacks it, use the CUDA toolkit's or the one PyTorch's wheel carries
if ! ldconfig -p 2>/dev/null | grep -q 'libcudnn.so.9 '; then
	for d in /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu \
		$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0] + "/lib")' 2>/dev/null); do
		if [ -e "$d/libcudnn.so.9" ]; then
			export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
			break
		fi
	done
fi
say "cuDNN: $( (ldconfig -p 2>/dev/null; for d in ${LD_LIBRARY_PATH//:/ }; do ls "$d"/libcudnn.so.9 2>/dev/null; done) | grep -m1 -o '[^ ]*libcudnn.so.9[^ ]*' || echo 'not found')"
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
	# a failure brings its log's tail back in the summary
	[ $rc -ne 0 ] && tail -25 "$OUT/$name.log" | cut -c1-300 | sed 's/^/    | /' >>"$SUMMARY"
	return $rc
}

# the attention kernels first: if the tile kernel fails its parity test, the
# rest of the run uses the previous one (VD_CUDA_FLASH=wmma) and says so
CK_RUN_CASE=attention run ops_cuda_attention 300 "$BIN/test_ops_cuda" || {
	export VD_CUDA_FLASH=wmma
	say "attention parity failed: the rest of this run uses VD_CUDA_FLASH=wmma"
}
# the same for the linear kernels: a failing GEMV parity test turns it off
CK_RUN_CASE=dense run ops_cuda_dense 300 "$BIN/test_ops_cuda" || {
	export VD_CUDA_GEMV=0
	say "dense parity failed: the rest of this run uses VD_CUDA_GEMV=0"
}
if has_phase sanitize; then
	# memory errors and shared-memory races of the attention kernels
	CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
	CK_RUN_CASE=attention CK_FORK=no run sanitize_memcheck 200 "$CS" --tool memcheck \
		--error-exitcode 3 "$BIN/test_ops_cuda"
	grep -h "ERROR SUMMARY" "$OUT/sanitize_memcheck.log" | tee -a "$SUMMARY"
	CK_RUN_CASE=attention CK_FORK=no run sanitize_racecheck 120 "$CS" --tool racecheck \
		--error-exitcode 3 "$BIN/test_ops_cuda"
	grep -h "RACECHECK SUMMARY\|ERROR SUMMARY" "$OUT/sanitize_racecheck.log" | tee -a "$SUMMARY"
	# the sampler's and patch_conv's kernels (the "rows" case)
	CK_RUN_CASE=rows CK_FORK=no run sanitize_memcheck_rows 240 "$CS" --tool memcheck \
		--error-exitcode 3 "$BIN/test_ops_cuda"
	grep -h "ERROR SUMMARY" "$OUT/sanitize_memcheck_rows.log" | tee -a "$SUMMARY"
fi
if has_phase tests; then
	run ops_cuda 300 "$BIN/test_ops_cuda"
	for t in test_llava test_phi3v test_qwen2vl test_engine; do
		VD_TEST_DEVICE=cuda VD_TEST_DTYPE=float32 run "${t}_cuda_f32" 300 "$BIN/$t"
	done
	for t in test_llava test_phi3v test_qwen2vl test_kv_fp8; do
		VD_TEST_DEVICE=cuda VD_TEST_DTYPE=bfloat16 run "${t}_cuda_bf16" 300 "$BIN/$t"
	done
	grep -h "match transformers\|diverged\|step graphs\|fp8 kv" "$OUT"/test_*_cuda_*.log >>"$SUMMARY"
	grep -h "^patch_conv\|^sample_full" "$OUT/ops_cuda.log" | sort -u >>"$SUMMARY"
fi

if has_phase fp8test && ! has_phase tests; then
	VD_TEST_DEVICE=cuda VD_TEST_DTYPE=bfloat16 run test_kv_fp8_cuda_bf16 300 "$BIN/test_kv_fp8"
	grep -h "fp8 kv" "$OUT/test_kv_fp8_cuda_bf16.log" >>"$SUMMARY"
fi

source bench/gpu_bench.sh
has_phase llava && bench_family llava-1.5-7b llava
has_phase fp8 && bench_fp8 llava-1.5-7b llava
has_phase coldstart && bench_coldstart llava-1.5-7b llava
has_phase serving && bench_serving llava-1.5-7b llava
has_phase profile && bench_profile llava-1.5-7b llava
rm -rf "$CKPT_DIR/llava-1.5-7b"
has_phase qwen2vl2b && bench_family qwen2-vl-2b qwen2vl2b && rm -rf "$CKPT_DIR/qwen2-vl-2b"
has_phase qwen2vl7b && bench_family qwen2-vl-7b qwen2vl7b
if has_phase serving_qwen7b; then
	# SERVE_MNBTS: the token budgets to serve with, one server each
	for mnbt in ${SERVE_MNBTS:-8192}; do
		SERVE_RATE=${SERVE_RATE:-10} SERVE_IMAGE=${SERVE_IMAGE:-1024x768} \
			SERVE_FORMAT=${SERVE_FORMAT:-jpeg} SERVE_MNBT=$mnbt SERVE_TAG=_mnbt$mnbt \
			bench_serving qwen2-vl-7b qwen2vl7b
	done
fi
rm -rf "$CKPT_DIR/qwen2-vl-7b"
has_phase phi35 && bench_family phi-3.5-vision phi35 && rm -rf "$CKPT_DIR/phi-3.5-vision"
say "done"
# everything back as few files: the summary, results JSON, and the logs
ls "$OUT"/*.json >/dev/null 2>&1 && tar -C "$OUT" -czf "$RESULTS/results.tgz" $(cd "$OUT" && ls *.json)
tar -C "$OUT" -czf "$RESULTS/logs.tgz" .
