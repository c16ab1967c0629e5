"""Torch-free parts of the Qwen2-VL fixture generator (our own code, written
from the algorithm in /work/shared/reference/models.md §2.3): the tiny
configurations, hub-style config/preprocessor/tokenizer files, the chat
template, smart_resize and token counts, placeholder expansion and the 3-D
M-RoPE position ids. make_qwen2vl_fixtures.py imports this module and checks
its predictions against transformers 5.17; check_gen_notorch.py tests it
without torch.
"""
import math

from fixture_common import CLIP_MEAN, CLIP_STD, decoder_map

VISION_START, VISION_END, VISION_PAD, IMAGE_PAD, VIDEO_PAD = 151652, 151653, 151654, 151655, 151656
BOS, EOS, PAD = 151643, 151645, 151643
IM_START = 151644
# Largest id the tokenizer produces is 151668 (Qwen3's extra added tokens);
# 151680 = 64 * 2370 keeps the embedding as small as possible. See the header
# of make_qwen2vl_fixtures.py for the size budget.
VOCAB = 151680

MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 64
PATCH, MERGE, TEMPORAL = 14, 2, 2

# Qwen2-VL-2B/7B-Instruct chat template (models.md §4), character for character.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# models.md §4: what the template gives for one image and "What is this?".
RENDERED_EXAMPLE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n"
                    "<|im_start|>assistant\n")

CONFIGS = {
    # Tied embeddings (lm_head absent from the file), GQA 2:1, head_dim 12 with
    # three different section sizes (t < h < w), so any mix-up of the axes or
    # of the section order changes the logits.
    "qwen2vl-tiny-a": dict(
        text=dict(hidden_size=24, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, rms_norm_eps=1e-6, rope_theta=1000000.0,
                  max_position_embeddings=1024, mrope_section=[1, 2, 3]),
        vision=dict(depth=2, embed_dim=32, mlp_ratio=2, num_heads=4),
        tie=True, preproc_size_key=False, seed=10),
    # Untied lm_head, three layers, head_dim 8 with unequal h/w sections, another
    # rope theta; vision head_dim 12 (3 rotary frequencies per axis).
    "qwen2vl-tiny-b": dict(
        text=dict(hidden_size=16, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                  num_key_value_heads=1, rms_norm_eps=1e-6, rope_theta=10000.0,
                  max_position_embeddings=2048, mrope_section=[1, 2, 1]),
        vision=dict(depth=3, embed_dim=48, mlp_ratio=4, num_heads=4),
        tie=False, preproc_size_key=True, seed=11),
}

# (user content, image names). A string content is a text-only message.
CASES = [
    ("What is shown in this image?", ["img_150x100"]),
    ("Describe the colors.", ["img_100x150"]),
    ("Compare the two pictures.", ["img_300x40", "img_56x56"]),
    ("Is it day or night?", ["img_400x300"]),
    ("Which one is taller?", ["img_40x300", "img_30x24"]),
    ("Write a haiku about the sea.", None),
]


def case_images():
    return sorted({n for _, imgs in CASES if imgs for n in imgs})


def messages_for(text, images):
    if images is None:
        return [{"role": "user", "content": text}]
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def head_dim(spec):
    t = spec["text"]
    return t["hidden_size"] // t["num_attention_heads"]


def hub_config(spec):
    """A hub-style (transformers 4.x) Qwen2-VL config.json: text fields flat at
    the top level, rope_scaling {"type": "mrope"}, vision_config as published."""
    t, v = spec["text"], spec["vision"]
    if sum(t["mrope_section"]) * 2 != head_dim(spec):
        raise ValueError("mrope_section must sum to head_dim/2")
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "vision_start_token_id": VISION_START,
        "vision_end_token_id": VISION_END,
        "vision_token_id": VISION_PAD,
        "image_token_id": IMAGE_PAD,
        "video_token_id": VIDEO_PAD,
        "hidden_act": "silu",
        "hidden_size": t["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": t["intermediate_size"],
        "max_position_embeddings": t["max_position_embeddings"],
        "max_window_layers": t["num_hidden_layers"],
        "model_type": "qwen2_vl",
        "num_attention_heads": t["num_attention_heads"],
        "num_hidden_layers": t["num_hidden_layers"],
        "num_key_value_heads": t["num_key_value_heads"],
        "rms_norm_eps": t["rms_norm_eps"],
        "rope_theta": t["rope_theta"],
        "sliding_window": 32768,
        "tie_word_embeddings": spec["tie"],
        "torch_dtype": "bfloat16",
        "transformers_version": "4.41.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": v["depth"], "embed_dim": v["embed_dim"], "mlp_ratio": v["mlp_ratio"],
            "num_heads": v["num_heads"], "in_chans": 3, "hidden_size": t["hidden_size"],
            "patch_size": PATCH, "spatial_merge_size": MERGE, "spatial_patch_size": PATCH,
            "temporal_patch_size": TEMPORAL},
        "rope_scaling": {"type": "mrope", "mrope_section": list(t["mrope_section"])},
        "vocab_size": VOCAB,
    }


def preprocessor_config(spec):
    pp = {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS, "patch_size": PATCH,
          "temporal_patch_size": TEMPORAL, "merge_size": MERGE, "image_mean": CLIP_MEAN,
          "image_std": CLIP_STD, "image_processor_type": "Qwen2VLImageProcessor",
          "processor_class": "Qwen2VLProcessor"}
    if spec["preproc_size_key"]:  # the form later hub files and transformers 5 write
        pp.update({"size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
                   "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
                   "do_resize": True, "rescale_factor": 1.0 / 255, "resample": 3})
    return pp


def tokenizer_config(tokenizer_json):
    """Qwen2-VL's tokenizer_config.json fields, with the added tokens of the
    tokenizer.json that travels with it and the Qwen2-VL chat template."""
    added = tokenizer_json["added_tokens"]
    specials = [t["content"] for t in added if t["special"] and BOS < t["id"] <= VIDEO_PAD]
    return {"add_prefix_space": False, "added_tokens_decoder": decoder_map(added),
            "additional_special_tokens": specials, "bos_token": None,
            "chat_template": CHAT_TEMPLATE, "clean_up_tokenization_spaces": False,
            "eos_token": "<|im_end|>", "errors": "replace", "model_max_length": 32768,
            "pad_token": "<|endoftext|>", "padding_side": "left",
            "processor_class": "Qwen2VLProcessor", "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}


def generation_config():
    return {"bos_token_id": BOS, "eos_token_id": [EOS, BOS], "pad_token_id": PAD}


def smart_resize(height, width, factor=PATCH * MERGE, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS):
    """transformers' smart_resize: dims multiple of factor, area within limits.
    Python round() is round-half-to-even, as in the reference."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError("aspect ratio above 200")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def grid_thw(width, height):
    """[t, h, w] patch grid of one image of PIL size (width, height)."""
    rh, rw = smart_resize(height, width)
    return [1, rh // PATCH, rw // PATCH]


def image_tokens(grid):
    return grid[0] * grid[1] * grid[2] // (MERGE * MERGE)


def expand_ids(ids, grids):
    """Replace the k-th <|image_pad|> with image_tokens(grids[k]) copies."""
    out, k = [], 0
    for t in ids:
        if t == IMAGE_PAD:
            out += [IMAGE_PAD] * image_tokens(grids[k])
            k += 1
        else:
            out.append(t)
    if k != len(grids):
        raise ValueError("prompt has %d image pads for %d images" % (k, len(grids)))
    return out


def mrope_positions(ids, grids):
    """3-D M-RoPE position ids [[t...], [h...], [w...]] and the rope delta of an
    expanded prompt: text runs advance all three axes together; an image run
    of merged grid gh x gw gets (cur, cur+a, cur+b) and moves cur by max(gh, gw)."""
    pos = [[], [], []]
    cur, i, k, n = 0, 0, 0, len(ids)
    while i < n:
        if ids[i] != IMAGE_PAD:
            for a in range(3):
                pos[a].append(cur)
            cur += 1
            i += 1
            continue
        t, h, w = grids[k]
        k += 1
        gh, gw = h // MERGE, w // MERGE
        cnt = t * gh * gw
        if ids[i:i + cnt] != [IMAGE_PAD] * cnt:
            raise ValueError("image run shorter than its grid")
        for tt in range(t):
            for a in range(gh):
                for b in range(gw):
                    pos[0].append(cur + tt)
                    pos[1].append(cur + a)
                    pos[2].append(cur + b)
        cur += max(gh, gw)
        i += cnt
    delta = (max(max(p) for p in pos) + 1 - n) if n else 0
    return pos, delta


def hub_name(k):
    """transformers 5.17 in-memory parameter name -> Qwen2-VL hub name."""
    if k.startswith("model.language_model."):
        return "model." + k[len("model.language_model."):]
    if k.startswith("model.visual."):
        return "visual." + k[len("model.visual."):]
    if k.startswith(("lm_head.", "model.", "visual.")):
        return k
    raise ValueError("unexpected parameter name " + k)
