# Benchmark phases of bench/gpu_run.sh (sourced there: uses run, say, BIN,
# OUT, CKPT_DIR, NUM_PROMPTS, HF_PROMPTS). One function per family: write the
# full-size random-weight checkpoint, then vllmd's latency, vision and
# throughput benchmarks, then the same workloads through transformers.

# bench_family ARCH FAMILY: ARCH as bench/make_checkpoint.py names it.
bench_family() {
	local arch=$1 fam=$2 m="$CKPT_DIR/$1" hf_modes=throughput,decode-step,vision
	mkdir -p "$CKPT_DIR"
	run "ckpt_$fam" 300 python3 bench/make_checkpoint.py --arch "$arch" --out "$m" ||
		{ say "checkpoint $arch failed"; tail -20 "$OUT/ckpt_$fam.log"; return 1; }
	du -sh "$m" | tee -a "$SUMMARY"
	run "latency_${fam}_b1" 300 "$BIN/latency" --model "$m" --batch-size 1 --input-len 32 \
		--output-len 128 --image-size 336 --num-iters 3 --num-iters-warmup 1 --max-model-len 4096 \
		--output-json "$OUT/latency_${fam}_b1.json"
	grep -h "Avg latency\|Prefill\|Decode step" "$OUT/latency_${fam}_b1.log" | tee -a "$SUMMARY"
	run "latency_${fam}_b1_eager" 300 "$BIN/latency" --model "$m" --batch-size 1 --input-len 32 \
		--output-len 128 --image-size 336 --num-iters 3 --num-iters-warmup 1 --max-model-len 4096 \
		--enforce-eager --output-json "$OUT/latency_${fam}_b1_eager.json"
	grep -h "Decode step" "$OUT/latency_${fam}_b1_eager.log" | sed 's/^/eager (no step graphs): /' |
		tee -a "$SUMMARY"
	run "vision_${fam}" 300 "$BIN/vision" --model "$m" --batch-size 64 --image-size 336 \
		--num-iters 10 --num-iters-warmup 3 --output-json "$OUT/vision_${fam}.json"
	grep -h "Throughput" "$OUT/vision_${fam}.log" | tee -a "$SUMMARY"
	# the threaded pixel gather of the plugins (VD_STAGE_THREADS), measured
	VD_STAGE_THREADS=8 run "vision_${fam}_stage8" 300 "$BIN/vision" --model "$m" --batch-size 64 \
		--image-size 336 --num-iters 10 --num-iters-warmup 3 --output-json "$OUT/vision_${fam}_stage8.json"
	grep -h "Throughput" "$OUT/vision_${fam}_stage8.log" | sed 's/^/VD_STAGE_THREADS=8: /' |
		tee -a "$SUMMARY"
	VD_PROFILE=1 run "throughput_${fam}" 600 "$BIN/throughput" --model "$m" --num-prompts "$NUM_PROMPTS" \
		--input-len 32 --output-len 128 --image-size 336 --max-num-seqs "${MAX_NUM_SEQS:-256}" \
		--max-num-batched-tokens "${MAX_BATCHED:-8192}" --max-model-len 4096 --output-json "$OUT/throughput_${fam}.json"
	grep -h "Throughput\|Elapsed\|Mean prompt\|vllmd profile" "$OUT/throughput_${fam}.log" | tee -a "$SUMMARY"
	if [ "$fam" = phi35 ]; then
		hf_modes=throughput # reported as skipped: no native class in transformers
	fi
	[ "${SKIP_HF:-0}" = 1 ] && return 0
	PYTHONUNBUFFERED=1 run "hf_${fam}" 600 python3 bench/hf_throughput.py --model "$m" \
		--mode "$hf_modes" --num-prompts "$HF_PROMPTS" --input-len 32 --output-len 128 \
		--image-size 336 --batch-size "${HF_BATCHES:-32,64,128}" \
		--output-json "$OUT/hf_${fam}.json"
	grep -h "Throughput\|decode\|images/s\|skip" "$OUT/hf_${fam}.log" | tee -a "$SUMMARY"
}

# bench_fp8 ARCH FAMILY: the batch-1 latency and the throughput workload of
# bench_family again with an FP8 E4M3 KV cache (--kv-cache-dtype fp8).
bench_fp8() {
	local arch=$1 fam=$2 m="$CKPT_DIR/$1"
	[ -d "$m" ] || run "ckpt_$fam" 300 python3 bench/make_checkpoint.py --arch "$arch" --out "$m"
	run "latency_${fam}_b1_fp8" 300 "$BIN/latency" --model "$m" --batch-size 1 --input-len 32 \
		--output-len 128 --image-size 336 --num-iters 3 --num-iters-warmup 1 --max-model-len 4096 \
		--kv-cache-dtype fp8 --output-json "$OUT/latency_${fam}_b1_fp8.json"
	grep -h "Decode step" "$OUT/latency_${fam}_b1_fp8.log" | sed 's/^/fp8 kv: /' | tee -a "$SUMMARY"
	VD_PROFILE=1 run "throughput_${fam}_fp8" 600 "$BIN/throughput" --model "$m" \
		--num-prompts "$NUM_PROMPTS" --input-len 32 --output-len 128 --image-size 336 \
		--max-num-seqs "${MAX_NUM_SEQS:-256}" --max-num-batched-tokens "${MAX_BATCHED:-8192}" \
		--max-model-len 4096 --kv-cache-dtype fp8 --output-json "$OUT/throughput_${fam}_fp8.json"
	grep -h "Throughput\|Elapsed\|vllmd profile\|KV cache" "$OUT/throughput_${fam}_fp8.log" |
		sed 's/^/fp8 kv: /' | tee -a "$SUMMARY"
}

# bench_coldstart ARCH FAMILY: seconds from `vllmd serve` to 200 on /health,
# three runs from the tmpfs checkpoint (warm page cache), then, when the page
# cache can be dropped, two from a copy on disk with the cache dropped.
bench_coldstart() {
	local arch=$1 fam=$2 m="$CKPT_DIR/$1" disk=/var/tmp/vllmd-ckpt-cold
	[ -d "$m" ] || run "ckpt_$fam" 300 python3 bench/make_checkpoint.py --arch "$arch" --out "$m"
	PYTHONUNBUFFERED=1 run "coldstart_${fam}_warm" 300 python3 bench/cold_start.py \
		--vllmd "$BIN/vllmd" --model "$m" --runs 3 --output-json "$OUT/coldstart_${fam}_warm.json" \
		-- --max-model-len 4096 --max-num-seqs 256
	grep -h "^run\|Cold start\|^    " "$OUT/coldstart_${fam}_warm.log" | tee -a "$SUMMARY"
	if [ -w /proc/sys/vm/drop_caches ] && [ "${COLD_DISK:-1}" = 1 ]; then
		rm -rf "$disk" && cp -r "$m" "$disk" && sync
		PYTHONUNBUFFERED=1 run "coldstart_${fam}_cold" 300 python3 bench/cold_start.py \
			--vllmd "$BIN/vllmd" --model "$disk" --runs 2 --drop-caches \
			--output-json "$OUT/coldstart_${fam}_cold.json" -- --max-model-len 4096 --max-num-seqs 256
		grep -h "^run\|Cold start" "$OUT/coldstart_${fam}_cold.log" | sed 's/^/disk: /' |
			tee -a "$SUMMARY"
		rm -rf "$disk"
	fi
}

# bench_serving ARCH FAMILY: vllmd serve on the checkpoint, then bench/serving
# at a Poisson rate (SERVE_RATE, default 8 requests/s) with SERVE_IMAGE
# (S or WxH, default 336) images in SERVE_FORMAT (png or jpeg, default png).
# SERVE_MNBT: the server's max_num_batched_tokens (8192); SERVE_TAG names
# the logs of a variant. The server runs with VD_PROFILE=1: its engine
# profile is in the summary.
bench_serving() {
	local arch=$1 fam=$2 m="$CKPT_DIR/$1" pid port=8321 up=0 tag="${SERVE_TAG:-}"
	[ -d "$m" ] || run "ckpt_$fam" 300 python3 bench/make_checkpoint.py --arch "$arch" --out "$m"
	local tmpl=()
	[ -f "$m/chat_template.jinja" ] && tmpl=(--chat-template "$m/chat_template.jinja")
	VD_PROFILE=1 "$BIN/vllmd" serve "$m" --port "$port" --max-num-seqs 256 \
		--max-num-batched-tokens "${SERVE_MNBT:-8192}" --max-model-len 4096 \
		--served-model-name "$fam" "${tmpl[@]}" >"$OUT/serve_${fam}${tag}.log" 2>&1 &
	pid=$!
	for _ in $(seq 240); do
		python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=2)" \
			>/dev/null 2>&1 && { up=1; break; }
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if [ $up = 1 ]; then
		say "serving $fam: max_num_batched_tokens ${SERVE_MNBT:-8192}, ${SERVE_RATE:-8} requests/s, ${SERVE_IMAGE:-336} ${SERVE_FORMAT:-png}"
		run "serving_${fam}${tag}" 400 "$BIN/serving" --port "$port" --model "$fam" \
			--num-prompts "${SERVE_PROMPTS:-300}" --request-rate "${SERVE_RATE:-8}" \
			--input-len 32 --output-len 128 --image-size "${SERVE_IMAGE:-336}" \
			--image-format "${SERVE_FORMAT:-png}" --result-file "$OUT/serving_${fam}${tag}.json"
		sed -n '/Serving Benchmark Result/,/^=*$/p' "$OUT/serving_${fam}${tag}.log" | tee -a "$SUMMARY"
	else
		say "vllmd serve did not come up"; tail -20 "$OUT/serve_${fam}${tag}.log" | tee -a "$SUMMARY"
	fi
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	grep -h "vllmd profile" "$OUT/serve_${fam}${tag}.log" | tee -a "$SUMMARY"
}

# bench_profile ARCH FAMILY: where the GPU time of the vision tower and of a
# batch-1 generation goes, op by op (VD_CUDA_PROFILE=1 synchronises every op,
# so the totals are slower than the benchmarks; the shares are what counts).
bench_profile() {
	local arch=$1 fam=$2 m="$CKPT_DIR/$1"
	[ -d "$m" ] || run "ckpt_$fam" 300 python3 bench/make_checkpoint.py --arch "$arch" --out "$m"
	VD_CUDA_PROFILE=1 run "profile_vision_${fam}" 300 "$BIN/vision" --model "$m" \
		--batch-size 64 --num-iters 3 --num-iters-warmup 1
	grep -h "cuda profile" "$OUT/profile_vision_${fam}.log" | tee -a "$SUMMARY"
	VD_CUDA_PROFILE=1 run "profile_latency_${fam}" 300 "$BIN/latency" --model "$m" \
		--batch-size 1 --output-len 64 --num-iters 1 --num-iters-warmup 1 --max-model-len 4096
	grep -h "cuda profile" "$OUT/profile_latency_${fam}.log" | tee -a "$SUMMARY"
	# decode-shape ops alone: the GEMV kernel against cuBLAS (VD_CUDA_GEMV=0)
	run "ops_bench" 120 "$BIN/ops_cuda_bench" 50
	VD_CUDA_GEMV=0 run "ops_bench_cublas" 120 "$BIN/ops_cuda_bench" 50
	grep -h "M=1 \|M=8 \|attention" "$OUT/ops_bench.log" | sed 's/^/gemv   /' | tee -a "$SUMMARY"
	grep -h "sample_full\|patch_conv\|im2patch\|^gemm" "$OUT/ops_bench.log" | tee -a "$SUMMARY"
	grep -h "M=1 \|M=8 " "$OUT/ops_bench_cublas.log" | sed 's/^/cublas /' | tee -a "$SUMMARY"
}
