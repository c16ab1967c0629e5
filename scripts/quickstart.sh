#!/usr/bin/env bash
# Set up, build, and run the vllmd daemon on the bundled tiny demo checkpoint
# (tests/data/models/llava-tiny-a: random weights, real Llama-2 tokenizer, so
# the text is gibberish but every stage runs: image -> CLIP -> projector ->
# Llama decoder -> sampler -> detokenizer). First one offline batch through
# `vllmd generate`, then the OpenAI server in the foreground on
# 127.0.0.1:8000 (conf/demo.yaml); Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== offline: vllmd generate"
printf '%s\n' \
 '{"prompt": "USER: <image>\nWhat is the content of this image?\nASSISTANT:", "multi_modal_data": {"image": "tests/data/models/images/wide.png"}, "sampling_params": {"temperature": 0, "max_tokens": 16}}' \
 '{"prompt": "USER: <image>\n<image>\nCompare the two pictures.\nASSISTANT:", "multi_modal_data": {"image": ["tests/data/models/images/small.png", "tests/data/models/images/big.png"]}, "sampling_params": {"temperature": 0.8, "top_p": 0.9, "seed": 7, "max_tokens": 16, "logprobs": 2}}' \
 | build/vllmd generate --config conf/demo.yaml --plugin-dir build/build-plugins
cat <<'MSG'
== online: vllmd --config conf/demo.yaml (OpenAI API on http://127.0.0.1:8000)
Try, from another shell:
  curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{
    "model": "llava-tiny", "max_tokens": 16, "messages": [{"role": "user", "content": [
      {"type": "image_url", "image_url": {"url": "data:image/png;base64,'"$(base64 -w0 tests/data/models/images/wide.png)"'"}},
      {"type": "text", "text": "What is in this image?"}]}]}'
MSG
exec build/vllmd --config conf/demo.yaml --plugin-dir build/build-plugins
