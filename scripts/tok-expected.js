#!/usr/bin/env node
// Reference tokenizations for the parity test (tests/test_tokenizer.c).
// For every line of tests/data/tok/corpus.jsonl and each tokenizer in
// tests/data/tok/{llama2,llava,llava_tf5,qwen2}/, writes one line to
// tests/data/tok/expected_<name>.jsonl:
//   {"ids": encode(text, add_special_tokens=true),
//    "text": decode(ids, skip_special_tokens=false),
//    "text_skip": decode(ids, skip_special_tokens=true)}
// plus "text_hex"/"text_skip_hex" (the UTF-8 in hex) when a text holds U+0000,
// which C JSON readers (cJSON) cannot return inside a string.
// using @huggingface/tokenizers (tokenizers.js) as installed by
// scripts/make-tokenizers.sh into tests/data/tok/.node. The Python route,
// for a machine with the `tokenizers` wheel, is scripts/tok-expected.py.
// usage: node scripts/tok-expected.js [name...]   (default: all four)
"use strict";
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const dir = path.join(root, "tests", "data", "tok");
const pkg = path.join(dir, ".node", "node_modules", "@huggingface", "tokenizers");
if (!fs.existsSync(pkg)) {
	console.error("tok-expected: " + pkg + " is missing; run scripts/make-tokenizers.sh");
	process.exit(1);
}
const { Tokenizer } = require(path.join(pkg, "dist", "tokenizers.cjs"));
const version = JSON.parse(fs.readFileSync(path.join(pkg, "package.json"), "utf8")).version;

const corpus = fs.readFileSync(path.join(dir, "corpus.jsonl"), "utf8")
	.split("\n").filter((l) => l.length).map((l) => JSON.parse(l).text);

const names = process.argv.length > 2 ? process.argv.slice(2) : ["llama2", "llava", "llava_tf5", "qwen2"];
for (const name of names) {
	const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, name, f), "utf8"));
	const tok = new Tokenizer(read("tokenizer.json"), read("tokenizer_config.json"));
	// tokenizers.js throws on an empty id list; the Rust library returns "".
	const decode = (ids, skip) => ids.length ? tok.decode(ids, {
		skip_special_tokens: skip, clean_up_tokenization_spaces: false }) : "";
	const out = [];
	for (const text of corpus) {
		const ids = tok.encode(text).ids;
		const rec = { ids, text: decode(ids, false), text_skip: decode(ids, true) };
		for (const k of ["text", "text_skip"])
			if (rec[k].includes("\0"))
				rec[k + "_hex"] = Buffer.from(rec[k], "utf8").toString("hex");
		out.push(JSON.stringify(rec));
	}
	const file = path.join(dir, "expected_" + name + ".jsonl");
	fs.writeFileSync(file, out.join("\n") + "\n");
	console.log(`tok-expected: ${file}: ${out.length} lines (@huggingface/tokenizers ${version})`);
}
