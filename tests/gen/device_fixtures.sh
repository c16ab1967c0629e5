#!/usr/bin/env bash
# Run on the GPU machine (transformers 5.17): make the golden fixtures and
# pack them into $OUT. Usage: bash tests/gen/device_fixtures.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
work=$(mktemp -d)
python3 -c 'import transformers, torch, tokenizers; print("transformers", transformers.__version__, "torch", torch.__version__, "tokenizers", tokenizers.__version__)'
python3 tests/gen/make_llava_fixtures.py --tokenizer tests/data/tok/llama2/tokenizer.json --out "$work/models"
python3 - "$work/models" <<'PY'
import sys, json
from tokenizers import Tokenizer
t = Tokenizer.from_file(sys.argv[1] + "/llava-tiny-a/tokenizer.json")
print("llava prompt ids:", t.encode("USER: <image>\nWhat is this?\nASSISTANT:").ids)
PY
tar -C "$work" -czf "$OUT/llava_fixtures.tgz" models
ls -la "$OUT"
