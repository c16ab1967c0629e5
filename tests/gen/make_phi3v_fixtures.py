#!/usr/bin/env python3
"""Make the Phi-3.5-vision golden fixtures: tiny random-weight checkpoints in
the hub Phi3V layout plus reference outputs.

transformers 5.17 has no Phi3V class, so the reference is built as
models.md §5 recommends: native CLIPVisionModel + Phi3ForCausalLM (longrope)
from transformers 5.17, and our own glue in tests/gen/phi3v_reference.py (HD
transform, 2x2 merge, separators, projection, prompt expansion), written from
the published algorithm. Run on the machine with transformers 5.17 + torch
(CPU float32, deterministic):

    python3 tests/gen/make_phi3v_fixtures.py --out DIR/models

For each config in phi3v_reference.CONFIGS it writes DIR/models/<name>/:
config.json (hub-style Phi3V: embd_layer, img_processor, rope_scaling su or
longrope with top-level original_max_position_embeddings), model.safetensors
(bf16, hub Phi3V names; phi3v-tiny-b stores the embedding only under the
model.vision_embed_tokens.wte alias), tokenizer.json (Llama-2 + Phi-3 added
tokens), tokenizer_config.json (Phi-3.5-vision chat template),
preprocessor_config.json (num_crops), generation_config.json, reference.json
and stages.safetensors. reference.json has, per case, the rendered prompt,
its text chunks and their ids (BOS per chunk), the HD geometry and image
token counts (formula and glue rows), expanded ids with the HF processor's
negative placeholders (and vLLM's 32044 form), the rope regime (short/long
factors), and 12 greedy steps with top-5 logprobs (full forward each step,
float64 log_softmax of the float32 logits of the bf16-rounded weights).

Tiny CLIP: image_size 56, patch 14, so the HD tile is S = 56 and each crop
gives a 4x4 grid merged to 2x2 tokens. The real model's CLIP (ViT-L/14-336) is
hard-coded in the remote code, so config.json carries the tiny tower's shape
in img_processor.vision_config (our extension: an engine should use it when
present, ViT-L/14-336 otherwise; the HD tile size is its image_size).
Role tokens <|assistant|> <|system|> <|end|> <|user|> <|placeholderN|> have
rstrip true, as later Phi-3 tokenizer files do. original_max_position_embeddings is
small (96 / 192) so one ~130/270-token case of each model runs on the long
factors while the others stay on the short ones; no case crosses the
threshold during its 12 steps (that would make cached and uncached runs
differ). The "su"/longrope cos/sin of transformers are compared with our
formula; if they ever differ, our formula (models.md §2.2) is used and
reference.json says so.
"""
import argparse
import math
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fixture_common as fc  # noqa: E402
import phi3v_reference as pr  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
import transformers  # noqa: E402
from transformers import CLIPVisionConfig, CLIPVisionModel, Phi3Config, Phi3ForCausalLM  # noqa: E402

STEPS = 12
TOPK = 5
T0 = time.time()


def log(*a):
    print("[phi3v %6.1fs]" % (time.time() - T0), *a, flush=True)


def phi3_config(spec):
    """Phi3Config for the language model with longrope. 5.17 rejects "su" with
    a top-level original_max_position_embeddings, so the factors go in
    rope_parameters; older spellings are tried if that keyword is unknown."""
    t = spec["text"]
    short, long_ = pr.rope_factors(spec)
    orig = t["original_max_position_embeddings"]
    base = dict(vocab_size=pr.VOCAB, hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
                num_hidden_layers=t["num_hidden_layers"], num_attention_heads=t["num_attention_heads"],
                num_key_value_heads=t["num_key_value_heads"], max_position_embeddings=t["max_position_embeddings"],
                rms_norm_eps=t["rms_norm_eps"], hidden_act="silu", tie_word_embeddings=False,
                bos_token_id=pr.BOS, eos_token_id=pr.EOS, pad_token_id=pr.PAD)
    extra = dict(sliding_window=None, attention_dropout=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    rp = {"rope_type": "longrope", "short_factor": short, "long_factor": long_,
          "original_max_position_embeddings": orig, "rope_theta": t["rope_theta"]}
    ropes = [("rope_parameters", dict(rope_parameters=rp)),
             ("rope_parameters+top-level original", dict(rope_parameters=rp, original_max_position_embeddings=orig)),
             ("rope_scaling longrope (4.x)", dict(rope_scaling={"type": "longrope", "short_factor": short,
                                                                "long_factor": long_},
                                                  original_max_position_embeddings=orig,
                                                  rope_theta=t["rope_theta"]))]
    errors, cfg = [], None
    for ex_name, ex in (("", extra), (" without dropout/sliding keys", {})):
        for how, kw in ropes:
            try:
                cfg = Phi3Config(**base, **ex, **kw)
                how += ex_name
                break
            except Exception as e:  # next spelling
                errors.append("%s%s: %r" % (how, ex_name, e))
        if cfg is not None:
            break
    if cfg is None:
        raise RuntimeError("Phi3Config: " + " | ".join(errors))
    if getattr(cfg, "original_max_position_embeddings", None) != orig:
        try:  # some versions read the threshold from the top level
            cfg.original_max_position_embeddings = orig
        except Exception:
            traceback.print_exc()
    return cfg, how


class Phi3VRef(nn.Module):
    """Container so every weight has one name: CLIP, the Phi-3 LM, the
    projection and the two separators."""

    def __init__(self, spec):
        super().__init__()
        c = spec["clip"]
        self.clip = CLIPVisionModel(CLIPVisionConfig(hidden_act="quick_gelu", **c))
        cfg, self.config_how = phi3_config(spec)
        self.lm = Phi3ForCausalLM(cfg)
        C4, D = 4 * c["hidden_size"], spec["text"]["hidden_size"]
        self.img_projection = nn.Sequential(nn.Linear(C4, D), nn.GELU(), nn.Linear(D, D))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, C4))
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, C4))


def hub_name(k, spec):
    """Container name -> hub Phi3V name (None: not stored)."""
    if "position_ids" in k or "inv_freq" in k:
        return None
    if k.startswith("clip."):
        return pr.clip_hub_name(k[len("clip."):])
    if k.startswith("lm."):
        k = k[len("lm."):]
        if k == "model.embed_tokens.weight" and spec["wte_alias"]:
            return "model.vision_embed_tokens.wte.weight"
        return k
    if k.startswith("img_projection."):
        return "model.vision_embed_tokens." + k
    if k in ("sub_GN", "glb_GN"):
        return "model.vision_embed_tokens." + k
    raise ValueError("unexpected parameter " + k)


def init_weights(m, seed):
    """Matrices N(0, 1/fan_in), separators N(0,1), norm scales 1+0.1*randn,
    biases and vectors 0.05*randn; all rounded to bf16 (the stored dtype)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name in ("sub_GN", "glb_GN"):
                p.copy_(torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() >= 2:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.05 * torch.randn_like(p))
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def rope_check(ref_model, spec, checks):
    """Compare transformers' longrope cos/sin with our su formula at the last
    short length (original max) and the first long one (original max + 1).
    On a mismatch, install our formula. Returns the tables for stages."""
    t = spec["text"]
    orig, D = t["original_max_position_embeddings"], t["hidden_size"]
    rot = ref_model.lm.model.rotary_emb
    tables, diffs = {}, {}
    x = torch.zeros(1, 1, D)
    with torch.no_grad():
        for regime, L in (("short", orig), ("long", orig + 1)):
            pos = torch.arange(L)
            cos, sin = rot(x, pos[None])
            mc, ms = pr.su_cos_sin(pos, spec)
            diffs[regime] = float(max((cos[0] - mc).abs().max(), (sin[0] - ms).abs().max()))
            tables["rope_cos_" + regime], tables["rope_sin_" + regime] = cos[0].float(), sin[0].float()
        # HF's long table must differ from the short formula (it did switch)
        sc, _ = pr.su_cos_sin(torch.arange(orig + 1), spec, force="short")
        switched = float((tables["rope_cos_long"] - sc).abs().max()) > 1e-3
    checks["rope_max_diff_short"] = diffs["short"]
    checks["rope_max_diff_long"] = diffs["long"]
    checks["rope_hf_switched_to_long"] = switched
    checks["rope_attention_factor"] = pr.attention_factor(spec)
    if diffs["short"] > 1e-5 or diffs["long"] > 1e-5 or not switched:
        log("WARNING: transformers' longrope differs from the su formula (%s); using ours" % diffs)

        def ours(x, position_ids, *a, **k):
            c, s = pr.su_cos_sin(position_ids.reshape(-1), spec)
            return c[None].to(x.dtype), s[None].to(x.dtype)

        rot.forward = ours
        checks["rope_source"] = "our su formula (transformers disagreed)"
        for regime, L in (("short", orig), ("long", orig + 1)):
            c, s = pr.su_cos_sin(torch.arange(L), spec)
            tables["rope_cos_" + regime], tables["rope_sin_" + regime] = c, s
    else:
        checks["rope_source"] = "transformers longrope"
    log("rope check:", diffs, "switched:", switched)
    return tables


def hd_tensors(pil_images, nc, S, checks):
    """Normalized HD images, through torchvision as the published processor
    does (our numpy path as a cross-check; numpy if torchvision is absent)."""
    out, geos = [], []
    for img in pil_images:
        x_np, g = pr.hd_normalized_np(img, nc, S)
        try:
            x_tv, _ = pr.hd_normalized_torchvision(img, nc, S)
            d = float((x_tv - torch.from_numpy(x_np)).abs().max())
            checks["hd_torchvision_vs_numpy_max_diff"] = max(d, checks.get("hd_torchvision_vs_numpy_max_diff", 0.0))
            x = x_tv.float()
        except Exception:
            traceback.print_exc()
            checks["hd_torchvision"] = "failed; numpy path used"
            x = torch.from_numpy(x_np)
        out.append(x)
        geos.append(g)
    return out, geos


def image_embeddings(m, spec, pv, sizes, layer_idx=-2):
    """CLIP on all crops (padding too), hidden_states[layer_idx] without CLS,
    our HD feature layout, then img_projection. Returns (per-image projected
    rows, per-image rows before projection, CLIP patch features)."""
    S = pr.tile(spec)
    n, k = pv.shape[0], pv.shape[1]
    hs = m.clip(pixel_values=pv.flatten(0, 1), output_hidden_states=True).hidden_states[layer_idx][:, 1:]
    feats = hs.reshape(n, k, hs.shape[1], hs.shape[2])
    rows = pr.image_features(feats, sizes.tolist(), S, m.sub_GN, m.glb_GN)
    proj = [m.img_projection(r) for r in rows]
    return proj, rows, feats


def build(name, spec, llama_tok, out_dir, images):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    S, G, nc = pr.tile(spec), pr.grid_side(spec), spec["num_crops"]
    orig = spec["text"]["original_max_position_embeddings"]
    fc.write_json(os.path.join(d, "config.json"), pr.hub_config(spec))
    fc.write_json(os.path.join(d, "preprocessor_config.json"), pr.preprocessor_config(spec))
    fc.write_json(os.path.join(d, "generation_config.json"), pr.generation_config())
    tj = pr.tokenizer_json(fc.read_json(llama_tok))
    fc.write_json(os.path.join(d, "tokenizer.json"), tj, indent=None)
    fc.write_json(os.path.join(d, "tokenizer_config.json"), pr.tokenizer_config(tj))
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))

    torch.manual_seed(spec["seed"])
    m = Phi3VRef(spec).float().eval()
    init_weights(m, spec["seed"])
    tensors, inverse = {}, {}
    for k, v in m.state_dict().items():
        try:
            hk = hub_name(k, spec)
        except ValueError:
            log("WARNING: no hub name for %s; stored as is" % k)
            hk = k
        if hk is None:
            continue
        if hk in tensors:
            raise RuntimeError("duplicate hub name " + hk)
        tensors[hk] = v.detach().to(torch.bfloat16).contiguous()
        inverse[hk] = k
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    log(name, "saved %d tensors, %.2f MB; config via %s" % (
        len(tensors), sum(t.numel() * 2 for t in tensors.values()) / 1e6, m.config_how))
    vt = "model.vision_embed_tokens."
    clipp = vt + "img_processor.vision_model."
    want = ["model.layers.0.self_attn.qkv_proj.weight", "model.layers.0.self_attn.o_proj.weight",
            "model.layers.0.mlp.gate_up_proj.weight", "model.layers.0.mlp.down_proj.weight",
            "model.layers.0.input_layernorm.weight", "model.norm.weight", "lm_head.weight",
            (vt + "wte.weight") if spec["wte_alias"] else "model.embed_tokens.weight",
            clipp + "embeddings.patch_embedding.weight", clipp + "embeddings.class_embedding",
            clipp + "embeddings.position_embedding.weight", clipp + "pre_layrnorm.weight",
            clipp + "encoder.layers.0.self_attn.q_proj.weight", clipp + "encoder.layers.0.mlp.fc1.weight",
            clipp + "post_layernorm.weight", vt + "img_projection.0.weight", vt + "img_projection.2.bias",
            vt + "glb_GN", vt + "sub_GN"]
    absent = [k for k in want if k not in tensors]
    if absent:
        log("WARNING: not in the hub layout, missing", absent)

    # The reference runs on modules loaded back from the hub-named tensors.
    checks = {"phi3_config": m.config_how, "hub_names_missing": absent}
    ref_model = Phi3VRef(spec).float().eval()
    res = ref_model.load_state_dict({inverse[k]: v.float() for k, v in tensors.items()}, strict=False)
    missing = [k for k in res.missing_keys if "position_ids" not in k and "inv_freq" not in k]
    checks["load_back_missing"], checks["load_back_unexpected"] = missing, list(res.unexpected_keys)
    if missing or res.unexpected_keys:
        log("WARNING: hub names do not load back (missing %s, unexpected %s); using the modules that wrote them"
            % (missing, res.unexpected_keys))
    else:
        m = ref_model
    try:
        tables = rope_check(m, spec, checks)
    except Exception:
        traceback.print_exc()
        checks["rope_source"] = "transformers longrope (could not be compared: %s)" % (
            traceback.format_exc().splitlines()[-1])
        tables = {}

    ref = {"model": name, "family": "phi3_v", "steps": STEPS, "topk": TOPK,
           "transformers": transformers.__version__, "torch": torch.__version__,
           "tile_size": S, "patch_grid": G, "num_crops": nc, "tokens_per_crop": (G // 2) ** 2,
           "original_max_position_embeddings": orig,
           "max_position_embeddings": spec["text"]["max_position_embeddings"],
           "image_placeholder_vllm": pr.IMAGE_TOKEN_VLLM, "eos_token_ids": pr.generation_config()["eos_token_id"],
           "weights": "bf16; matrices N(0,1/fan_in), separators N(0,1), norms 1+0.1*randn, biases 0.05*randn, "
                      "seed %d" % spec["seed"],
           "tensor_names": sorted(tensors), "checks": checks, "cases": []}
    stages = dict(tables)
    embed = m.lm.get_input_embeddings()
    for ci, (text, imgs) in enumerate(spec["cases"]):
        try:
            prompt = fc.render_chat(pr.CHAT_TEMPLATE, [{"role": "user", "content": text}])
            chunks, image_ids = pr.split_prompt(prompt)
            chunk_ids = [tok.encode(c).ids for c in chunks]
            if any(not c or c[0] != pr.BOS for c in chunk_ids):
                raise RuntimeError("a text chunk does not start with BOS: %s" % chunk_ids)
            if len(set(image_ids)) != len(imgs):
                raise RuntimeError("prompt tags %s for %d images" % (image_ids, len(imgs)))
            paths = ["../images/%s.png" % i for i in imgs]
            case = {"user_text": text, "messages": [{"role": "user", "content": text}], "prompt": prompt,
                    "images": paths, "chunks": chunks, "chunk_ids": chunk_ids}
            per_image = []
            with torch.no_grad():
                if imgs:
                    pil = [Image.open(images[i]).convert("RGB") for i in imgs]
                    hd, geos = hd_tensors(pil, nc, S, checks)
                    pv, sizes = pr.pixel_values(hd, nc, S)
                    counts = [pr.num_img_tokens(int(h), int(w), S, G) for h, w in sizes.tolist()]
                    proj, rows, feats = image_embeddings(m, spec, pv, sizes, -2)
                    glue_rows = [int(r.shape[0]) for r in rows]
                    for i in range(len(imgs)):
                        per_image.append({"image": paths[i], "size_wh": list(pil[i].size), "hd_geometry": geos[i],
                                          "image_size_hw": sizes[i].tolist(), "crops_hw": [geos[i]["hc"], geos[i]["wc"]],
                                          "tokens_formula": counts[i], "tokens_glue": glue_rows[i],
                                          "tokens_layout": pr.tokens_by_layout(geos[i]["hc"], geos[i]["wc"], G)})
                    if glue_rows != counts:
                        raise RuntimeError("glue rows %s != formula %s" % (glue_rows, counts))
                    case.update({"pixel_values_shape": list(pv.shape), "image_sizes": sizes.tolist(),
                                 "image_tokens": counts})
                else:
                    counts, proj = [], []
            case["per_image"] = per_image
            expanded = pr.expand_prompt(chunk_ids, image_ids, counts)
            case["expanded_ids"] = expanded
            case["expanded_ids_vllm"] = [pr.IMAGE_TOKEN_VLLM if t < 0 else t for t in expanded]
            case["rope_regime"] = pr.rope_regime(len(expanded), STEPS, orig)
            if case["rope_regime"] == "mixed":
                log("WARNING case %d crosses original_max_position_embeddings during its steps" % ci)
            seq = list(expanded)
            steps, min_margin = [], float("inf")
            with torch.no_grad():
                for si in range(STEPS):
                    ids = torch.tensor(seq, dtype=torch.long)
                    x = embed(ids.clamp(min=0)).clone()
                    for k in set(image_ids):
                        mask = ids == -k
                        x[mask] = proj[k - 1].to(x.dtype)
                    out = m.lm(inputs_embeds=x[None], attention_mask=torch.ones(1, len(seq), dtype=torch.long),
                               use_cache=False)
                    logits = out.logits[0, -1]
                    if ci == 0 and si == 0 and imgs:
                        stages.update(case0_stages(m, hd, pv, sizes, feats, rows, proj, expanded, x))
                    lp = torch.log_softmax(logits.double(), -1)
                    top = torch.topk(lp, TOPK)
                    nxt = int(torch.argmax(logits))
                    min_margin = min(min_margin, float(top.values[0] - top.values[1]))
                    steps.append({"token": nxt,
                                  "top": [[int(i), float(v)] for v, i in zip(top.values, top.indices)]})
                    seq.append(nxt)
            case.update({"steps": steps, "min_top1_margin": min_margin,
                         "hits_eos": any(s["token"] in ref["eos_token_ids"] for s in steps)})
            ref["cases"].append(case)
            log(name, "case", ci, "len", len(expanded), case["rope_regime"], "image tokens", counts,
                "greedy:", [s["token"] for s in steps], "margin %.4f" % min_margin)
        except Exception:
            traceback.print_exc()
            log("ERROR", name, "case", ci, "failed; continuing")
            ref["cases"].append({"user_text": text, "error": traceback.format_exc()})
    try:
        save_file({k: v.detach().clone().contiguous() for k, v in stages.items()},
                  os.path.join(d, "stages.safetensors"))
    except Exception:
        traceback.print_exc()
        checks["stages"] = "not written: " + traceback.format_exc().splitlines()[-1]
    fc.write_json(os.path.join(d, "reference.json"), ref)
    bad = [c for c in ref["cases"] if "error" in c]
    regimes = [c.get("rope_regime") for c in ref["cases"]]
    log(name, "done:", len(ref["cases"]) - len(bad), "cases ok,", len(bad), "failed; regimes", regimes,
        "checks", checks)
    return not bad


def case0_stages(m, hd, pv, sizes, feats, rows, proj, expanded, x):
    """Glue intermediates of case 0 (first image) for stage-by-stage checks."""
    st = {"hd_image": hd[0].float(), "pixel_values": pv.float(), "image_sizes": sizes.to(torch.int64),
          "global_image": pv[0, 0].float(), "clip_features": feats[0].float(),
          "image_features_sep": rows[0].float(), "image_embeds": proj[0].float(),
          "input_ids": torch.tensor([expanded], dtype=torch.int64), "inputs_embeds": x.float()}
    # final-norm output = what lm_head multiplies
    try:
        with torch.no_grad():
            h = m.lm.model(inputs_embeds=x[None], attention_mask=torch.ones(1, x.shape[0], dtype=torch.long),
                           use_cache=False).last_hidden_state
        st["last_hidden"] = h[0].float()
    except Exception:
        traceback.print_exc()
    log("stages:", {k: list(v.shape) for k, v in st.items()})
    return st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "..", "data", "tok", "llama2", "tokenizer.json"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default=None, help="build only this config")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("GEN_THREADS", max(1, min(16, os.cpu_count() or 1)))))
    log("transformers", transformers.__version__, "torch", torch.__version__)
    names = sorted({i for spec in pr.CONFIGS.values() for _, imgs in spec["cases"] for i in imgs})
    images = fc.make_images(os.path.join(a.out, "images"), names)
    ok = True
    for name, spec in pr.CONFIGS.items():
        if a.only and name != a.only:
            continue
        try:
            ok = build(name, spec, a.tokenizer, a.out, images) and ok
        except Exception:
            traceback.print_exc()
            log("ERROR:", name, "failed")
            ok = False
    log("finished", "OK" if ok else "WITH ERRORS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
