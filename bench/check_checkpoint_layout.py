#!/usr/bin/env python3
"""Torch-free checks of bench/make_checkpoint.py (runs with /usr/bin/python3).

1. Names and shapes: make_checkpoint's tensor list, built with the dimensions
   of each tiny fixture under tests/data/models (their model.safetensors were
   written by transformers 5.17 in the hub layout), must equal the fixture's
   tensor names and shapes exactly.
2. Sizes: the full-size plans must have the published parameter counts
   (LLaVA-1.5-7B and Qwen2-VL-2B: the hub index's total_size; Phi-3.5-vision
   4.15 B and Qwen2-VL-7B 8.29 B as the model cards state).
3. With --vllmd BUILD_DIR: write a --scale-down variant of every arch to a
   temporary directory and run a prompt with an image (and a text-only one)
   through `vllmd generate --device cpu` for a few tokens.

    /usr/bin/python3 bench/check_checkpoint_layout.py [--vllmd build] [--scale-down 16]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import make_checkpoint as mc  # noqa: E402

MODELS = os.path.join(REPO, "tests", "data", "models")
IMAGES = os.path.join(MODELS, "images")


def header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        h = json.loads(f.read(n))
    return {k: v["shape"] for k, v in h.items() if k != "__metadata__"}


def fixture_dims(name):
    cfg = json.load(open(os.path.join(MODELS, name, "config.json")))
    if cfg["model_type"] == "llava":
        t, v = cfg["text_config"], cfg["vision_config"]
        return "llava-1.5-7b", {
            "hidden": t["hidden_size"], "inter": t["intermediate_size"], "layers": t["num_hidden_layers"],
            "heads": t["num_attention_heads"], "kv": t.get("num_key_value_heads", t["num_attention_heads"]),
            "head_dim": t["hidden_size"] // t["num_attention_heads"], "vocab": cfg["vocab_size"],
            "v_hidden": v["hidden_size"], "v_inter": v["intermediate_size"], "v_layers": v["num_hidden_layers"],
            "v_heads": v["num_attention_heads"], "image": v["image_size"], "patch": v["patch_size"],
            "tied": False}
    if cfg["model_type"] == "phi3_v":
        v = cfg["img_processor"]["vision_config"]
        return "phi-3.5-vision", {
            "hidden": cfg["hidden_size"], "inter": cfg["intermediate_size"], "layers": cfg["num_hidden_layers"],
            "heads": cfg["num_attention_heads"], "kv": cfg["num_key_value_heads"],
            "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"], "vocab": cfg["vocab_size"],
            "v_hidden": v["hidden_size"], "v_inter": v["intermediate_size"], "v_layers": v["num_hidden_layers"],
            "v_heads": v["num_attention_heads"], "image": v["image_size"], "patch": v["patch_size"],
            "tied": False}
    v = cfg["vision_config"]
    return "qwen2-vl-2b", {
        "hidden": cfg["hidden_size"], "inter": cfg["intermediate_size"], "layers": cfg["num_hidden_layers"],
        "heads": cfg["num_attention_heads"], "kv": cfg["num_key_value_heads"],
        "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"], "vocab": cfg["vocab_size"],
        "v_hidden": v["embed_dim"], "v_inter": v["embed_dim"] * v["mlp_ratio"], "v_layers": v["depth"],
        "v_heads": v["num_heads"], "patch": v["patch_size"], "tied": cfg["tie_word_embeddings"]}


def check_fixture(name):
    arch, dims = fixture_dims(name)
    want = header(os.path.join(MODELS, name, "model.safetensors"))
    got = {n: list(s) for n, s, _ in mc.tensor_list(arch, dims)}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    shape = sorted(n for n in set(want) & set(got) if want[n] != got[n])
    ok = not (missing or extra or shape)
    print("%s %s vs %s: %d tensors%s" % ("ok  " if ok else "FAIL", arch, name, len(want),
                                          "" if ok else " missing %s extra %s shape %s" % (missing, extra, shape)))
    return ok


PUBLISHED = {  # parameters
    "llava-1.5-7b": (7063427072, "llava-hf index total_size 14126854144 / 2"),
    "qwen2-vl-2b": (2208985600, "Qwen index total_size 4417971200 / 2"),
    "phi-3.5-vision": (4.15e9, "model card: 4.15B (rounded)"),
    "qwen2-vl-7b": (8.29e9, "model card: 8.29B (rounded)"),
}


def check_sizes():
    ok = True
    for arch, (want, src) in PUBLISHED.items():
        _, dims = mc.make_config(arch, 1)
        n = sum(mc.numel(s) for _, s, _ in mc.tensor_list(arch, dims))
        good = n == want if isinstance(want, int) else abs(n - want) < 0.006e9
        ok &= good
        print("%s %s: %d parameters (%s)" % ("ok  " if good else "FAIL", arch, n, src))
    return ok


PROMPTS = {
    "llava-1.5-7b": ("USER: <image>\nWhat is shown in this image?\nASSISTANT:", "USER: Write a haiku.\nASSISTANT:"),
    "phi-3.5-vision": ("<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n",
                       "<|user|>\nWrite a haiku.<|end|>\n<|assistant|>\n"),
    "qwen2-vl-2b": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n<|im_start|>assistant\n",
                    "<|im_start|>user\nWrite a haiku.<|im_end|>\n<|im_start|>assistant\n"),
}
PROMPTS["qwen2-vl-7b"] = PROMPTS["qwen2-vl-2b"]


def check_vllmd(build, f, tokens=6):
    vllmd = os.path.join(build, "vllmd")
    plugins = os.path.join(build, "build-plugins")
    if not os.path.exists(vllmd):
        print("FAIL no %s" % vllmd)
        return False
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for arch in mc.ARCHS:
            out = os.path.join(tmp, arch)
            r = subprocess.run([sys.executable, os.path.join(HERE, "make_checkpoint.py"), "--arch", arch,
                                "--out", out, "--scale-down", str(f)], capture_output=True, text=True)
            if r.returncode:
                print("FAIL make_checkpoint %s: %s" % (arch, r.stderr.strip()))
                ok = False
                continue
            img, txt = PROMPTS[arch]
            sp = {"temperature": 0, "max_tokens": tokens, "ignore_eos": True}
            inp = os.path.join(tmp, arch + ".in.jsonl")
            with open(inp, "w") as fh:
                fh.write(json.dumps({"prompt": img, "multi_modal_data": {"image": os.path.join(IMAGES, "img_400x300.png")},
                                     "sampling_params": sp}) + "\n")
                fh.write(json.dumps({"prompt": txt, "sampling_params": sp}) + "\n")
            outp = os.path.join(tmp, arch + ".out.jsonl")
            r = subprocess.run([vllmd, "generate", "--model", out, "--plugin-dir", plugins, "--device", "cpu",
                                "--max-model-len", "4096", "--input", inp, "--output", outp],
                               capture_output=True, text=True)
            lines = [json.loads(x) for x in open(outp)] if os.path.exists(outp) else []
            good = r.returncode == 0 and len(lines) == 2 and all(
                len(x["outputs"][0]["token_ids"]) == tokens for x in lines)
            ok &= good
            desc = ", ".join("%d prompt tokens -> %s" % (len(x["prompt_token_ids"]), x["outputs"][0]["token_ids"])
                             for x in lines)
            print("%s vllmd --device cpu %s /%d: %s%s" % ("ok  " if good else "FAIL", arch, f, desc,
                                                           "" if good else "\n" + r.stderr[-2000:]))
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vllmd", metavar="BUILD_DIR", help="also run scaled-down checkpoints through vllmd")
    ap.add_argument("--scale-down", type=int, default=16)
    a = ap.parse_args()
    ok = True
    for name in ("llava-tiny-a", "phi3v-tiny-a", "qwen2vl-tiny-a", "qwen2vl-tiny-b"):
        ok &= check_fixture(name)
    ok &= check_sizes()
    if a.vllmd:
        ok &= check_vllmd(a.vllmd, a.scale_down)
    print("ALL OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
