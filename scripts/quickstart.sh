#!/usr/bin/env bash
# Set up, build, and run vllmd on the bundled tiny demo checkpoint
# (tests/data/models/llava-tiny-a: random weights, real Llama-2 tokenizer,
# so the text is gibberish but every stage runs: image -> CLIP -> projector
# -> Llama decoder -> sampler -> detokenizer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
printf '%s\n' \
 '{"prompt": "USER: <image>\nWhat is the content of this image?\nASSISTANT:", "multi_modal_data": {"image": "tests/data/models/images/wide.png"}, "sampling_params": {"temperature": 0, "max_tokens": 16}}' \
 '{"prompt": "USER: <image>\n<image>\nCompare the two pictures.\nASSISTANT:", "multi_modal_data": {"image": ["tests/data/models/images/small.png", "tests/data/models/images/big.png"]}, "sampling_params": {"temperature": 0.8, "top_p": 0.9, "seed": 7, "max_tokens": 16, "logprobs": 2}}' \
 | build/vllmd generate --config conf/demo.yaml --plugin-dir build/build-plugins
