"""Torch-free helpers shared by the Qwen2-VL and Phi-3.5-vision fixture
generators: deterministic test images, chat-template rendering with the
settings transformers uses, JSON writing and tokenizer-file editing.

Everything here runs with /usr/bin/python3 (numpy, PIL, jinja2; no torch),
so tests/gen/check_gen_notorch.py can exercise it on a machine without torch.
"""
import hashlib
import json
import os

import numpy as np
from PIL import Image

# name -> (width, height). Several sizes and aspect ratios, including ones
# that Qwen2-VL's min/max pixel limits resize up or down and ones that need a
# transpose in Phi-3.5-vision's HD transform.
IMAGE_SIZES = {
    "img_150x100": (150, 100),
    "img_100x150": (100, 150),
    "img_300x40": (300, 40),
    "img_40x300": (40, 300),
    "img_56x56": (56, 56),
    "img_400x300": (400, 300),
    "img_30x24": (30, 24),
}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def image_array(name):
    """The RGB uint8 pixels (h, w, 3) of a named test image: colour gradients,
    two solid rectangles (so crops differ visibly) and noise, seeded by the
    size alone, so an image never depends on which other images are made."""
    w, h = IMAGE_SIZES[name]
    rng = np.random.default_rng(w * 100003 + h)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255.0 / max(w - 1, 1), y * 255.0 / max(h - 1, 1),
                     (x + y) * 127.0 / max(w + h - 2, 1)], -1)
    base[: max(1, h // 3), : max(1, w // 4)] = (230.0, 40.0, 40.0)
    base[h // 2:, w // 2: w // 2 + max(1, w // 5)] = (20.0, 60.0, 200.0)
    img = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
    return img


def make_images(d, names):
    """Write the named images as PNG under d; returns {name: path}."""
    os.makedirs(d, exist_ok=True)
    paths = {}
    for name in names:
        p = os.path.join(d, name + ".png")
        Image.fromarray(image_array(name), "RGB").save(p)
        paths[name] = p
    return paths


def render_chat(template, messages, add_generation_prompt=True, **extra):
    """Render a chat template the way transformers does (sandboxed jinja2,
    trim_blocks, lstrip_blocks, loopcontrols, tojson without ASCII escaping)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages,
                                            add_generation_prompt=add_generation_prompt, **extra)


def added_token(tid, content, special=True, rstrip=False, lstrip=False):
    return {"id": tid, "content": content, "single_word": False, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": False, "special": special}


def write_json(path, obj, indent=1):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def decoder_map(added):
    """tokenizer_config.json's added_tokens_decoder from tokenizer.json entries."""
    return {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                             "single_word", "special")} for t in added}
