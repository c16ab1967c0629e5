#!/usr/bin/env python3
"""Reference tokenizations from the Rust `tokenizers` library (Python wheel).

Same output format as scripts/tok-expected.js, which is the default route
(it needs only node); use this one where `pip install tokenizers` works, to
check the committed expectations against the Rust implementation:

    python3 scripts/tok-expected.py [--out DIR] [--transformers] [name...]

For every line of tests/data/tok/corpus.jsonl and each tokenizer in
tests/data/tok/{llama2,llava,llava_tf5,qwen2}/ it writes DIR/expected_<name>.jsonl
(DIR defaults to tests/data/tok) with, per line,
{"ids": encode(text, add_special_tokens=True).ids,
 "text": decode(ids, skip_special_tokens=False),
 "text_skip": decode(ids, skip_special_tokens=True)},
plus "text_hex"/"text_skip_hex" (UTF-8 in hex) when a text holds U+0000.
With --transformers the folder is loaded by transformers' AutoTokenizer
instead, which is what vLLM tokenizes with; transformers 5 rebuilds Llama
tokenizers (that is what the llava_tf5 folder holds), so its output for
llava equals expected_llava_tf5.jsonl, not expected_llava.jsonl.
"""
import argparse
import json
import os



def main():
    here = os.path.dirname(os.path.abspath(__file__))
    tok_dir = os.path.join(here, "..", "tests", "data", "tok")
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=tok_dir)
    ap.add_argument("--transformers", action="store_true")
    ap.add_argument("names", nargs="*", default=["llama2", "llava", "llava_tf5", "qwen2"])
    args = ap.parse_args()
    if args.transformers:
        from transformers import AutoTokenizer, __version__
    else:
        from tokenizers import Tokenizer, __version__
    with open(os.path.join(tok_dir, "corpus.jsonl"), encoding="utf-8") as f:
        corpus = [json.loads(line)["text"] for line in f if line.strip()]
    for name in args.names:
        if args.transformers:
            tok = AutoTokenizer.from_pretrained(os.path.join(tok_dir, name))
            encode = lambda text: tok(text)["input_ids"]
        else:
            tok = Tokenizer.from_file(os.path.join(tok_dir, name, "tokenizer.json"))
            encode = lambda text: tok.encode(text, add_special_tokens=True).ids
        path = os.path.join(args.out, f"expected_{name}.jsonl")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for text in corpus:
                ids = encode(text)
                rec = {"ids": ids,
                       "text": tok.decode(ids, skip_special_tokens=False),
                       "text_skip": tok.decode(ids, skip_special_tokens=True)}
                for k in ("text", "text_skip"):
                    if "\0" in rec[k]:
                        rec[k + "_hex"] = rec[k].encode("utf-8").hex()
                f.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")
        lib = "transformers" if args.transformers else "tokenizers"
        print(f"tok-expected: {path}: {len(corpus)} lines ({lib} {__version__})")


if __name__ == "__main__":
    main()
