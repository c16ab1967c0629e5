#!/usr/bin/env bash
# The plugin SDK, proven outside the tree: `make install` into a temporary
# DESTDIR; build examples/plugin from a copy of it, against that install
# only (pkg-config reads the installed vllmd.pc; nothing may name the
# source or build tree); load it with --plugin-dir into the installed
# vllmd; its tokens equal the in-tree build of the same plugin and, on the
# same weights, the in-tree llava.so's text path. Also: what `make install`
# put where (library exports, man page, systemd unit, configs).
set -u
B=${VD_BUILDDIR:-.}
S=${VD_SRCDIR:-..}
D=${VD_TEST_DATA:-$S/tests/data}
P=${VD_PLUGIN_DIR:-$B/build-plugins}
B=$(cd "$B" && pwd)
S=$(cd "$S" && pwd)
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok - $1"; pass=$((pass + 1)); }
no() { echo "not ok - $1"; fail=$((fail + 1)); }

# 1. install into a DESTDIR (pkg-config prefixes what it reports with it)
if ! make -C "$B" install DESTDIR="$tmp/root" >"$tmp/install.log" 2>&1; then
	tail -20 "$tmp/install.log"
	no "make install DESTDIR=..."
	echo "$pass passed, $fail failed"
	exit 1
fi
pc=$(find "$tmp/root" -name vllmd.pc | head -1)
bin=$(find "$tmp/root" -path '*/bin/vllmd' | head -1)
[ -n "$pc" ] && [ -x "$bin" ] && ok "make install: vllmd and vllmd.pc" || no "install lacks vllmd or vllmd.pc"
export PKG_CONFIG_SYSROOT_DIR="$tmp/root" PKG_CONFIG_LIBDIR=$(dirname "$pc") PKG_CONFIG_PATH=
inc=$(pkg-config --variable=includedir vllmd)
plugins=$(pkg-config --variable=pluginsdir vllmd)
conf=$(pkg-config --variable=confdir vllmd)
lib=$(pkg-config --variable=libdir vllmd)
missing=
for f in "$inc"/vllmd/plugin.h "$inc"/vllmd/plugin_util.h "$inc"/vllmd/llm.h "$plugins"/llava.so \
	"$plugins"/phi3v.so "$plugins"/qwen2vl.so "$conf"/llava15.yaml "$conf"/phi35.yaml \
	"$conf"/template_llava.jinja "$lib"/libvllmd.so.1; do
	[ -e "$f" ] || missing="$missing $f"
done
man=$(find "$tmp/root" -name vllmd.1 | head -1)
unit=$(find "$tmp/root" -name 'vllmd@.service' | head -1)
[ -z "$missing" ] && [ -n "$man" ] && [ -n "$unit" ] &&
	ok "headers, libvllmd.so.1, plugins, configs, chat templates, man page, systemd unit" ||
	no "install lacks:$missing ${man:-vllmd.1} ${unit:-vllmd@.service}"
grep -q -- "--input-workers" "$man" && grep -q "ExecStart=.*/bin/vllmd --config %i.yaml" "$unit" &&
	ok "the man page is the --help text; the unit runs the installed vllmd" ||
	no "man page or unit content"
exports=$(nm -D --defined-only "$lib/libvllmd.so.1" | awk '$2 == "T" {print $3}' | sed 's/@.*//' | sort)
if [ -n "$exports" ] && ! echo "$exports" | grep -qv '^vd_'; then
	echo "$exports" | grep -qx vd_llm_generate && ! echo "$exports" | grep -qx vd_engine_step &&
		ok "libvllmd exports the offline API only ($(echo "$exports" | wc -l) symbols)" ||
		no "libvllmd exports: $(echo $exports)"
else
	no "libvllmd exports more than vd_*: $(echo "$exports" | grep -v '^vd_' | head -5 | tr '\n' ' ')"
fi

# 2. the example family from a copy of examples/plugin, against the install only
cp -r "$S/examples/plugin" "$tmp/src"
# a make of its own: nothing of the running make check (MAKEFLAGS, levels)
if env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -C "$tmp/src" \
	>"$tmp/build.log" 2>&1 && [ -f "$tmp/src/textlm.so" ]; then
	ok "examples/plugin builds against the installed SDK (pkg-config vllmd)"
else
	cat "$tmp/build.log"
	no "examples/plugin build"
fi
if grep -q -e "$S" -e "$B" "$tmp/build.log"; then
	no "the out-of-tree build names the source or build tree: $(grep -e "$S" -e "$B" "$tmp/build.log")"
else
	ok "no path into the source or build tree in the build"
fi
readelf -d "$tmp/src/textlm.so" 2>/dev/null | grep -q 'NEEDED.*libvllmd' &&
	no "textlm.so depends on libvllmd" || ok "textlm.so links nothing of vllmd"

# 3. a Llama text checkpoint: tiny LLaVA's language model under LlamaForCausalLM names
/usr/bin/python3 - "$D/models/llava-tiny-a" "$tmp/llama-tiny" <<'PY' || no "making the text checkpoint"
import json, os, shutil, struct, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst)
blob = open(src + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", blob[:8])[0]
head = json.loads(blob[8:8 + n])
data = blob[8 + n:]
out, parts, off = {}, [], 0
for name, t in head.items():
    if name == "__metadata__" or not name.startswith("language_model."):
        continue
    new = name[len("language_model."):]          # model.* and lm_head.weight
    b, e = t["data_offsets"]
    out[new] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [off, off + e - b]}
    parts.append(data[b:e])
    off += e - b
h = json.dumps(out).encode()
h += b" " * (-len(h) % 8)
with open(dst + "/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(parts))
cfg = json.load(open(src + "/config.json"))
text = dict(cfg["text_config"], architectures=["LlamaForCausalLM"], vocab_size=cfg["vocab_size"],
            tie_word_embeddings=False)
json.dump(text, open(dst + "/config.json", "w"))
for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    shutil.copy(src + "/" + f, dst)
PY

# 4. the same tokens: out-of-tree textlm (installed vllmd) = in-tree textlm
#    (build vllmd) = in-tree llava.so on the original checkpoint, text only
cat >"$tmp/in.jsonl" <<'JSON'
{"prompt": "USER: Count the boats in the harbour.\nASSISTANT:", "sampling_params": {"temperature": 0, "max_tokens": 12, "ignore_eos": true, "logprobs": 1}}
{"prompt": "USER: Tell me about lighthouses.\nASSISTANT:", "sampling_params": {"temperature": 0.8, "seed": 7, "max_tokens": 8, "ignore_eos": true}}
JSON
mkdir "$tmp/oot" "$tmp/intree"
cp "$tmp/src/textlm.so" "$tmp/oot/"
cp "$B/examples/plugin/.libs/textlm.so" "$tmp/intree/" 2>/dev/null
run() { # out bin plugin-dir model
	"$2" generate --model "$4" --plugin-dir "$3" --device cpu --input "$tmp/in.jsonl" \
		--output "$1" 2>"$1.err" || { cat "$1.err"; return 1; }
}
run "$tmp/oot.jsonl" "$bin" "$tmp/oot" "$tmp/llama-tiny" && ok "the installed vllmd runs the out-of-tree family" ||
	no "installed vllmd with textlm.so"
run "$tmp/intree.jsonl" "$B/vllmd" "$tmp/intree" "$tmp/llama-tiny" || no "build vllmd with the in-tree textlm.so"
run "$tmp/llava.jsonl" "$B/vllmd" "$P" "$D/models/llava-tiny-a" || no "llava.so text only"
/usr/bin/python3 - "$tmp/oot.jsonl" "$tmp/intree.jsonl" "$tmp/llava.jsonl" <<'PY' &&
import json, sys
runs = [[json.loads(l) for l in open(p)] for p in sys.argv[1:]]
assert [len(r) for r in runs] == [2, 2, 2], [len(r) for r in runs]
for lines in zip(*runs):
    toks = [[o["token_ids"] for o in l["outputs"]] for l in lines]
    assert toks[0] == toks[1] == toks[2], toks
    assert lines[0]["prompt_token_ids"] == lines[2]["prompt_token_ids"]
    assert len(toks[0][0]) > 0
PY
	ok "same tokens: out-of-tree textlm = in-tree textlm = llava.so's text path" ||
	no "tokens differ between the builds"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
