#!/usr/bin/env bash
# GPU-machine smoke test of the random-checkpoint tools (about 2-3 minutes):
# scaled-down LLaVA / Phi-3.5-vision / Qwen2-VL checkpoints must load in
# transformers with no missing/unexpected keys (bench/check_checkpoint_hf.py),
# and every mode of bench/hf_throughput.py must run on them.
#   bench/gpu_ckpt_smoke.sh [scale-down, default 8] [dir, default /dev/shm/ckpt-smoke]
# Needs tests/data/tok/qwen2 (gitignored; carry it to the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
F=${1:-8}
D=${2:-/dev/shm/ckpt-smoke}
PY=${PYTHON:-python3}
J=${OUT:-$D}
mkdir -p "$D" "$J"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda')"
for a in llava-1.5-7b phi-3.5-vision qwen2-vl-2b qwen2-vl-7b; do
	$PY bench/make_checkpoint.py --arch $a --out "$D/$a" --scale-down "$F"
done
$PY bench/check_checkpoint_hf.py "$D/llava-1.5-7b" "$D/qwen2-vl-2b" "$D/qwen2-vl-7b" "$D/phi-3.5-vision"
for a in llava-1.5-7b qwen2-vl-2b; do
	$PY bench/hf_throughput.py --model "$D/$a" --mode throughput,decode-step,vision --num-prompts 32 \
		--input-len 32 --output-len 16 --batch-size 8,16 --decode-output-len 32 --repeats 2 --vision-iters 5 \
		--output-json "$J/hf_$a.json"
	$PY bench/hf_throughput.py --model "$D/$a" --dump-workload "$D/wl-$a" --num-prompts 4 --output-len 8
done
$PY bench/hf_throughput.py --model "$D/phi-3.5-vision" --output-json "$J/hf_phi.json"
echo "gpu_ckpt_smoke: all OK"
