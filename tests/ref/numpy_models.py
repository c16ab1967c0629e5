#!/usr/bin/python3
"""Independent numpy reference for tests/test_models.c.

Writes tiny random-weight checkpoints in the HF hub layout (config.json +
model.safetensors, written by a small writer here: numpy only) and the
expected outputs (expected.safetensors) of full-sequence float64 forward
passes, for four cases under OUTDIR:

  llama/   Llama decoder, GQA, separate q/k/v and gate/up, f32 weights
  phi3/    Phi-3 decoder, fused qkv_proj/gate_up_proj, "su" longrope with
           per-token short/long tables, bf16 weights
  qwen2vl/ Qwen2-VL decoder, q/k/v biases, tied lm_head, M-RoPE positions of
           an image run, image embeddings in placeholder rows, f16 weights
  clip/    CLIP vision tower, hidden states after 2 and 3 of 3 layers

Usage: numpy_models.py OUTDIR
"""
import json
import math
import os
import struct
import sys

import numpy as np

# ----------------------------------------------------------------- files


def bf16_bits(a):
    """float32 array -> uint16 bf16 bits, round to nearest even (no NaNs)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, numpy array already in that dtype)."""
    header, blobs, off = {}, [], 0
    for name, (dt, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


class Checkpoint:
    """Random weights stored in one dtype; .get() returns the values the
    engine will see (the stored dtype widened to float64)."""

    def __init__(self, rng, dtype):
        self.rng, self.dtype, self.store, self.vals = rng, dtype, {}, {}

    def add(self, name, shape, scale=0.2, offset=0.0):
        a = (self.rng.standard_normal(shape) * scale + offset).astype(np.float32)
        if self.dtype == "BF16":
            bits = bf16_bits(a)
            self.store[name] = ("BF16", bits)
            v = bf16_value(bits)
        elif self.dtype == "F16":
            h = a.astype(np.float16)
            self.store[name] = ("F16", h)
            v = h.astype(np.float32)
        else:
            self.store[name] = ("F32", a)
            v = a
        self.vals[name] = v.astype(np.float64)
        return self.vals[name]

    def get(self, name):
        return self.vals[name]

    def save(self, d):
        write_safetensors(os.path.join(d, "model.safetensors"), self.store)


def f32(a):
    return ("F32", np.ascontiguousarray(a, dtype=np.float32))


def i32(a):
    return ("I32", np.ascontiguousarray(a, dtype=np.int32))


# ----------------------------------------------------------------- decoder


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], -1)


def inv_freq_f32(theta, rot, factors=None):
    """inv_freq as transformers computes it, in float32."""
    shape = np.arange(0, rot, 2, dtype=np.int64).astype(np.float32) / np.float32(rot)
    base = np.float32(theta) ** shape
    if factors is not None:
        base = np.asarray(factors, dtype=np.float32) * base
    return (np.float32(1.0) / base).astype(np.float64)


def cos_sin(cfg, pos, table):
    """cos, sin (L, D) for one sequence: pos (3, L) or (1, L)."""
    D = cfg["head_dim"]
    L = pos.shape[1]
    kind = cfg["rope"]
    if kind == "mrope":
        inv = inv_freq_f32(cfg["theta"], D)
        # per axis (t, h, w) full-dim cos/sin, then the sections of both
        # halves taken from axes 0, 1, 2, 0, 1, 2 as HF does
        cs, sn = [], []
        for ax in range(3):
            f = pos[ax][:, None].astype(np.float64) * inv[None, :]
            emb = np.concatenate([f, f], -1)
            cs.append(np.cos(emb))
            sn.append(np.sin(emb))
        sec = cfg["mrope_section"] * 2
        bounds = np.cumsum([0] + sec)
        cos = np.concatenate([cs[i % 3][:, bounds[i]:bounds[i + 1]] for i in range(len(sec))], -1)
        sin = np.concatenate([sn[i % 3][:, bounds[i]:bounds[i + 1]] for i in range(len(sec))], -1)
        return cos, sin
    if kind == "longrope":
        tabs = [inv_freq_f32(cfg["theta"], D, cfg["short"]), inv_freq_f32(cfg["theta"], D, cfg["long"])]
        factor = cfg["max_pos"] / cfg["orig_max"]
        mscale = math.sqrt(1 + math.log(factor) / math.log(cfg["orig_max"]))
        cos = np.zeros((L, D))
        sin = np.zeros((L, D))
        for t in range(L):
            f = pos[0, t] * tabs[table[t]]
            emb = np.concatenate([f, f])
            cos[t] = np.cos(emb) * mscale
            sin[t] = np.sin(emb) * mscale
        return cos, sin
    inv = inv_freq_f32(cfg["theta"], D)
    f = pos[0][:, None].astype(np.float64) * inv[None, :]
    emb = np.concatenate([f, f], -1)
    return np.cos(emb), np.sin(emb)


def decoder_forward(cfg, W, x, pos, table):
    """Full causal forward of one sequence from input embeddings x (L, hid)."""
    H, Hkv, D = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    L = x.shape[0]
    cos, sin = cos_sin(cfg, pos, table)
    mask = np.triu(np.full((L, L), -np.inf), 1)
    for l in range(cfg["layers"]):
        p = "model.layers.%d." % l
        h = rms_norm(x, W(p + "input_layernorm.weight"), cfg["eps"])
        if cfg["fused"]:
            qkv = h @ W(p + "self_attn.qkv_proj.weight").T
            q, k, v = np.split(qkv, [H * D, H * D + Hkv * D], -1)
        else:
            q = h @ W(p + "self_attn.q_proj.weight").T
            k = h @ W(p + "self_attn.k_proj.weight").T
            v = h @ W(p + "self_attn.v_proj.weight").T
            if cfg["bias"]:
                q = q + W(p + "self_attn.q_proj.bias")
                k = k + W(p + "self_attn.k_proj.bias")
                v = v + W(p + "self_attn.v_proj.bias")
        q = q.reshape(L, H, D).transpose(1, 0, 2)
        k = k.reshape(L, Hkv, D).transpose(1, 0, 2)
        v = v.reshape(L, Hkv, D).transpose(1, 0, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, H // Hkv, 0)
        v = np.repeat(v, H // Hkv, 0)
        s = q @ k.transpose(0, 2, 1) * D ** -0.5 + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(L, H * D)
        x = x + a @ W(p + "self_attn.o_proj.weight").T
        h = rms_norm(x, W(p + "post_attention_layernorm.weight"), cfg["eps"])
        if cfg["fused"]:
            g, u = np.split(h @ W(p + "mlp.gate_up_proj.weight").T, 2, -1)
        else:
            g = h @ W(p + "mlp.gate_proj.weight").T
            u = h @ W(p + "mlp.up_proj.weight").T
        x = x + (silu(g) * u) @ W(p + "mlp.down_proj.weight").T
    x = rms_norm(x, W("model.norm.weight"), cfg["eps"])
    head = W("model.embed_tokens.weight") if cfg["tied"] else W("lm_head.weight")
    return x @ head.T


def make_decoder(out, name, rng, hub, cfg, dtype):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    ck = Checkpoint(rng, dtype)
    hid, F, V = cfg["hidden"], cfg["inter"], cfg["vocab"]
    H, Hkv, D = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    ck.add("model.embed_tokens.weight", (V, hid), 0.5)
    for l in range(cfg["layers"]):
        p = "model.layers.%d." % l
        ck.add(p + "input_layernorm.weight", (hid,), 0.1, 1.0)
        ck.add(p + "post_attention_layernorm.weight", (hid,), 0.1, 1.0)
        if cfg["fused"]:
            ck.add(p + "self_attn.qkv_proj.weight", ((H + 2 * Hkv) * D, hid))
            ck.add(p + "mlp.gate_up_proj.weight", (2 * F, hid))
        else:
            for n, rows in (("q", H * D), ("k", Hkv * D), ("v", Hkv * D)):
                ck.add(p + "self_attn.%s_proj.weight" % n, (rows, hid))
                if cfg["bias"]:
                    ck.add(p + "self_attn.%s_proj.bias" % n, (rows,))
            ck.add(p + "mlp.gate_proj.weight", (F, hid))
            ck.add(p + "mlp.up_proj.weight", (F, hid))
        ck.add(p + "self_attn.o_proj.weight", (hid, H * D))
        ck.add(p + "mlp.down_proj.weight", (hid, F))
    ck.add("model.norm.weight", (hid,), 0.1, 1.0)
    if not cfg["tied"]:
        ck.add("lm_head.weight", (V, hid))
    ck.save(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hub, f, indent=1)

    expected = {}
    for s, seq in enumerate(cfg["seqs"]):
        ids = np.asarray(seq["ids"], dtype=np.int64)
        x = ck.get("model.embed_tokens.weight")[ids].copy()
        img = seq.get("image_rows")
        if img is not None:
            emb = rng.standard_normal((len(img), hid)) * 0.5
            emb = emb.astype(np.float32).astype(np.float64)
            x[img] = emb
            expected["img_rows%d" % s] = i32(img)
            expected["img%d" % s] = f32(emb)
        pos = np.asarray(seq["pos"], dtype=np.int64)
        table = np.asarray(seq.get("table", [0] * len(ids)), dtype=np.int64)
        logits = decoder_forward(cfg, ck.get, x, pos, table)
        expected["ids%d" % s] = i32(ids)
        expected["pos%d" % s] = i32(pos)
        expected["table%d" % s] = i32(table)
        expected["logits%d" % s] = f32(logits)
    write_safetensors(os.path.join(d, "expected.safetensors"), expected)


def text_pos(n, start=0):
    return [list(range(start, start + n))]


def mrope_positions(runs):
    """get_rope_index for runs of ("text", n) and ("image", gh, gw) (merged
    grid): 3 rows of positions."""
    rows = [[], [], []]
    cur = 0
    for r in runs:
        if r[0] == "text":
            for i in range(r[1]):
                for a in range(3):
                    rows[a].append(cur + i)
            cur += r[1]
        else:
            gh, gw = r[1], r[2]
            for a in range(gh):
                for b in range(gw):
                    rows[0].append(cur)
                    rows[1].append(cur + a)
                    rows[2].append(cur + b)
            cur += max(gh, gw)
    return rows


def decoder_cases(out):
    rng = np.random.default_rng(1234)
    V = 96
    # lengths: sequence 0 has 7 prompt + 3 decode tokens, sequence 1 11 + 3
    ids0 = list(rng.integers(0, V, 10))
    ids1 = list(rng.integers(0, V, 14))

    llama_hub = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": V,
                 "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
                 "max_position_embeddings": 128, "rope_theta": 10000.0,
                 "tie_word_embeddings": False}
    cfg = dict(vocab=V, hidden=32, inter=48, layers=2, heads=4, kv_heads=2, head_dim=8,
               eps=1e-5, fused=False, bias=False, tied=False, rope="default", theta=10000.0,
               seqs=[dict(ids=ids0, pos=text_pos(10)), dict(ids=ids1, pos=text_pos(14))])
    make_decoder(out, "llama", rng, llama_hub, cfg, "F32")

    short = [1.0, 1.25, 1.5, 2.0]
    long_ = [1.5, 2.5, 4.0, 8.0]
    phi_hub = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "vocab_size": V,
               "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
               "num_attention_heads": 4, "rms_norm_eps": 1e-5, "max_position_embeddings": 64,
               "original_max_position_embeddings": 8, "rope_theta": 10000.0,
               "rope_scaling": {"type": "su", "short_factor": short, "long_factor": long_},
               "tie_word_embeddings": False}
    # HF picks the table per forward call: the 7-token prompt (and the decode
    # at position 7) use short factors, later decodes long; the 11-token
    # prompt is past 8 positions, so all of sequence 1 uses long factors
    cfg = dict(vocab=V, hidden=32, inter=40, layers=2, heads=4, kv_heads=4, head_dim=8,
               eps=1e-5, fused=True, bias=False, tied=False, rope="longrope", theta=10000.0,
               short=short, long=long_, max_pos=64, orig_max=8,
               seqs=[dict(ids=ids0, pos=text_pos(10), table=[0] * 8 + [1] * 2),
                     dict(ids=ids1, pos=text_pos(14), table=[1] * 14)])
    make_decoder(out, "phi3", rng, phi_hub, cfg, "BF16")

    # head_dim 16 and a small theta spread the frequencies, so that the h
    # and w sections (the slow ones) still move the logits measurably
    qwen_hub = {"architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
                "vocab_size": V, "hidden_size": 32, "intermediate_size": 48,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                "rms_norm_eps": 1e-6, "rope_theta": 10.0, "max_position_embeddings": 256,
                "tie_word_embeddings": True, "hidden_act": "silu",
                "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
    # sequence 0: 3 text tokens, a 2x3 merged image grid, 1 text token, then
    # 3 decode tokens (positions continue after the image run)
    pos0 = mrope_positions([("text", 3), ("image", 2, 3), ("text", 4)])
    cfg = dict(vocab=V, hidden=32, inter=48, layers=2, heads=2, kv_heads=1, head_dim=16,
               eps=1e-6, fused=False, bias=True, tied=True, rope="mrope", theta=10.0,
               mrope_section=[2, 3, 3],
               seqs=[dict(ids=ids0[:3] + [V - 1] * 6 + ids0[3:7], pos=pos0,
                          image_rows=list(range(3, 9))),
                     dict(ids=ids1, pos=text_pos(14) * 3)])
    make_decoder(out, "qwen2vl", rng, qwen_hub, cfg, "F16")


# -------------------------------------------------------------------- CLIP


def layer_norm(x, w, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def clip_case(out):
    rng = np.random.default_rng(99)
    hid, inter, nl, H, S, P, C = 32, 64, 3, 4, 28, 14, 3
    pre = "vision_tower.vision_model."
    d = os.path.join(out, "clip")
    os.makedirs(d, exist_ok=True)
    ck = Checkpoint(rng, "F32")
    g = (S // P) ** 2
    ck.add(pre + "embeddings.patch_embedding.weight", (hid, C, P, P), 0.05)
    ck.add(pre + "embeddings.class_embedding", (hid,), 0.5)
    ck.add(pre + "embeddings.position_embedding.weight", (1 + g, hid), 0.5)
    ck.add(pre + "pre_layrnorm.weight", (hid,), 0.1, 1.0)
    ck.add(pre + "pre_layrnorm.bias", (hid,), 0.1)
    for l in range(nl):
        p = pre + "encoder.layers.%d." % l
        for n in ("layer_norm1", "layer_norm2"):
            ck.add(p + n + ".weight", (hid,), 0.1, 1.0)
            ck.add(p + n + ".bias", (hid,), 0.1)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            ck.add(p + "self_attn.%s.weight" % n, (hid, hid))
            ck.add(p + "self_attn.%s.bias" % n, (hid,), 0.1)
        ck.add(p + "mlp.fc1.weight", (inter, hid))
        ck.add(p + "mlp.fc1.bias", (inter,), 0.1)
        ck.add(p + "mlp.fc2.weight", (hid, inter))
        ck.add(p + "mlp.fc2.bias", (hid,), 0.1)
    ck.add(pre + "post_layernorm.weight", (hid,), 0.1, 1.0)
    ck.add(pre + "post_layernorm.bias", (hid,), 0.1)
    ck.save(d)
    hub = {"model_type": "clip_vision_model", "hidden_size": hid, "intermediate_size": inter,
           "num_hidden_layers": nl, "num_attention_heads": H, "image_size": S,
           "patch_size": P, "projection_dim": 16}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hub, f, indent=1)

    W = ck.get
    n = 2
    px = rng.standard_normal((n, C, S, S)).astype(np.float32)
    # patch conv: (n, C, gh, P, gw, P) contracted with (hid, C, P, P)
    pt = px.astype(np.float64).reshape(n, C, S // P, P, S // P, P)
    emb = np.einsum("ncyiwj,dcij->nywd", pt, W(pre + "embeddings.patch_embedding.weight"))
    emb = emb.reshape(n, g, hid)
    cls = np.broadcast_to(W(pre + "embeddings.class_embedding"), (n, 1, hid))
    x = np.concatenate([cls, emb], 1) + W(pre + "embeddings.position_embedding.weight")
    x = layer_norm(x, W(pre + "pre_layrnorm.weight"), W(pre + "pre_layrnorm.bias"), 1e-5)
    D = hid // H
    states = [x]
    for l in range(nl):
        p = pre + "encoder.layers.%d." % l
        h = layer_norm(x, W(p + "layer_norm1.weight"), W(p + "layer_norm1.bias"), 1e-5)

        def proj(name, t):
            return t @ W(p + "self_attn.%s.weight" % name).T + W(p + "self_attn.%s.bias" % name)

        q = proj("q_proj", h).reshape(n, 1 + g, H, D).transpose(0, 2, 1, 3)
        k = proj("k_proj", h).reshape(n, 1 + g, H, D).transpose(0, 2, 1, 3)
        v = proj("v_proj", h).reshape(n, 1 + g, H, D).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) * D ** -0.5
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(0, 2, 1, 3).reshape(n, 1 + g, hid)
        x = x + proj("out_proj", a)
        h = layer_norm(x, W(p + "layer_norm2.weight"), W(p + "layer_norm2.bias"), 1e-5)
        f = h @ W(p + "mlp.fc1.weight").T + W(p + "mlp.fc1.bias")
        f = f / (1.0 + np.exp(-1.702 * f))
        x = x + f @ W(p + "mlp.fc2.weight").T + W(p + "mlp.fc2.bias")
        states.append(x)
    expected = {"pixels": f32(px)}
    for r in range(nl + 1):
        expected["hidden%d" % r] = f32(states[r].reshape(n * (1 + g), hid))
    write_safetensors(os.path.join(d, "expected.safetensors"), expected)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: numpy_models.py OUTDIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    decoder_cases(out)
    clip_case(out)


if __name__ == "__main__":
    main()
