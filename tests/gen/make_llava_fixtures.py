#!/usr/bin/env python3
"""Make the LLaVA golden fixtures: tiny random-weight checkpoints in the hub
layout plus reference outputs from Hugging Face transformers.

Run on a machine with transformers 5.17 + torch (the GPU machine; CPU float32
is used for the reference so results are deterministic):

    python3 tests/gen/make_llava_fixtures.py --tokenizer tests/data/tok/llama2/tokenizer.json \
        --out tests/data/models

For each config it writes <out>/<name>/ with config.json, model.safetensors
(bf16), tokenizer.json (+ <image>, <pad>), tokenizer_config.json,
preprocessor_config.json, generation_config.json, and reference.json:
the prompts, image files, expanded prompt ids and, for 12 greedy steps, the
chosen token and the top-5 logprobs computed in float32 from the
bf16-rounded weights. stages.safetensors holds the first case's vision
features and projector output for stage-by-stage debugging.
"""
import argparse
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import LlavaConfig, LlavaForConditionalGeneration

try:
    from transformers import CLIPImageProcessorPil as ClipPil
except ImportError:  # older layouts
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as ClipPil

STEPS = 12
TOPK = 5

CONFIGS = {
    # hub layout (language_model.model.*), feature layer -2, default strategy
    "llava-tiny-a": dict(
        layout="hub",
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                    num_attention_heads=4, image_size=56, patch_size=14, projection_dim=16),
        text=dict(vocab_size=32064, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5),
        top=dict(vision_feature_layer=-2, vision_feature_select_strategy="default"),
        seed=0),
    # transformers >= 4.52 layout (model.language_model.*), GQA, last layer,
    # "full" strategy (CLS kept), another image size and rope theta
    "llava-tiny-b": dict(
        layout="v5",
        vision=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, image_size=42, patch_size=14, projection_dim=16,
                    layer_norm_eps=1e-6),
        text=dict(vocab_size=32064, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, rope_theta=500000.0),
        top=dict(vision_feature_layer=-1, vision_feature_select_strategy="full"),
        seed=1),
}

# (prompt, image names); images are made below at distinct sizes and ratios.
CASES = [
    ("USER: <image>\nWhat is shown in this image?\nASSISTANT:", ["wide"]),
    ("USER: <image>\nDescribe the colors.\nASSISTANT:", ["tall"]),
    ("USER: <image>\n<image>\nCompare the two pictures.\nASSISTANT:", ["small", "square"]),
    ("USER: <image>\nIs it day or night?\nASSISTANT:", ["big"]),
    ("USER: Write a haiku about the sea.\nASSISTANT:", []),
]


def make_images(d):
    """Deterministic test images: gradients plus noise, several sizes."""
    rng = np.random.default_rng(1234)
    sizes = {"wide": (120, 64), "tall": (50, 130), "small": (30, 24), "square": (77, 77),
             "big": (400, 300)}
    os.makedirs(d, exist_ok=True)
    paths = {}
    for name, (w, h) in sizes.items():
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255.0 / max(w - 1, 1), y * 255.0 / max(h - 1, 1),
                         (x + y) * 127.0 / max(w + h - 2, 1)], -1)
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        p = os.path.join(d, name + ".png")
        Image.fromarray(img, "RGB").save(p)
        paths[name] = p
    return paths


def to_hub(k):
    """transformers 5.17 in-memory name -> llava-hf published name."""
    for a, b in [("model.language_model.", "language_model.model."),
                 ("lm_head.", "language_model.lm_head."),
                 ("model.vision_tower.", "vision_tower.vision_model."),
                 ("model.multi_modal_projector.", "multi_modal_projector.")]:
        if k.startswith(a):
            return b + k[len(a):]
    return k


def write_tokenizer(src, dst_dir):
    tj = json.load(open(src))
    tj["added_tokens"] = [t for t in tj["added_tokens"] if t["id"] < 32000]
    for tid, content in [(32000, "<image>"), (32001, "<pad>")]:
        tj["added_tokens"].append({"id": tid, "content": content, "single_word": False,
                                   "lstrip": False, "rstrip": False, "normalized": False,
                                   "special": True})
    path = os.path.join(dst_dir, "tokenizer.json")
    json.dump(tj, open(path, "w"), ensure_ascii=False)
    json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
               "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
               "legacy": False, "model_max_length": 4096,
               "tokenizer_class": "LlamaTokenizer",
               "added_tokens_decoder": {str(t["id"]): t for t in tj["added_tokens"]}},
              open(os.path.join(dst_dir, "tokenizer_config.json"), "w"), indent=1)
    return Tokenizer.from_file(path)


def build(name, spec, tok_src, out_dir, images):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(spec["seed"])
    vc = dict(model_type="clip_vision_model", **spec["vision"])
    tc = dict(model_type="llama", **spec["text"])
    hubcfg = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
              "image_token_index": 32000, "pad_token_id": 32001, "projector_hidden_act": "gelu",
              "text_config": tc, "vision_config": vc, "tie_word_embeddings": False,
              "vocab_size": 32064, **spec["top"]}
    cfg = LlavaConfig(**{k: v for k, v in hubcfg.items() if k not in ("architectures", "model_type")})
    model = LlavaForConditionalGeneration(cfg).eval()
    # Random init of some params is zero/one (norms, biases): perturb them so
    # every weight matters, then round to bf16 (the stored dtype).
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or "layrnorm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif pname.endswith("bias") or "class_embedding" in pname:
                p.copy_(0.05 * torch.randn_like(p))
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    sd = model.state_dict()
    if spec["layout"] == "hub":
        tensors = {to_hub(k): v.to(torch.bfloat16).contiguous() for k, v in sd.items()}
    else:
        tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    json.dump(hubcfg, open(os.path.join(d, "config.json"), "w"), indent=1)
    S = spec["vision"]["image_size"]
    pp = {"crop_size": {"height": S, "width": S}, "do_center_crop": True, "do_normalize": True,
          "do_rescale": True, "do_resize": True, "do_convert_rgb": True,
          "image_mean": [0.48145466, 0.4578275, 0.40821073],
          "image_std": [0.26862954, 0.26130258, 0.27577711],
          "image_processor_type": "CLIPImageProcessor", "processor_class": "LlavaProcessor",
          "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": S}}
    json.dump(pp, open(os.path.join(d, "preprocessor_config.json"), "w"), indent=1)
    json.dump({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32001},
              open(os.path.join(d, "generation_config.json"), "w"), indent=1)
    tok = write_tokenizer(tok_src, d)
    ip = ClipPil(size={"shortest_edge": S}, crop_size={"height": S, "width": S},
                 resample=3, do_center_crop=True)

    P = (S // spec["vision"]["patch_size"]) ** 2
    n_img_tokens = P + (1 if spec["top"]["vision_feature_select_strategy"] == "full" else 0)
    ref = {"model": name, "image_tokens": n_img_tokens, "steps": STEPS, "topk": TOPK,
           "image_processor": type(ip).__name__, "cases": []}
    stages = {}
    for ci, (prompt, imgs) in enumerate(CASES):
        ids = tok.encode(prompt).ids
        expanded = []
        for t in ids:
            expanded += [32000] * n_img_tokens if t == 32000 else [t]
        pv = None
        if imgs:
            pil = [Image.open(images[i]).convert("RGB") for i in imgs]
            pv = ip(images=pil, return_tensors="pt")["pixel_values"].to(torch.float32)
        seq = list(expanded)
        steps = []
        with torch.no_grad():
            for _ in range(STEPS):
                inp = torch.tensor([seq])
                out = model(input_ids=inp, pixel_values=pv)
                lp = torch.log_softmax(out.logits[0, -1].double(), -1)
                top = torch.topk(lp, TOPK)
                nxt = int(torch.argmax(out.logits[0, -1]))
                steps.append({"token": nxt,
                              "top": [[int(i), float(v)] for v, i in zip(top.values, top.indices)]})
                seq.append(nxt)
            if ci == 0 and pv is not None:
                vt = model.model.vision_tower(pv, output_hidden_states=True)
                fl = spec["top"]["vision_feature_layer"]
                feats = vt.hidden_states[fl]
                if spec["top"]["vision_feature_select_strategy"] == "default":
                    feats = feats[:, 1:]
                stages["vision_features"] = feats.contiguous()
                stages["projector_out"] = model.model.multi_modal_projector(feats).contiguous()
                stages["pixel_values"] = pv.contiguous()
        ref["cases"].append({"prompt": prompt,
                             "images": ["../images/" + i + ".png" for i in imgs],
                             "prompt_ids": ids, "expanded_ids": expanded, "steps": steps})
        print(name, ci, "greedy:", [s["token"] for s in steps], flush=True)
    save_file(stages, os.path.join(d, "stages.safetensors"))
    json.dump(ref, open(os.path.join(d, "reference.json"), "w"), indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True, help="Llama-2 tokenizer.json")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    images = make_images(os.path.join(a.out, "images"))
    for name, spec in CONFIGS.items():
        build(name, spec, a.tokenizer, a.out, images)


if __name__ == "__main__":
    main()
