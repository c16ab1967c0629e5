#!/usr/bin/env python3
"""GPU-machine check that checkpoints from bench/make_checkpoint.py load in
Hugging Face transformers (5.x; 4.4x keywords are tried too) exactly:

  llava, qwen2_vl  from_pretrained(..., output_loading_info=True) must report
                   no missing, unexpected or mismatched keys; the processor
                   must expand the image placeholder to the right count
                   (LLaVA: 576 for 336x336); one forward with an image gives
                   finite logits of vocab_size; generate() makes 4 tokens.
  phi3_v           (no native class in transformers 5.x) the hub names split
                   into a CLIPVisionModel and a Phi3ForCausalLM (longrope)
                   with strict=True, the projection/separator shapes are
                   checked, and CLIP + LM forwards are finite.

    python3 bench/check_checkpoint_hf.py DIR [DIR ...] [--device cuda|cpu]

Exits 1 on the first failed assertion; prints "OK <dir>" per checkpoint.
torch/transformers are imported inside main (so --help works anywhere).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import hf_throughput as hft  # noqa: E402


def fail(msg):
    print("FAIL", msg, flush=True)
    sys.exit(1)


def check_native(d, family, device, dtype_name):
    import torch
    model, problems = hft.load_model(d, family, dtype_name, "sdpa", device, strict=False)
    if problems:
        fail("%s: from_pretrained loading info: %s" % (d, json.dumps(problems)[:3000]))
    proc = hft.load_processor(d, family)
    img_id = hft.image_token_id(model, family)
    dt = hft.torch_dtype(dtype_name)
    n_img = hft.llava_tokens(model, family)
    size = 336 if family == "llava" else 448
    texts = [hft.make_prompt(family, "Describe the picture in detail."),
             hft.make_prompt(family, "What is it?")]
    inp, per_row = hft.process(proc, family, texts, hft.make_images(2, size, 0), device, dt, img_id, n_img)
    if family == "llava" and size == 336 and model.config.vision_config.image_size == 336 and int(per_row[0]) != 576:
        fail("%s: %d image tokens for a 336x336 image, want 576" % (d, int(per_row[0])))
    with torch.inference_mode():
        out = model(**inp)
    logits = out.logits
    vocab = model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config") \
        else model.config.vocab_size
    if logits.shape[-1] != vocab:
        fail("%s: logits width %d, vocab_size %d" % (d, logits.shape[-1], vocab))
    if not torch.isfinite(logits.float()).all():
        fail("%s: non-finite logits" % d)
    gen = hft.generate(model, inp, 4, proc.tokenizer.pad_token_id)
    if gen.shape[1] - inp["input_ids"].shape[1] != 4:
        fail("%s: generate made %d tokens" % (d, gen.shape[1] - inp["input_ids"].shape[1]))
    print("  %s: %s loads clean; prompt %s tokens (%s image tokens), logits %s std %.3f, generated %s"
          % (family, type(model).__name__, list(inp["input_ids"].shape), per_row.tolist(), list(logits.shape),
             float(logits.float().std()), gen[:, -4:].tolist()))
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def phi3_config(cfg):
    """Phi3Config of the LM part (longrope spelled for transformers 5.x; the
    hub's "su" with a top-level original max is rejected by 5.x's Phi3Config)."""
    from transformers import Phi3Config
    rs = cfg["rope_scaling"]
    orig = cfg["original_max_position_embeddings"]
    base = dict(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
                num_attention_heads=cfg["num_attention_heads"], num_key_value_heads=cfg["num_key_value_heads"],
                max_position_embeddings=cfg["max_position_embeddings"], rms_norm_eps=cfg["rms_norm_eps"],
                hidden_act="silu", tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=32000)
    rp = {"rope_type": "longrope", "short_factor": rs["short_factor"], "long_factor": rs["long_factor"],
          "original_max_position_embeddings": orig, "rope_theta": cfg.get("rope_theta", 10000.0)}
    errors = []
    for kw in (dict(rope_parameters=rp), dict(rope_parameters=rp, original_max_position_embeddings=orig),
               dict(rope_scaling={"type": "longrope", "short_factor": rs["short_factor"],
                                  "long_factor": rs["long_factor"]},
                    original_max_position_embeddings=orig, rope_theta=cfg.get("rope_theta", 10000.0))):
        try:
            return Phi3Config(**base, **kw)
        except Exception as e:  # noqa: BLE001 - try the next spelling
            errors.append(repr(e))
    fail("Phi3Config: " + " | ".join(errors))


def load_all(d):
    from safetensors.torch import load_file
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) \
        else ["model.safetensors"]
    sd = {}
    for f in files:
        sd.update(load_file(os.path.join(d, f)))
    return sd


def strict_load(module, sd, what):
    """load_state_dict(strict=True), trying the CLIP names with and without the
    vision_model. level (transformers versions differ)."""
    want = set(module.state_dict().keys())
    want = {k for k in want if "position_ids" not in k}
    cands = [sd]
    if any(k.startswith("vision_model.") for k in sd):
        cands.append({k[len("vision_model."):]: v for k, v in sd.items()})
    for c in cands:
        if set(c) == want:
            res = module.load_state_dict(c, strict=False)
            missing = [k for k in res.missing_keys if "position_ids" not in k]
            if missing or res.unexpected_keys:
                fail("%s: missing %s unexpected %s" % (what, missing, res.unexpected_keys))
            return
    c = cands[-1]
    fail("%s: names do not match: missing %s, unexpected %s"
         % (what, sorted(want - set(c))[:10], sorted(set(c) - want)[:10]))


def check_phi(d, device, dtype_name):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, Phi3ForCausalLM
    cfg = json.load(open(os.path.join(d, "config.json")))
    dt = hft.torch_dtype(dtype_name)
    t = time.time()
    sd = load_all(d)
    ip = cfg["img_processor"]
    vc = dict(ip.get("vision_config") or dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                              num_attention_heads=16, image_size=336, patch_size=14,
                                              layer_norm_eps=1e-5))
    vc.pop("model_type", None)
    vc["hidden_act"] = "quick_gelu"
    C = vc["hidden_size"]
    H = cfg["hidden_size"]
    clip_prefix = "model.vision_embed_tokens.img_processor."
    vt = "model.vision_embed_tokens."
    clip_sd = {k[len(clip_prefix):]: v for k, v in sd.items() if k.startswith(clip_prefix)}
    lm_sd = {k: v for k, v in sd.items() if not k.startswith(vt)}
    if "model.embed_tokens.weight" not in lm_sd and vt + "wte.weight" in sd:
        lm_sd["model.embed_tokens.weight"] = sd[vt + "wte.weight"]
    rest = {k: v for k, v in sd.items() if k.startswith(vt) and not k.startswith(clip_prefix)
            and k != vt + "wte.weight"}
    want_rest = {vt + "glb_GN": [1, 1, 4 * C], vt + "sub_GN": [1, 1, 1, 4 * C],
                 vt + "img_projection.0.weight": [H, 4 * C], vt + "img_projection.0.bias": [H],
                 vt + "img_projection.2.weight": [H, H], vt + "img_projection.2.bias": [H]}
    got_rest = {k: list(v.shape) for k, v in rest.items()}
    if got_rest != want_rest:
        fail("%s: projection/separators %s, want %s" % (d, got_rest, want_rest))
    with torch.device(device):  # built on the GPU: random init of 4B parameters on the CPU is slow
        clip = CLIPVisionModel(CLIPVisionConfig(**vc)).eval()
        strict_load(clip, clip_sd, "CLIPVisionModel")
        lm = Phi3ForCausalLM(phi3_config(cfg)).eval()
        strict_load(lm, lm_sd, "Phi3ForCausalLM")
    clip = clip.to(device, dt)
    lm = lm.to(device, dt)
    S = vc["image_size"]
    with torch.inference_mode():
        px = torch.randn(2, 3, S, S, device=device, dtype=dt)
        hs = clip(pixel_values=px, output_hidden_states=True).hidden_states[-2][:, 1:]
        ids = torch.randint(0, 32000, (1, 64), device=device)
        logits = lm(input_ids=ids).logits
    for name, x in (("CLIP hidden_states[-2]", hs), ("LM logits", logits)):
        if not torch.isfinite(x.float()).all():
            fail("%s: non-finite %s" % (d, name))
    print("  phi3_v: CLIPVisionModel + Phi3ForCausalLM load strict from the hub names (%d tensors, %.1fs); "
          "CLIP features %s, logits %s std %.3f"
          % (len(sd), time.time() - t, list(hs.shape), list(logits.shape), float(logits.float().std())))
    del clip, lm, sd
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    a = ap.parse_args()
    import torch
    import transformers
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print("transformers %s, torch %s, device %s" % (transformers.__version__, torch.__version__, device))
    for d in a.dirs:
        cfg = hft.read_config(d)
        family = hft.family_of(cfg)
        if family == "phi3_v":
            check_phi(d, device, a.dtype)
        else:
            check_native(d, family, device, a.dtype)
        print("OK", d, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
