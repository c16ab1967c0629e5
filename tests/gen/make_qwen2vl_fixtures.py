#!/usr/bin/env python3
"""Make the Qwen2-VL golden fixtures: tiny random-weight checkpoints in the
hub layout plus reference outputs from Hugging Face transformers 5.17.

Run on the machine with transformers 5.17 + torch (CPU float32, deterministic):

    python3 tests/gen/make_qwen2vl_fixtures.py --out DIR/models

For each config in qwen2vl_reference.CONFIGS it writes DIR/models/<name>/:
config.json (hub style: flat text fields, rope_scaling mrope, vision_config),
model.safetensors (bf16, hub names model.* / visual.* / lm_head.*; lm_head
omitted when tied), tokenizer.json (byte-identical copy of
tests/data/tok/qwen2/tokenizer.json), tokenizer_config.json (Qwen2-VL chat
template, bos null, eos <|im_end|>, pad <|endoftext|>), preprocessor_config.json
(min_pixels 56*56, max_pixels 28*28*64), generation_config.json, and
reference.json: per case the rendered prompt, image files, grid_thw, pixel
shapes, expanded ids, the 3-D M-RoPE positions and rope delta (from
get_rope_index, cross-checked with our own implementation), and 12 greedy
steps with top-5 logprobs (full forward each step, no cache, float64
log_softmax of the float32 logits of the bf16-rounded weights).
stages.safetensors holds case 0's pixel_values, patch-embed output, vision
blocks output (merger input), merger output (= image_embeds for the
embedding-input path, with image_grid_thw), expanded input_ids, M-RoPE
position ids, merged inputs_embeds and the final-norm hidden states.
Images go to DIR/models/images/ (made deterministically).

Size budget (the repo holds these files): the embedding is vocab x hidden and
the Qwen tokenizer's ids reach 151668, so vocab_size is 151680 (the next
multiple of 64) and hidden sizes are small: tiny-a is tied with hidden 24
(one 151680x24 matrix, 7.3 MB bf16), tiny-b is untied with hidden 16 (two
151680x16 matrices, 9.7 MB). Together about 17.3 MB of weights. Random bf16
compresses only to ~79%, so hidden 32 for tiny-a would push the tarball of
both (without tokenizer.json, which the lead copies from tests/data/tok/qwen2)
over the 16 MiB a device file may have; this way it is ~15 MB
(device_more_fixtures.sh splits it per model if it is not).

Weights: every matrix ~ N(0, 1/fan_in), so activations are unit-scale and
attention is far from uniform: RoPE/M-RoPE sections, image placement and the
vision tower visibly change the logits (with the LLaVA script's 0.02 init
they barely do). Norm scales 1+0.1*randn, biases 0.05*randn, then everything
is rounded to bf16 before the reference is computed, as the LLaVA script does.
"""
import argparse
import math
import os
import shutil
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fixture_common as fc  # noqa: E402
import qwen2vl_reference as qr  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
import transformers  # noqa: E402
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration  # noqa: E402

STEPS = 12
TOPK = 5
T0 = time.time()


def log(*a):
    print("[qwen2vl %6.1fs]" % (time.time() - T0), *a, flush=True)


def make_image_processor():
    """Qwen2VLImageProcessorPil (PIL backend) with the fixture's pixel limits;
    falls back to the default (torchvision) processor if the PIL class is
    missing. Returns (processor, class name)."""
    errors = []
    getters = [
        lambda: transformers.Qwen2VLImageProcessorPil,
        lambda: __import__("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl",
                           fromlist=["x"]).Qwen2VLImageProcessorPil,
        lambda: transformers.Qwen2VLImageProcessor,
    ]
    for get in getters:
        try:
            cls = get()
            ip = cls(min_pixels=qr.MIN_PIXELS, max_pixels=qr.MAX_PIXELS, patch_size=qr.PATCH,
                     temporal_patch_size=qr.TEMPORAL, merge_size=qr.MERGE)
            return ip, cls.__name__
        except Exception as e:  # try the next way of getting a processor
            errors.append(repr(e))
    raise RuntimeError("no Qwen2-VL image processor: " + "; ".join(errors))


def init_weights(model, seed):
    """Deterministic weights: matrices N(0, 1/fan_in), norm scales 1+0.1*randn,
    biases and vectors 0.05*randn; all rounded to bf16 (the stored dtype)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif "norm" in name or "ln_q" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.dim() >= 2:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.05 * torch.randn_like(p))
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def find_module(model, names):
    mods = dict(model.named_modules())
    for n in names:
        if n in mods:
            return n, mods[n]
    raise KeyError("none of %s in the model" % names)


class Forward:
    """model(...) on a growing sequence, full forward without cache. Remembers
    which keyword set works with this transformers version, per input kind
    (mm_token_type_ids covering the whole sequence is required in 5.17)."""

    def __init__(self, model):
        self.model = model
        self.chosen = {}

    @staticmethod
    def variants(ids, pv, thw):
        base = dict(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        mm = (ids == qr.IMAGE_PAD).int()
        if pv is None:
            return [("text", base), ("text+mm_zeros", dict(base, mm_token_type_ids=torch.zeros_like(mm)))]
        img = dict(base, pixel_values=pv, image_grid_thw=thw)
        return [("image+mm", dict(img, mm_token_type_ids=mm)), ("image", img)]

    def __call__(self, seq, pv, thw):
        ids = torch.tensor([seq], dtype=torch.long)
        kind = "text" if pv is None else "image"
        vs = self.variants(ids, pv, thw)
        vs.sort(key=lambda v: v[0] != self.chosen.get(kind))
        errors = []
        for name, kw in vs:
            inner = getattr(self.model, "model", None)
            if inner is not None and hasattr(inner, "rope_deltas"):
                inner.rope_deltas = None  # positions recomputed from the full sequence
            try:
                out = self.model(**kw)
            except Exception as e:  # try the next keyword set
                errors.append("%s: %r" % (name, e))
                continue
            if self.chosen.get(kind) != name:
                log("forward variant for %s input: %s" % (kind, name))
                self.chosen[kind] = name
            return out.logits[0, -1]
        raise RuntimeError("forward failed: " + " | ".join(errors))

    def with_positions(self, seq, pv, thw, pos):
        """The working keyword set of an image input plus explicit 3-D position_ids."""
        ids = torch.tensor([seq], dtype=torch.long)
        kw = dict(self.variants(ids, pv, thw))[self.chosen["image"]]
        kw = dict(kw, position_ids=torch.tensor(pos, dtype=torch.long).reshape(3, 1, -1))
        inner = getattr(self.model, "model", None)
        if inner is not None and hasattr(inner, "rope_deltas"):
            inner.rope_deltas = None
        return self.model(**kw).logits[0, -1]


def check_positions(fwd, case, seq, pv, thw, logits, hpos):
    """Run the prompt again with explicit position_ids: the positions that
    reproduce transformers' own logits are the ones recorded."""
    tried = [("ours", case["mrope_positions"])] + ([("hf", hpos)] if hpos and hpos != case["mrope_positions"] else [])
    for src, pos in tried:
        try:
            lo = fwd.with_positions(seq, pv, thw, pos)
            diff = float((lo - logits).abs().max())
        except Exception:
            traceback.print_exc()
            diff = None
        case["explicit_positions_max_logit_diff_" + src] = diff
        if diff is not None and diff < 1e-4:
            if src == "hf":
                log("WARNING: recording get_rope_index's positions, ours did not reproduce the logits")
                case["mrope_positions_ours"] = case["mrope_positions"]
                case["rope_delta_ours"] = case["rope_delta"]
                case["mrope_positions"], case["rope_delta"] = hpos, case["rope_delta_hf"]
            case["mrope_positions_source"] = src
            return
    log("WARNING: no recorded positions reproduce the logits:", {k: v for k, v in case.items()
                                                                  if k.startswith("explicit_positions")})
    case["mrope_positions_source"] = "unverified"


def hf_rope_index(model, seq, thw):
    """transformers' 3-D positions and delta for the expanded prompt, trying
    the 5.17 signature first, then the 4.x one. Returns (pos, delta, how)."""
    ids = torch.tensor([seq], dtype=torch.long)
    am = torch.ones_like(ids)
    mm = (ids == qr.IMAGE_PAD).int()
    owners = [o for o in (getattr(model, "model", None), model) if o is not None and hasattr(o, "get_rope_index")]
    errors = []
    for o in owners:
        for how, call in [
                ("(ids, mm, thw, None, am)", lambda: o.get_rope_index(ids, mm, thw, None, am)),
                ("kw", lambda: o.get_rope_index(input_ids=ids, mm_token_type_ids=mm, image_grid_thw=thw,
                                                attention_mask=am)),
                ("4.x (ids, thw, None, am)", lambda: o.get_rope_index(ids, thw, None, am))]:
            try:
                pos, delta = call()
                return pos.reshape(3, -1).tolist(), int(torch.as_tensor(delta).reshape(-1)[0]), how
            except Exception as e:  # next signature
                errors.append("%s: %r" % (how, e))
    raise RuntimeError("get_rope_index failed: " + " | ".join(errors))


def save_hub(model, spec, path):
    sd = model.state_dict()
    tensors, mapping = {}, {}
    for k, v in sd.items():
        if "inv_freq" in k or "position_ids" in k:
            continue
        if spec["tie"] and k == "lm_head.weight":
            continue
        try:
            hk = qr.hub_name(k)
        except ValueError:
            log("WARNING: no hub name for %s; stored as is" % k)
            hk = k
        if hk in tensors:
            raise RuntimeError("duplicate hub name " + hk)
        tensors[hk] = v.detach().to(torch.bfloat16).contiguous()
        mapping[hk] = k
    if not spec["tie"] and "lm_head.weight" not in tensors:
        raise RuntimeError("untied model without lm_head.weight")
    save_file(tensors, path, metadata={"format": "pt"})
    return sorted(tensors), sum(t.numel() * 2 for t in tensors.values())


def build(name, spec, tok_src, out_dir, images):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    hubcfg = qr.hub_config(spec)
    fc.write_json(os.path.join(d, "config.json"), hubcfg)
    fc.write_json(os.path.join(d, "preprocessor_config.json"), qr.preprocessor_config(spec))
    fc.write_json(os.path.join(d, "generation_config.json"), qr.generation_config())
    shutil.copyfile(tok_src, os.path.join(d, "tokenizer.json"))
    tj = fc.read_json(tok_src)
    fc.write_json(os.path.join(d, "tokenizer_config.json"), qr.tokenizer_config(tj))
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))

    torch.manual_seed(spec["seed"])
    cfg = Qwen2VLConfig.from_pretrained(d)
    model = Qwen2VLForConditionalGeneration(cfg).float().eval()
    init_weights(model, spec["seed"])
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = emb.data_ptr() == head.data_ptr()
    checks = {"tied_in_memory": tied}
    if spec["tie"] and not tied:
        log("WARNING: config asks for tied embeddings but transformers did not tie; tying by hand")
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    if not spec["tie"] and tied:
        raise RuntimeError("untied config produced tied embeddings")
    if emb.shape[0] != qr.VOCAB:
        raise RuntimeError("embedding has %d rows, want %d" % (emb.shape[0], qr.VOCAB))
    keys, nbytes = save_hub(model, spec, os.path.join(d, "model.safetensors"))
    log(name, "saved %d tensors, %.2f MB" % (len(keys), nbytes / 1e6))
    want = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.o_proj.weight",
            "model.layers.0.mlp.gate_proj.weight", "model.layers.0.input_layernorm.weight", "model.norm.weight",
            "visual.patch_embed.proj.weight", "visual.blocks.0.norm1.weight", "visual.blocks.0.attn.qkv.weight",
            "visual.blocks.0.attn.proj.bias", "visual.blocks.0.mlp.fc1.weight", "visual.merger.ln_q.weight",
            "visual.merger.mlp.0.weight", "visual.merger.mlp.2.bias"] + ([] if spec["tie"] else ["lm_head.weight"])
    checks["hub_names_missing"] = [k for k in want if k not in keys]
    pe = [p for n, p in model.named_parameters() if n.endswith("patch_embed.proj.weight")]
    checks["patch_embed_shape"] = list(pe[0].shape) if pe else None  # hub: [embed, 3, 2, 14, 14]
    if checks["hub_names_missing"] or (spec["tie"] and "lm_head.weight" in keys):
        log("WARNING: not the hub layout:", checks["hub_names_missing"])

    ip, ip_name = make_image_processor()
    checks["image_processor_size"] = str(getattr(ip, "size", None))
    fwd = Forward(model)
    ref = {"model": name, "family": "qwen2_vl", "steps": STEPS, "topk": TOPK,
           "transformers": transformers.__version__, "torch": torch.__version__,
           "image_processor": ip_name, "min_pixels": qr.MIN_PIXELS, "max_pixels": qr.MAX_PIXELS,
           "vocab_size": qr.VOCAB, "image_token_id": qr.IMAGE_PAD,
           "eos_token_ids": qr.generation_config()["eos_token_id"],
           "weights": "bf16; matrices N(0,1/fan_in), norms 1+0.1*randn, biases 0.05*randn, seed %d" % spec["seed"],
           "tensor_names": keys, "checks": checks, "cases": []}
    stages = {}
    first_logits = None
    for ci, (text, imgs) in enumerate(qr.CASES):
        try:
            msgs = qr.messages_for(text, imgs)
            prompt = fc.render_chat(qr.CHAT_TEMPLATE, msgs)
            ids = tok.encode(prompt).ids
            paths = ["../images/%s.png" % i for i in (imgs or [])]
            shown = msgs if imgs is None else [{"role": "user", "content": [
                {"type": "image", "image": p} for p in paths] + [{"type": "text", "text": text}]}]
            case = {"user_text": text, "messages": shown, "prompt": prompt, "images": paths,
                    "prompt_ids": ids}
            pv = thw = None
            grids = []
            if imgs:
                pil = [Image.open(images[i]).convert("RGB") for i in imgs]
                r = ip(images=pil, return_tensors="pt")
                pv = r["pixel_values"].to(torch.float32)
                thw = r["image_grid_thw"].to(torch.long)
                grids = thw.tolist()
                ours = [qr.grid_thw(*p.size) for p in pil]
                case.update({"image_sizes_wh": [list(p.size) for p in pil], "image_grid_thw": grids,
                             "grid_matches_ours": grids == ours, "pixel_values_shape": list(pv.shape),
                             "image_tokens": [qr.image_tokens(g) for g in grids]})
                if grids != ours:
                    log("WARNING case %d: processor grids %s, smart_resize says %s" % (ci, grids, ours))
            expanded = qr.expand_ids(ids, grids)
            pos, delta = qr.mrope_positions(expanded, grids)
            case.update({"expanded_ids": expanded, "mrope_positions": pos, "rope_delta": delta})
            hpos = None
            try:
                hpos, hdelta, how = hf_rope_index(model, expanded, thw)
                case["positions_match_hf"] = (hpos == pos and hdelta == delta)
                checks.setdefault("get_rope_index_signature", how)
                if not case["positions_match_hf"]:
                    log("WARNING case %d: our M-RoPE positions differ from get_rope_index's" % ci)
                    case.update({"mrope_positions_hf": hpos, "rope_delta_hf": hdelta})
            except Exception:
                traceback.print_exc()
                case["positions_match_hf"] = None

            hooks, cap = [], {}
            if ci == 0 and pv is not None:
                hooks, cap = register_stage_hooks(model)
            seq = list(expanded)
            steps, min_margin = [], float("inf")
            try:
                with torch.no_grad():
                    for si in range(STEPS):
                        logits = fwd(seq, pv, thw)
                        if si == 0:
                            for h in hooks:
                                h.remove()
                            hooks = []
                            if ci == 0:
                                first_logits = logits.clone()
                            if pv is not None:
                                check_positions(fwd, case, seq, pv, thw, logits, hpos)
                        lp = torch.log_softmax(logits.double(), -1)
                        top = torch.topk(lp, TOPK)
                        nxt = int(torch.argmax(logits))
                        min_margin = min(min_margin, float(top.values[0] - top.values[1]))
                        steps.append({"token": nxt,
                                      "top": [[int(i), float(v)] for v, i in zip(top.values, top.indices)]})
                        seq.append(nxt)
            finally:
                for h in hooks:
                    h.remove()
            case.update({"steps": steps, "min_top1_margin": min_margin,
                         "hits_eos": any(s["token"] in ref["eos_token_ids"] for s in steps)})
            if ci == 0 and pv is not None:
                stages.update(case0_stages(model, cap, pv, thw, expanded, case, checks, first_logits))
            ref["cases"].append(case)
            log(name, "case", ci, "len", len(expanded), "greedy:", [s["token"] for s in steps],
                "margin %.4f" % min_margin)
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
    try:
        reload_check(d, ref, checks)
    except Exception:
        traceback.print_exc()
        checks["reload"] = "failed: " + traceback.format_exc().splitlines()[-1]
    fc.write_json(os.path.join(d, "reference.json"), ref)
    bad = [c for c in ref["cases"] if "error" in c]
    log(name, "done:", len(ref["cases"]) - len(bad), "cases ok,", len(bad), "failed; checks", checks)
    return not bad


def register_stage_hooks(model):
    """Capture the vision patch-embed output, the merger input/output, the
    decoder input (merged inputs_embeds) and the final-norm output."""
    cap, hooks = {}, []

    def keep(key, which):
        def hook(mod, args, kwargs, out):
            if which == "in":
                cap[key] = (args[0] if args else next(iter(kwargs.values()))).detach().clone()
            else:
                o = out[0] if isinstance(out, (tuple, list)) else out
                cap[key] = o.detach().clone()
        return hook

    def keep_pre(key):
        def hook(mod, args, kwargs):
            x = args[0] if args else kwargs.get("hidden_states")
            if x is not None:
                cap[key] = x.detach().clone()
        return hook

    for key, names, which in [
            ("vision_patch_embed", ["model.visual.patch_embed", "visual.patch_embed"], "out"),
            ("vision_blocks_out", ["model.visual.merger", "visual.merger"], "in"),
            ("vision_merger_out", ["model.visual.merger", "visual.merger"], "out"),
            ("last_hidden", ["model.language_model.norm", "model.norm"], "out")]:
        try:
            _, m = find_module(model, names)
            hooks.append(m.register_forward_hook(keep(key, which), with_kwargs=True))
        except Exception:
            traceback.print_exc()
    try:
        _, m = find_module(model, ["model.language_model.layers.0", "model.layers.0"])
        hooks.append(m.register_forward_pre_hook(keep_pre("inputs_embeds"), with_kwargs=True))
    except Exception:
        traceback.print_exc()
    return hooks, cap


def case0_stages(model, cap, pv, thw, expanded, case, checks, first_logits):
    st = {"pixel_values": pv, "image_grid_thw": thw,
          "input_ids": torch.tensor([expanded], dtype=torch.int64),
          "mrope_position_ids": torch.tensor(case["mrope_positions"], dtype=torch.int64)}
    for k in ("vision_patch_embed", "vision_blocks_out", "vision_merger_out", "inputs_embeds", "last_hidden"):
        if k in cap:
            st[k] = cap[k].reshape(-1, cap[k].shape[-1]).float()
    if "vision_merger_out" not in st:
        with torch.no_grad():
            _, vis = find_module(model, ["model.visual", "visual"])
            out = vis(pv, grid_thw=thw)
            st["vision_merger_out"] = (out.pooler_output if hasattr(out, "pooler_output") else out).float()
    st["image_embeds"] = st["vision_merger_out"].clone()
    n_img = sum(1 for t in expanded if t == qr.IMAGE_PAD)
    checks["image_embeds_rows"] = [int(st["image_embeds"].shape[0]), n_img]
    # The embedding-input path: embed the ids, put image_embeds in the image
    # rows, give the M-RoPE positions; must reproduce the pixel path's logits.
    try:
        with torch.no_grad():
            ids = st["input_ids"]
            x = model.get_input_embeddings()(ids).clone()
            x[ids == qr.IMAGE_PAD] = st["image_embeds"]
            if "inputs_embeds" in st:
                checks["inputs_embeds_max_diff"] = float((x[0] - st["inputs_embeds"]).abs().max())
            pos = st["mrope_position_ids"].reshape(3, 1, -1)
            inner = getattr(model, "model", None)
            if inner is not None and hasattr(inner, "rope_deltas"):
                inner.rope_deltas = None
            out = model(inputs_embeds=x, attention_mask=torch.ones_like(ids), position_ids=pos, use_cache=False)
            checks["embeds_path_max_logit_diff"] = float((out.logits[0, -1] - first_logits).abs().max())
    except Exception:
        traceback.print_exc()
        checks["embeds_path_max_logit_diff"] = "failed: " + traceback.format_exc().splitlines()[-1]
    log("stages:", {k: list(v.shape) for k, v in st.items()})
    return st


def reload_check(d, ref, checks):
    """Load the written checkpoint with from_pretrained (hub names, bf16 file,
    float32 model) and compare case 0's first logits with the reference."""
    kwargs_list = [dict(dtype=torch.float32), dict(torch_dtype=torch.float32)]
    model = info = None
    for kw in kwargs_list:
        try:
            model, info = Qwen2VLForConditionalGeneration.from_pretrained(d, output_loading_info=True, **kw)
            break
        except TypeError:
            continue
    model = model.float().eval()
    checks["reload_missing"] = sorted(info.get("missing_keys", [])) if info else None
    checks["reload_unexpected"] = sorted(info.get("unexpected_keys", [])) if info else None
    c0 = ref["cases"][0]
    if "error" in c0:
        return
    ip, _ = make_image_processor()
    pil = [Image.open(os.path.join(d, p)).convert("RGB") for p in c0["images"]]
    r = ip(images=pil, return_tensors="pt")
    with torch.no_grad():
        logits = Forward(model)(c0["expanded_ids"], r["pixel_values"].float(), r["image_grid_thw"].long())
    lp = torch.log_softmax(logits.double(), -1)
    want = {i: v for i, v in c0["steps"][0]["top"]}
    checks["reload_max_logprob_diff"] = max(abs(float(lp[i]) - v) for i, v in want.items())
    log("reload check:", {k: checks[k] for k in ("reload_missing", "reload_unexpected", "reload_max_logprob_diff")})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "..", "data", "tok", "qwen2", "tokenizer.json"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default=None, help="build only this config")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("GEN_THREADS", max(1, min(16, os.cpu_count() or 1)))))
    log("transformers", transformers.__version__, "torch", torch.__version__)
    images = fc.make_images(os.path.join(a.out, "images"), qr.case_images())
    ok = True
    for name, spec in qr.CONFIGS.items():
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
