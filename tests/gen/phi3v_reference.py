"""Our own Phi-3.5-vision reference pieces, written from the published
algorithm as described in /work/shared/reference/models.md §2.2 (no code
copied from the original remote code or from vLLM):

  - the HD transform geometry (transpose if w < h, scale search, resize size,
    white padding to a multiple of the tile size) and the token-count formula;
  - the PIL/numpy part of the HD transform (resize with Pillow BILINEAR, white
    pad, ToTensor + Normalize), runnable without torch;
  - the torch glue (global image by torch bicubic, crops in row-major order,
    2x2 merge, sub_GN after every row, glb_GN, sub-then-global order,
    img_projection with exact GELU) and the "su"/longrope cos/sin;
  - prompt splitting on <|image_N|> with BOS per text chunk and negative
    placeholder ids, the hub-style config/tokenizer/preprocessor files.

torch is imported inside the functions that need it, so check_gen_notorch.py
can test the rest with /usr/bin/python3.
"""
import copy
import math
import re

import numpy as np
from PIL import Image

from fixture_common import CLIP_MEAN, CLIP_STD, added_token, decoder_map

IMAGE_TAG_RE = r"<\|image_\d+\|>"
VOCAB = 32064
BOS, EOS, PAD = 1, 2, 32000
IMAGE_TOKEN_VLLM = 32044  # what vLLM puts where the HF processor puts negative ids
END, ENDOFTEXT = 32007, 32000

# Phi-3 added tokens on top of the Llama-2 vocabulary (tokenizers.md): later
# Phi-3 files set rstrip on the role tokens, so "<|user|>\n" is one token.
PHI_TOKENS = [
    (32000, "<|endoftext|>", False),
    (32001, "<|assistant|>", True),
    (32002, "<|placeholder1|>", True),
    (32003, "<|placeholder2|>", True),
    (32004, "<|placeholder3|>", True),
    (32005, "<|placeholder4|>", True),
    (32006, "<|system|>", True),
    (32007, "<|end|>", True),
    (32008, "<|placeholder5|>", True),
    (32009, "<|placeholder6|>", True),
    (32010, "<|user|>", True),
    (32044, "<|image|>", False),
]

# Phi-3.5-vision chat template (models.md §4).
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + "
                 "message['content'] + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt and "
                 "messages[-1]['role'] != 'assistant' %}{{- '<|assistant|>\\n' -}}{% endif %}")


def factors(n, kind):
    """Deterministic, non-trivial rope factor lists of length n = head_dim/2."""
    if kind == "short":
        return [round(1.0 + 0.25 * (i / (n - 1)) ** 2, 4) for i in range(n)]
    return [round(1.5 ** (8.0 * i / (n - 1)), 4) for i in range(n)]


CONFIGS = {
    # Like the real model: MHA, "su" rope with the original max at top level,
    # num_crops 4, the embedding stored as model.embed_tokens.weight.
    "phi3v-tiny-a": dict(
        text=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=384,
                  original_max_position_embeddings=96, rope_type="su", rope_theta=10000.0,
                  rms_norm_eps=1e-5),
        clip=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  image_size=56, patch_size=14, layer_norm_eps=1e-5),
        num_crops=4, wte_alias=False, explicit_layer_idx=False, seed=20,
        cases=[
            ("<|image_1|>\nWhat is shown in this image?", ["img_150x100"]),
            ("<|image_1|>\nDescribe the colors.", ["img_100x150"]),
            ("<|image_1|>\n<|image_2|>\nCompare the two pictures.", ["img_300x40", "img_56x56"]),
            ("<|image_1|>\nIs it day or night?", ["img_40x300"]),
            ("Write a haiku about the sea.", []),
            ("<|image_1|>\n<|image_2|>\n<|image_3|>\nDescribe each of the three pictures in detail, "
             "one sentence per picture, starting with the widest one and ending with the smallest.",
             ["img_400x300", "img_40x300", "img_30x24"]),
        ]),
    # GQA 2:1, "longrope" spelling, num_crops 16 (Phi-3-vision's value), the
    # embedding stored only under the model.vision_embed_tokens.wte alias,
    # layer_idx/type_feature spelled out in img_processor.
    "phi3v-tiny-b": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=1536,
                  original_max_position_embeddings=192, rope_type="longrope", rope_theta=10000.0,
                  rms_norm_eps=1e-5),
        clip=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                  image_size=56, patch_size=14, layer_norm_eps=1e-5),
        num_crops=16, wte_alias=True, explicit_layer_idx=True, seed=21,
        cases=[
            ("<|image_1|>\nWhat is shown in this image?", ["img_150x100"]),
            ("<|image_1|>\nDescribe the colors.", ["img_100x150"]),
            ("<|image_1|>\n<|image_2|>\nCompare the two pictures.", ["img_300x40", "img_56x56"]),
            ("<|image_1|>\nIs it day or night?", ["img_40x300"]),
            ("Write a haiku about the sea.", []),
            ("<|image_1|>\n<|image_2|>\n<|image_3|>\nDescribe each of the three pictures in detail, "
             "one sentence per picture, starting with the widest one and ending with the smallest.",
             ["img_400x300", "img_40x300", "img_30x24"]),
        ]),
}


def head_dim(spec):
    t = spec["text"]
    return t["hidden_size"] // t["num_attention_heads"]


def tile(spec):
    """HD tile size S (336 in the real model) = the CLIP input size."""
    return spec["clip"]["image_size"]


def grid_side(spec):
    """G = patches per tile side (24 in the real model)."""
    return spec["clip"]["image_size"] // spec["clip"]["patch_size"]


def rope_factors(spec):
    n = head_dim(spec) // 2
    return factors(n, "short"), factors(n, "long")


def attention_factor(spec):
    t = spec["text"]
    scale = t["max_position_embeddings"] / t["original_max_position_embeddings"]
    if scale <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(scale) / math.log(t["original_max_position_embeddings"]))


def hub_config(spec):
    """A hub-style Phi3V config.json. The CLIP tower of the real model is
    hard-coded (ViT-L/14-336) in the remote code; for these tiny checkpoints
    its shape is given in img_processor.vision_config (our extension)."""
    t, c = spec["text"], spec["clip"]
    short, long_ = rope_factors(spec)
    G = grid_side(spec)
    img_processor = {"image_dim_out": c["hidden_size"], "model_name": "tiny-random-clip-vit-patch14-56",
                     "name": "clip_vision_model", "num_img_tokens": (G // 2) ** 2,
                     "vision_config": dict(c, hidden_act="quick_gelu", model_type="clip_vision_model")}
    if spec["explicit_layer_idx"]:
        img_processor.update({"layer_idx": -2, "type_feature": "patch"})
    return {
        "architectures": ["Phi3VForCausalLM"],
        "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_phi3_v.Phi3VConfig",
                     "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM"},
        "bos_token_id": BOS,
        "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb",
                       "projection_cls": "mlp", "use_hd_transform": True,
                       "with_learnable_separator": True},
        "embd_pdrop": 0.0,
        "eos_token_id": EOS,
        "hidden_act": "silu",
        "hidden_size": t["hidden_size"],
        "img_processor": img_processor,
        "initializer_range": 0.02,
        "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": t["max_position_embeddings"],
        "model_type": "phi3_v",
        "num_attention_heads": t["num_attention_heads"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"],
        "original_max_position_embeddings": t["original_max_position_embeddings"],
        "pad_token_id": PAD,
        "resid_pdrop": 0.0,
        "rms_norm_eps": t["rms_norm_eps"],
        "rope_scaling": {"long_factor": long_, "short_factor": short, "type": t["rope_type"]},
        "rope_theta": t["rope_theta"],
        "sliding_window": 262144,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.38.1",
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def preprocessor_config(spec):
    G = grid_side(spec)
    return {"auto_map": {"AutoImageProcessor": "image_processing_phi3_v.Phi3VImageProcessor",
                         "AutoProcessor": "processing_phi3_v.Phi3VProcessor"},
            "do_convert_rgb": True, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "image_processor_type": "Phi3VImageProcessor", "num_crops": spec["num_crops"],
            "num_img_tokens": (G // 2) ** 2, "processor_class": "Phi3VProcessor"}


def generation_config():
    return {"bos_token_id": BOS, "eos_token_id": [END, ENDOFTEXT], "pad_token_id": PAD}


def tokenizer_json(llama_tj):
    """The Llama-2 tokenizer.json plus Phi-3's added tokens."""
    tj = copy.deepcopy(llama_tj)
    added = [t for t in tj["added_tokens"] if t["id"] < 32000]
    for tid, content, rstrip in PHI_TOKENS:
        added.append(added_token(tid, content, special=True, rstrip=rstrip))
    tj["added_tokens"] = added
    return tj


def tokenizer_config(tj):
    return {"add_bos_token": True, "add_eos_token": False,
            "added_tokens_decoder": decoder_map(tj["added_tokens"]), "bos_token": "<s>",
            "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
            "eos_token": "<|endoftext|>", "legacy": False, "model_max_length": 131072,
            "pad_token": "<|endoftext|>", "padding_side": "right",
            "processor_class": "Phi3VProcessor", "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
            "use_default_system_prompt": False}


# ---------------------------------------------------------------- HD transform

def hd_geometry(width, height, num_crops, S):
    """Geometry of the HD transform for a PIL image of size (width, height).
    Returns the transposition flag, the scale found, the resize target (in
    the possibly transposed orientation), the white padding rows, and the
    padded size H x W with its crop grid hc x wc in the original orientation."""
    transposed = width < height
    w, h = (height, width) if transposed else (width, height)
    ratio = w / h
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_w = int(scale * S)
    new_h = int(new_w / ratio)
    tar = int(math.ceil(new_h / S) * S)
    top = int((tar - new_h) / 2)
    bottom = tar - new_h - top
    H, W = (new_w, tar) if transposed else (tar, new_w)
    return {"transposed": transposed, "scale": scale, "resize_w": new_w, "resize_h": new_h,
            "pad_top": top, "pad_bottom": bottom, "H": H, "W": W, "hc": H // S, "wc": W // S}


def num_img_tokens(H, W, S, G):
    """models.md §2.2 step 11 with 144 = (G/2)^2 and 12 = G/2."""
    g = G // 2
    return (H // S * (W // S) + 1) * g * g + 1 + (H // S + 1) * g


def tokens_by_layout(hc, wc, G):
    """The same count from the feature layout: sub rows with a separator each,
    glb_GN, then the global image's rows with separators."""
    g = G // 2
    return hc * g * (wc * g + 1) + 1 + g * (g + 1)


def hd_image_pil(img, num_crops, S):
    """Steps 1-6: RGB, transpose if w < h, resize with Pillow BILINEAR (what
    torchvision's resize does with a PIL image), white padding top/bottom,
    transpose back. Returns the padded PIL image and its geometry."""
    img = img.convert("RGB")
    g = hd_geometry(img.size[0], img.size[1], num_crops, S)
    if g["transposed"]:
        img = img.transpose(Image.Transpose.TRANSPOSE)
    img = img.resize((g["resize_w"], g["resize_h"]), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (g["resize_w"], g["resize_h"] + g["pad_top"] + g["pad_bottom"]),
                       (255, 255, 255))
    canvas.paste(img, (0, g["pad_top"]))
    if g["transposed"]:
        canvas = canvas.transpose(Image.Transpose.TRANSPOSE)
    if canvas.size != (g["W"], g["H"]):
        raise AssertionError("HD image %s, geometry says %dx%d" % (canvas.size, g["W"], g["H"]))
    return canvas, g


def normalize_np(pil):
    """Step 7 in float32 numpy: /255 then (x - mean) / std, as (3, H, W)."""
    x = np.asarray(pil, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def hd_normalized_np(img, num_crops, S):
    pil, g = hd_image_pil(img, num_crops, S)
    return normalize_np(pil), g


def hd_normalized_torchvision(img, num_crops, S):
    """The same steps through torchvision, as the published processor does
    them (F.resize on a PIL image, F.pad with white, ToTensor, Normalize)."""
    import torchvision.transforms.functional as TF
    img = img.convert("RGB")
    g = hd_geometry(img.size[0], img.size[1], num_crops, S)
    if g["transposed"]:
        img = img.transpose(Image.Transpose.TRANSPOSE)
    img = TF.resize(img, [g["resize_h"], g["resize_w"]])
    img = TF.pad(img, [0, g["pad_top"], 0, g["pad_bottom"]], fill=[255, 255, 255])
    if g["transposed"]:
        img = img.transpose(Image.Transpose.TRANSPOSE)
    t = TF.normalize(TF.to_tensor(img), CLIP_MEAN, CLIP_STD)
    return t, g


def pixel_values(hd_list, num_crops, S):
    """Steps 8-10 for a list of normalized HD tensors (3, H, W): global image by
    torch bicubic (align_corners False, no antialias), crops row-major, zero
    padding to num_crops + 1. Returns (n, num_crops+1, 3, S, S), image_sizes."""
    import torch
    import torch.nn.functional as F
    out, sizes = [], []
    for hd in hd_list:
        H, W = hd.shape[1], hd.shape[2]
        glob = F.interpolate(hd[None].float(), size=(S, S), mode="bicubic", align_corners=False)
        crops = hd.reshape(3, H // S, S, W // S, S).permute(1, 3, 0, 2, 4).reshape(-1, 3, S, S)
        allc = torch.cat([glob.to(hd.dtype), crops], 0)
        if allc.shape[0] < num_crops + 1:
            allc = torch.cat([allc, torch.zeros(num_crops + 1 - allc.shape[0], 3, S, S, dtype=allc.dtype)], 0)
        out.append(allc)
        sizes.append([H, W])
    return torch.stack(out), torch.tensor(sizes, dtype=torch.int64)


# ---------------------------------------------------------------- feature glue

def merge2x2(x, hc, wc):
    """(hc*wc, G*G, C) patch features of row-major crops -> (hc*G/2, wc*G/2, 4C);
    each merged token stacks its 2x2 patches r0c0, r0c1, r1c0, r1c1."""
    n, L, C = x.shape
    G = int(round(L ** 0.5))
    g = G // 2
    x = x.reshape(n, g, 2, g, 2, C).permute(0, 1, 3, 2, 4, 5).reshape(n, g, g, 4 * C)
    return x.reshape(hc, wc, g, g, 4 * C).permute(0, 2, 1, 3, 4).reshape(hc * g, wc * g, 4 * C)


def add_newline(x, sub_gn):
    """Append the learnable separator after every row; flatten to tokens."""
    import torch
    rows, _, D = x.shape
    return torch.cat([x, sub_gn.reshape(1, 1, D).expand(rows, 1, D)], 1).reshape(-1, D)


def image_features(feats, image_sizes, S, sub_gn, glb_gn):
    """feats: (n_images, num_crops+1, G*G, C) CLIP patch features (CLS dropped).
    Returns the per-image token rows (before projection), order sub -> glb_GN
    -> global, padding crops ignored."""
    import torch
    out = []
    for i in range(feats.shape[0]):
        H, W = int(image_sizes[i][0]), int(image_sizes[i][1])
        hc, wc = H // S, W // S
        sub = add_newline(merge2x2(feats[i, 1:1 + hc * wc], hc, wc), sub_gn)
        glb = add_newline(merge2x2(feats[i, :1], 1, 1), sub_gn)
        out.append(torch.cat([sub, glb_gn.reshape(1, -1), glb], 0))
    return out


def su_cos_sin(positions, spec, force=None):
    """cos/sin of the "su"/longrope rotary embedding for 1-D positions: long
    factors when max(position)+1 > original_max_position_embeddings, short
    otherwise (or as force = "short"/"long" says); both scaled by the
    attention factor. Returns two (len, head_dim) float32 tensors."""
    import torch
    t = spec["text"]
    d = head_dim(spec)
    short, long_ = rope_factors(spec)
    use_long = int(positions.max()) + 1 > t["original_max_position_embeddings"]
    if force is not None:
        use_long = force == "long"
    ext = long_ if use_long else short
    ext = torch.tensor(ext, dtype=torch.float32)
    inv = 1.0 / (ext * t["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    freqs = positions.float()[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], -1)
    af = attention_factor(spec)
    return emb.cos() * af, emb.sin() * af


# ---------------------------------------------------------------- prompts

def split_prompt(text):
    """Text chunks around <|image_N|> tags and the tags' image numbers, which
    must be 1..n (each used at least once)."""
    chunks = re.split(IMAGE_TAG_RE, text)
    ids = [int(tag[len("<|image_"):-2]) for tag in re.findall(IMAGE_TAG_RE, text)]
    if sorted(set(ids)) != list(range(1, len(set(ids)) + 1)):
        raise ValueError("image tags must be numbered 1..n: %s" % ids)
    return chunks, ids


def expand_prompt(chunk_ids, image_ids, counts):
    """Chunk ids (each starting with BOS) with [-k] * counts[k-1] between them."""
    out = []
    for i, c in enumerate(chunk_ids):
        out += list(c)
        if i < len(image_ids):
            out += [-image_ids[i]] * counts[image_ids[i] - 1]
    return out


def rope_regime(prompt_len, steps, orig):
    """Which factors every forward of a greedy run uses: prompt_len + j tokens
    for j < steps. "mixed" would make cached and uncached runs disagree."""
    if prompt_len + steps - 1 <= orig:
        return "short"
    if prompt_len > orig:
        return "long"
    return "mixed"


def clip_hub_name(k):
    """CLIPVisionModel state-dict name (with or without vision_model.) -> hub."""
    if k.startswith("vision_model."):
        k = k[len("vision_model."):]
    return "model.vision_embed_tokens.img_processor.vision_model." + k
