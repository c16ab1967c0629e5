#!/usr/bin/python3
"""Self-test of the torch-free parts of the Qwen2-VL and Phi-3.5-vision
fixture generators (run with /usr/bin/python3: numpy, PIL, jinja2, no torch):

    /usr/bin/python3 tests/gen/check_gen_notorch.py [scratch_dir]

Checks smart_resize and M-RoPE positions against the worked examples in
models.md, the HD-transform geometry and token counts, the PIL part of the HD
transform, chat-template rendering, the edited tokenizer files and configs,
and that the test images are made deterministically.
"""
import json
import os
import sys
import tempfile

import numpy as np
from PIL import Image

sys.dont_write_bytecode = True  # leave no __pycache__ in the checkout
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
ROOT = os.path.dirname(os.path.dirname(HERE))

import fixture_common as fc  # noqa: E402
import phi3v_reference as pr  # noqa: E402
import qwen2vl_reference as qr  # noqa: E402

FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def test_qwen():
    # models.md §2.3 results, (h, w) with max_pixels 28*28*1280
    big = 28 * 28 * 1280
    for (h, w), want in [((100, 150), (112, 140)), ((28, 28), (56, 56)), ((500, 20), (504, 28)),
                         ((1000, 1000), (980, 980)), ((333, 777), (336, 784)), ((70, 42), (56, 56))]:
        got = qr.smart_resize(h, w, max_pixels=big)
        check(got == want, "smart_resize(%d,%d) = %s (want %s)" % (h, w, got, want))
    check(qr.image_tokens(qr.grid_thw(150, 100)) == 20, "150x100 image -> 20 tokens")
    # M-RoPE example of models.md: 9 text + 20 image (grid 8x10) + 10 text
    ids = [1] * 9 + [qr.IMAGE_PAD] * 20 + [2] * 10
    pos, delta = qr.mrope_positions(ids, [[1, 8, 10]])
    t = list(range(9)) + [9] * 20 + list(range(14, 24))
    h = list(range(9)) + [9] * 5 + [10] * 5 + [11] * 5 + [12] * 5 + list(range(14, 24))
    w = list(range(9)) + list(range(9, 14)) * 4 + list(range(14, 24))
    check(pos == [t, h, w], "mrope positions of the models.md example")
    check(delta == -15, "rope delta -15 (got %d)" % delta)
    # two images back to back with text between, and a tall image (gh > gw)
    ids = [5, qr.VISION_START] + [qr.IMAGE_PAD] * 2 + [qr.VISION_END, qr.VISION_START] + \
        [qr.IMAGE_PAD] * 3 + [qr.VISION_END, 7]
    pos, delta = qr.mrope_positions(ids, [[1, 2, 4], [1, 6, 2]])
    check(pos[1] == [0, 1, 2, 2, 4, 5, 6, 7, 8, 9, 10] and pos[2] == [0, 1, 2, 3, 4, 5, 6, 6, 6, 9, 10],
          "mrope positions, two images (h %s, w %s)" % (pos[1], pos[2]))
    check(delta == 0, "two-image delta 0 (got %d)" % delta)
    check(qr.expand_ids([1, qr.IMAGE_PAD, 2, qr.IMAGE_PAD], [[1, 2, 2], [1, 4, 2]]) ==
          [1, qr.IMAGE_PAD, 2] + [qr.IMAGE_PAD] * 2, "expand_ids")
    # grids of the case images
    for name in qr.case_images():
        w_, h_ = fc.IMAGE_SIZES[name]
        g = qr.grid_thw(w_, h_)
        area = g[1] * g[2] * 196
        check(g[1] % 2 == 0 and g[2] % 2 == 0 and qr.MIN_PIXELS <= area <= qr.MAX_PIXELS,
              "qwen %s -> grid %s, %d tokens" % (name, g, qr.image_tokens(g)))
    # template
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    check(fc.render_chat(qr.CHAT_TEMPLATE, msgs) == qr.RENDERED_EXAMPLE, "qwen chat template renders the models.md example")
    r = fc.render_chat(qr.CHAT_TEMPLATE, qr.messages_for("Hi", None))
    check(r == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
          "<|im_start|>assistant\n", "qwen text-only render")
    r = fc.render_chat(qr.CHAT_TEMPLATE, qr.messages_for("Cmp", ["a", "b"]))
    check(r.count("<|vision_start|><|image_pad|><|vision_end|>") == 2, "qwen two-image render")
    # configs
    for name, spec in qr.CONFIGS.items():
        cfg = qr.hub_config(spec)
        json.dumps(cfg)
        hd = qr.head_dim(spec)
        check(sum(cfg["rope_scaling"]["mrope_section"]) == hd // 2,
              "%s mrope_section %s sums to head_dim/2 = %d" % (name, cfg["rope_scaling"]["mrope_section"], hd // 2))
        check(cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0, name + " GQA divides")
        v = cfg["vision_config"]
        check(v["embed_dim"] % v["num_heads"] == 0 and (v["embed_dim"] // v["num_heads"]) % 4 == 0,
              name + " vision head_dim divisible by 4 (2-D rotary)")
        emb = qr.VOCAB * cfg["hidden_size"] * 2 * (1 if cfg["tie_word_embeddings"] else 2)
        print("     %s: embedding(+lm_head) %.2f MB bf16" % (name, emb / 1e6))
        json.dumps(qr.preprocessor_config(spec))
    check(qr.hub_name("model.language_model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight",
          "qwen hub name (lm)")
    check(qr.hub_name("model.visual.merger.ln_q.weight") == "visual.merger.ln_q.weight", "qwen hub name (visual)")
    tj = fc.read_json(os.path.join(ROOT, "tests/data/tok/qwen2/tokenizer.json"))
    tc = qr.tokenizer_config(tj)
    check(tc["additional_special_tokens"][0] == "<|im_start|>" and tc["additional_special_tokens"][-1] == "<|video_pad|>"
          and len(tc["additional_special_tokens"]) == 13, "qwen additional_special_tokens")
    ids = {t["content"]: t["id"] for t in tj["added_tokens"]}
    check(ids["<|image_pad|>"] == qr.IMAGE_PAD and ids["<|vision_start|>"] == qr.VISION_START and
          ids["<|im_end|>"] == qr.EOS, "qwen special ids in the tokenizer")
    check(max(ids.values()) < qr.VOCAB, "qwen vocab %d covers every tokenizer id (max %d)" % (qr.VOCAB, max(ids.values())))


def test_phi(scratch):
    # geometry, tile 56, num_crops 4 (models.md shapes) and 16
    for nc, S, expect in [(4, 56, {(150, 100): 27, (100, 150): 27, (300, 40): 25, (56, 56): 27, (40, 300): 31}),
                          (16, 56, {(150, 100): 61, (100, 150): 63, (300, 40): 75, (56, 56): 79, (40, 300): 87}),
                          (16, 336, {(1000, 1000): None, (336, 336): None})]:
        G = S // 14
        for (w, h), want in expect.items():
            g = pr.hd_geometry(w, h, nc, S)
            n = pr.num_img_tokens(g["H"], g["W"], S, G)
            ok = n == pr.tokens_by_layout(g["hc"], g["wc"], G) and g["hc"] * g["wc"] <= nc and \
                g["H"] % S == 0 and g["W"] % S == 0 and (want is None or n == want)
            check(ok, "phi nc=%d S=%d %dx%d -> hd %dx%d crops %dx%d tokens %d" %
                  (nc, S, w, h, g["W"], g["H"], g["wc"], g["hc"], n))
    # the real model: a 336x336 image with num_crops 16 -> 4x4 crops (upscaled)
    g = pr.hd_geometry(336, 336, 16, 336)
    check((g["hc"], g["wc"]) == (4, 4) and pr.num_img_tokens(g["H"], g["W"], 336, 24) == 17 * 144 + 1 + 5 * 12,
          "phi real size: 336x336 nc=16 -> 4x4 crops, %d tokens" % pr.num_img_tokens(g["H"], g["W"], 336, 24))
    # the PIL part: padding is white, on top/bottom or left/right when transposed
    white = (1.0 - np.asarray(fc.CLIP_MEAN, np.float32)) / np.asarray(fc.CLIP_STD, np.float32)
    for name in ["img_150x100", "img_100x150", "img_300x40", "img_40x300", "img_56x56"]:
        img = Image.fromarray(fc.image_array(name), "RGB")
        x, g = pr.hd_normalized_np(img, 4, 56)
        ok = x.shape == (3, g["H"], g["W"]) and x.dtype == np.float32
        if g["pad_top"]:
            band = x[:, :, :g["pad_top"]] if g["transposed"] else x[:, :g["pad_top"], :]
            ok = ok and np.allclose(band, white[:, None, None], atol=1e-6)
        if g["pad_bottom"]:
            band = x[:, :, -g["pad_bottom"]:] if g["transposed"] else x[:, -g["pad_bottom"]:, :]
            ok = ok and np.allclose(band, white[:, None, None], atol=1e-6)
        inner = x[:, :, g["pad_top"]:g["W"] - g["pad_bottom"]] if g["transposed"] else \
            x[:, g["pad_top"]:g["H"] - g["pad_bottom"], :]
        ok = ok and not np.allclose(inner, white[:, None, None], atol=1e-3)
        check(ok, "phi HD pixels %s: %s pad %d/%d transposed=%s" % (name, x.shape, g["pad_top"],
                                                                  g["pad_bottom"], g["transposed"]))
    # transposition really swaps axes: a tall image's content keeps its place
    a = fc.image_array("img_40x300")
    x, g = pr.hd_normalized_np(Image.fromarray(a, "RGB"), 4, 56)
    # the red block sits top-left in the source; it must stay top-left
    r = x[0] * fc.CLIP_STD[0] + fc.CLIP_MEAN[0]
    gch = x[1] * fc.CLIP_STD[1] + fc.CLIP_MEAN[1]
    left = g["pad_top"]
    check(r[2, left + 2] > 0.7 and gch[2, left + 2] < 0.4, "phi transposed image keeps orientation")
    # prompts
    chunks, ids = pr.split_prompt("<|user|>\n<|image_1|>\n<|image_2|>\nHi<|end|>\n<|assistant|>\n")
    check(chunks == ["<|user|>\n", "\n", "\nHi<|end|>\n<|assistant|>\n"] and ids == [1, 2], "phi split_prompt")
    check(pr.expand_prompt([[1, 10], [1, 11], [1, 12]], [1, 2], [2, 3]) == [1, 10, -1, -1, 1, 11, -2, -2, -2, 1, 12],
          "phi expand_prompt")
    try:
        pr.split_prompt("<|image_2|>")
        check(False, "phi split_prompt rejects image_2 without image_1")
    except ValueError:
        check(True, "phi split_prompt rejects image_2 without image_1")
    check(pr.rope_regime(42, 12, 96) == "short" and pr.rope_regime(97, 12, 96) == "long" and
          pr.rope_regime(90, 12, 96) == "mixed" and pr.rope_regime(85, 12, 96) == "short", "phi rope_regime")
    r = fc.render_chat(pr.CHAT_TEMPLATE, [{"role": "user", "content": "<|image_1|>\nWhat?"}])
    check(r == "<|user|>\n<|image_1|>\nWhat?<|end|>\n<|assistant|>\n", "phi chat template")
    # configs and tokenizer files
    llama = fc.read_json(os.path.join(ROOT, "tests/data/tok/llama2/tokenizer.json"))
    tj = pr.tokenizer_json(llama)
    ids = {t["content"]: t for t in tj["added_tokens"]}
    check(ids["<|user|>"]["id"] == 32010 and ids["<|user|>"]["rstrip"] and ids["<|end|>"]["id"] == 32007
          and ids["<|image|>"]["id"] == 32044 and ids["<s>"]["id"] == 1 and len(tj["model"]["vocab"]) == 32000,
          "phi tokenizer.json added tokens")
    tc = pr.tokenizer_config(tj)
    check(tc["added_tokens_decoder"]["32010"]["content"] == "<|user|>" and tc["chat_template"] == pr.CHAT_TEMPLATE,
          "phi tokenizer_config")
    path = os.path.join(scratch, "phi_tokenizer.json")
    fc.write_json(path, tj, indent=None)
    check(fc.read_json(path)["added_tokens"][-1]["id"] == 32044, "phi tokenizer.json round-trips")
    for name, spec in pr.CONFIGS.items():
        cfg = pr.hub_config(spec)
        json.dumps(cfg)
        n = pr.head_dim(spec) // 2
        rs = cfg["rope_scaling"]
        check(len(rs["short_factor"]) == n and len(rs["long_factor"]) == n and
              cfg["img_processor"]["image_dim_out"] == spec["clip"]["hidden_size"],
              "%s config: %d rope factors, short %s long %s, attention factor %.6f" %
              (name, n, rs["short_factor"], rs["long_factor"], pr.attention_factor(spec)))
        emb = pr.VOCAB * cfg["hidden_size"] * 2 * 2
        print("     %s: embedding + lm_head %.2f MB bf16" % (name, emb / 1e6))
        S, G, nc = pr.tile(spec), pr.grid_side(spec), spec["num_crops"]
        for text, imgs in spec["cases"]:
            counts = []
            for im in imgs:
                w, h = fc.IMAGE_SIZES[im]
                g = pr.hd_geometry(w, h, nc, S)
                counts.append(pr.num_img_tokens(g["H"], g["W"], S, G))
            print("     %s %-40r image tokens %s" % (name, text[:40], counts))
    check(pr.clip_hub_name("vision_model.encoder.layers.0.mlp.fc1.weight") ==
          "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.0.mlp.fc1.weight", "phi clip hub name")
    check(pr.clip_hub_name("embeddings.class_embedding") ==
          "model.vision_embed_tokens.img_processor.vision_model.embeddings.class_embedding", "phi clip hub name (v5)")
    check(abs(pr.attention_factor({"text": {"max_position_embeddings": 131072,
                                            "original_max_position_embeddings": 4096}}) - 1.190238) < 1e-6, "phi attention factor of the real model ~1.190238")


def numpy_torch_shim():
    """A few torch calls on numpy arrays (reshape, permute, expand, cat, stack,
    zeros), enough for the glue's layout code; F.interpolate fills -7."""
    import types

    class T:
        def __init__(self, a):
            self.a = np.asarray(a)
        shape = property(lambda self: self.a.shape)
        dtype = property(lambda self: self.a.dtype)

        def reshape(self, *sh):
            return T(self.a.reshape(*sh))

        def permute(self, *p):
            return T(self.a.transpose(*p))

        def expand(self, *sh):
            return T(np.broadcast_to(self.a, sh))

        def float(self):
            return T(self.a.astype(np.float32))

        def to(self, *a, **k):
            return self

        def __getitem__(self, i):
            return T(self.a[i])

        def tolist(self):
            return self.a.tolist()

    torch = types.ModuleType("torch")
    torch.cat = lambda xs, d=0: T(np.concatenate([x.a for x in xs], d))
    torch.stack = lambda xs: T(np.stack([x.a for x in xs]))
    torch.zeros = lambda *sh, dtype=None: T(np.zeros(sh, np.float32))
    torch.tensor = lambda x, dtype=None: T(np.array(x))
    torch.int64 = np.int64
    F = types.ModuleType("torch.nn.functional")
    F.interpolate = lambda x, size, mode, align_corners: T(np.full(x.shape[:2] + tuple(size), -7.0, np.float32))
    nn = types.ModuleType("torch.nn")
    nn.functional = F
    torch.nn = nn
    sys.modules.update({"torch": torch, "torch.nn": nn, "torch.nn.functional": F})
    return T


def test_glue_layout():
    """The HD feature layout (2x2 merge, separators, glb_GN, sub then global)
    and the crop order of pixel_values against plain loops. Uses torch when
    it is installed, else the numpy shim."""
    try:
        import torch
        wrap, unwrap, shim = torch.from_numpy, (lambda t: t.numpy()), False
    except ImportError:
        T = numpy_torch_shim()
        wrap, unwrap, shim = T, (lambda t: t.a), True
    G, C, S = 4, 3, 56
    g = G // 2
    rng = np.random.default_rng(0)
    for hc, wc in [(2, 2), (1, 4), (4, 1), (3, 4)]:
        feats = rng.standard_normal((1, hc * wc + 1, G * G, C)).astype(np.float32)
        sub = rng.standard_normal((1, 1, 1, 4 * C)).astype(np.float32)
        glb = rng.standard_normal((1, 1, 4 * C)).astype(np.float32)
        got = unwrap(pr.image_features(wrap(feats), [[hc * S, wc * S]], S, wrap(sub), wrap(glb))[0])

        def merged(crop, a, b):  # patches (2a+dy, 2b+dx) of a crop, r0c0 r0c1 r1c0 r1c1
            f = feats[0, crop].reshape(G, G, C)
            return np.concatenate([f[2 * a, 2 * b], f[2 * a, 2 * b + 1], f[2 * a + 1, 2 * b], f[2 * a + 1, 2 * b + 1]])
        rows = []
        for R in range(hc * g):
            for Cc in range(wc * g):
                ci, a = divmod(R, g)
                cj, b = divmod(Cc, g)
                rows.append(merged(1 + ci * wc + cj, a, b))
            rows.append(sub.reshape(-1))
        rows.append(glb.reshape(-1))
        for a in range(g):
            for b in range(g):
                rows.append(merged(0, a, b))
            rows.append(sub.reshape(-1))
        want = np.stack(rows)
        check(got.shape == want.shape and np.array_equal(got, want) and
              got.shape[0] == pr.num_img_tokens(hc * S, wc * S, S, G),
              "glue layout %dx%d crops: %d rows%s" % (hc, wc, got.shape[0], " (numpy shim)" if shim else ""))
    H, W = 2 * S, 3 * S
    hd = np.arange(3 * H * W, dtype=np.float32).reshape(3, H, W)
    pv, sizes = pr.pixel_values([wrap(hd)], 8, S)
    pv = unwrap(pv)
    ok = pv.shape == (1, 9, 3, S, S) and (pv[0, 7:] == 0).all() and sizes.tolist() == [[H, W]]
    if shim:
        ok = ok and (pv[0, 0] == -7).all()
    for i in range(2):
        for j in range(3):
            ok = ok and np.array_equal(pv[0, 1 + i * 3 + j], hd[:, i * S:(i + 1) * S, j * S:(j + 1) * S])
    check(ok, "pixel_values: global first, crops row-major, zero padding")
    if shim:
        for k in ("torch", "torch.nn", "torch.nn.functional"):
            sys.modules.pop(k, None)


def test_images(scratch):
    p1 = fc.make_images(os.path.join(scratch, "i1"), ["img_300x40", "img_56x56"])
    p2 = fc.make_images(os.path.join(scratch, "i2"), ["img_56x56"])
    a = np.asarray(Image.open(p1["img_56x56"]))
    b = np.asarray(Image.open(p2["img_56x56"]))
    check(np.array_equal(a, b) and a.shape == (56, 56, 3), "images are deterministic and independent of the set")
    for name, (w, h) in fc.IMAGE_SIZES.items():
        check(fc.image_array(name).shape == (h, w, 3), "image %s is %dx%d" % (name, w, h))


def main():
    scratch = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    os.makedirs(scratch, exist_ok=True)
    test_qwen()
    test_phi(scratch)
    test_glue_layout()
    test_images(scratch)
    print("%d failure(s)" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
