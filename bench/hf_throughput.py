#!/usr/bin/env python3
"""The vllmd throughput workload through Hugging Face transformers (bf16,
attn_implementation="sdpa") on one GPU, for the vllmd/transformers ratio.

Modes:
  throughput   N requests, each one synthetic random RGB image (--image-size)
               and a prompt of --input-len text tokens, --output-len generated
               tokens each (min_new_tokens = max_new_tokens, so EOS never ends
               a request early), run through AutoProcessor + generate() in
               left-padded batches. --batch-size takes a list (16,32,64) to
               find transformers' best. Prints vLLM's line
               "Throughput: X requests/s, Y total tokens/s, Z output tokens/s".
  decode-step  batch 1, one image + text (~600 prompt tokens), then the mean
               time of one decode step over --output-len (default 128) tokens,
               measured step by step inside generate().
  vision       images/s of the vision tower + projector alone (LLaVA: CLIP
               ViT-L/14-336 + the MLP projector; Qwen2-VL: the ViT + merger)
               on a batch of --vision-batch (64) images of --image-size (336).

Families: llava (LlavaForConditionalGeneration) and qwen2_vl
(Qwen2VLForConditionalGeneration). Phi-3.5-vision is trust_remote_code on the
hub and transformers 5.x has no native Phi3V class (no models/phi3_v; see
/work/shared/reference/models.md §1), so it is reported as skipped.

torch and transformers are imported inside main(): `--help` works anywhere.

Examples (GPU machine, checkpoints from bench/make_checkpoint.py):
  python3 bench/hf_throughput.py --model /dev/shm/ckpt/llava --num-prompts 256 \\
      --input-len 128 --output-len 128 --image-size 336 --batch-size 16,32,64 \\
      --output-json hf_llava.json
  python3 bench/hf_throughput.py --model /dev/shm/ckpt/llava --mode decode-step
  python3 bench/hf_throughput.py --model /dev/shm/ckpt/llava --mode vision
"""
import argparse
import json
import os
import sys
import time

WORDS = (
    "the of and to in is was for on that with as by at from his her an were are which this be or had "
    "not but what all when there can more one about other time new some could these two may first then "
    "do any like my now over such our man me even most made after also did many before must through "
    "back years where much your way well down should because each just those people how too little "
    "state good very make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since against go came "
    "right used take three house river mountain garden window picture colour light small large green "
    "blue red yellow table chair street city water animal bird tree flower road car boat train music"
).split()


def log(*a):
    print("[hf %7.1fs]" % (time.time() - T0), *a, file=sys.stderr, flush=True)


T0 = time.time()


class Skip(Exception):
    pass


def read_config(model_dir):
    p = os.path.join(model_dir, "config.json")
    if not os.path.exists(p):
        raise SystemExit("hf_throughput: %s has no config.json (write one with bench/make_checkpoint.py)" % model_dir)
    with open(p) as f:
        return json.load(f)


def family_of(cfg):
    mt = cfg.get("model_type")
    if mt in ("llava", "qwen2_vl", "phi3_v"):
        return mt
    raise SystemExit("hf_throughput: model_type %r is not one of llava, qwen2_vl, phi3_v" % mt)


def model_class(family):
    import transformers
    if family == "phi3_v":
        native = [n for n in ("Phi3VForCausalLM", "Phi3VForConditionalGeneration") if hasattr(transformers, n)]
        if not native:
            raise Skip("transformers %s has no native Phi-3.5-vision class (Phi3VForCausalLM is "
                       "trust_remote_code on the hub; its code is not available offline)" % transformers.__version__)
        return getattr(transformers, native[0])
    name = {"llava": "LlavaForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration"}[family]
    if not hasattr(transformers, name):
        raise SystemExit("hf_throughput: transformers %s has no %s" % (transformers.__version__, name))
    return getattr(transformers, name)


def torch_dtype(name):
    import torch
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def loading_info_dict(info):
    """from_pretrained's loading info as {name: list} (a dict in 4.x/5.x; a
    dataclass or namespace is accepted too)."""
    if info is None:
        return {}
    if isinstance(info, dict):
        d = info
    elif hasattr(info, "__dataclass_fields__"):
        import dataclasses
        d = dataclasses.asdict(info)
    else:
        d = dict(vars(info))
    return {k: (list(v) if isinstance(v, (list, tuple, set)) else ([v] if v else [])) for k, v in d.items()}


def load_model(model_dir, family, dtype, attn, device, strict=True):
    """from_pretrained with the 5.x keywords (dtype=), falling back to the 4.x
    ones (torch_dtype=); straight onto the GPU (device_map) when possible.
    Fails when weights are missing/unexpected/mismatched: randomly initialised
    leftovers would silently change what is measured."""
    cls = model_class(family)
    base = dict(attn_implementation=attn, output_loading_info=True)
    tries = []
    for dkw in ("dtype", "torch_dtype"):
        for dev in ([{"device_map": device}, {}] if device != "cpu" else [{}]):
            tries.append(dict(base, **{dkw: torch_dtype(dtype)}, **dev))
    errors = []
    t = time.time()
    for kw in tries:
        try:
            model, info = cls.from_pretrained(model_dir, **kw)
            break
        except TypeError as e:  # keyword unknown to this version
            errors.append("%s: %r" % (sorted(kw), e))
        except (ImportError, ValueError) as e:
            if "device_map" in kw:  # e.g. accelerate missing: load on the CPU, then move
                errors.append("%s: %r" % (sorted(kw), e))
                continue
            raise
    else:
        raise SystemExit("hf_throughput: from_pretrained failed every way: " + " | ".join(errors))
    problems = {k: list(v) for k, v in loading_info_dict(info).items()
                if any(w in k for w in ("missing", "unexpected", "mismatch", "error")) and v}
    problems = {k: [x for x in v if "position_ids" not in str(x) and "inv_freq" not in str(x)]
                for k, v in problems.items()}
    problems = {k: v for k, v in problems.items() if v}
    if problems and strict:
        raise SystemExit("hf_throughput: the checkpoint does not match %s: %s"
                         % (cls.__name__, json.dumps(problems)[:3000]))
    p = next(model.parameters())
    if p.dtype != torch_dtype(dtype):  # e.g. a version that ignored the dtype keyword
        log("weights came as %s; converting to %s" % (p.dtype, dtype))
        model = model.to(torch_dtype(dtype))
    if device != "cpu" and p.device.type == "cpu":
        model = model.to(device)
    model.eval()
    log("loaded %s (%s, attn=%s) in %.1fs; loading info clean: %s"
        % (cls.__name__, dtype, getattr(model.config, "_attn_implementation", attn), time.time() - t, not problems))
    return model, problems


def load_processor(model_dir, family):
    import transformers
    errors = []
    try:
        proc = transformers.AutoProcessor.from_pretrained(model_dir)
    except Exception as e:  # noqa: BLE001 - report every failure below
        errors.append("AutoProcessor: %r" % e)
        proc = None
    if proc is None and family == "qwen2_vl":
        try:
            ip = transformers.AutoImageProcessor.from_pretrained(model_dir)
            tok = transformers.AutoTokenizer.from_pretrained(model_dir)
            try:
                proc = transformers.Qwen2VLProcessor(image_processor=ip, tokenizer=tok)
            except TypeError:
                proc = transformers.Qwen2VLProcessor(image_processor=ip, tokenizer=tok, video_processor=None)
        except Exception as e:  # noqa: BLE001
            errors.append("Qwen2VLProcessor: %r" % e)
    if proc is None:
        raise SystemExit("hf_throughput: no processor for %s: %s" % (model_dir, " | ".join(errors)))
    tok = proc.tokenizer
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if family == "llava":
        # LlavaProcessor expands <image> to 576 tokens only with these set
        # (processor_config.json has them; set them if this version ignored it).
        for k, v in (("patch_size", 14), ("vision_feature_select_strategy", "default")):
            if getattr(proc, k, None) is None:
                setattr(proc, k, v)
                log("processor.%s was unset; set to %r" % (k, v))
        if getattr(proc, "num_additional_image_tokens", None) in (None, 0):
            try:
                proc.num_additional_image_tokens = 1
            except Exception:  # noqa: BLE001 - older processors have no such field
                pass
    return proc


def image_token_id(model, family):
    cfg = model.config
    for k in ("image_token_id", "image_token_index"):
        v = getattr(cfg, k, None)
        if v is not None:
            return int(v)
    return 32000 if family == "llava" else 151655


def llava_tokens(model, family):
    """Image placeholder tokens per LLaVA image: (image_size/patch)^2, +1 (CLS)
    with the "full" feature strategy."""
    if family != "llava":
        return 0
    vc = model.config.vision_config
    n = (vc.image_size // vc.patch_size) ** 2
    return n + (1 if getattr(model.config, "vision_feature_select_strategy", "default") == "full" else 0)


def make_text(tok, n_tokens, rng):
    """About n_tokens text tokens of random words (each prompt different)."""
    if n_tokens <= 0:
        return ""
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=n_tokens + 8)]
    ids = tok(" ".join(words), add_special_tokens=False)["input_ids"][:n_tokens]
    return tok.decode(ids).strip()


def make_prompt(family, text):
    if family == "llava":
        return "USER: <image>\n%s\nASSISTANT:" % text
    return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "<|vision_start|><|image_pad|><|vision_end|>%s<|im_end|>\n<|im_start|>assistant\n" % text)


def make_images(n, size, seed):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8), "RGB") for _ in range(n)]


def process(proc, family, texts, images, device, dtype, img_id, llava_image_tokens=576):
    """Processor call -> inputs on the device; checks the image placeholders
    were expanded (one image per prompt: LLaVA (image_size/patch)^2 tokens,
    Qwen2-VL grid_t*grid_h*grid_w/4)."""
    import torch
    kw = dict(text=texts, images=images, return_tensors="pt", padding=True)
    inputs = proc(**kw)
    inputs = dict(inputs)
    ids = inputs["input_ids"]
    per_row = (ids == img_id).sum(dim=1)
    if family == "llava":
        want = torch.full_like(per_row, llava_image_tokens)
        if int(per_row.min()) <= 1:
            raise SystemExit("hf_throughput: LlavaProcessor did not expand <image> (found %d per prompt); "
                             "processor_config.json needs patch_size and vision_feature_select_strategy"
                             % int(per_row.min()))
    else:
        thw = inputs["image_grid_thw"]
        want = (thw.prod(dim=1) // 4).to(per_row.dtype)
        if "mm_token_type_ids" not in inputs:
            inputs["mm_token_type_ids"] = (ids == img_id).to(torch.int32)
    if not torch.equal(per_row.cpu(), want.cpu()):
        raise SystemExit("hf_throughput: image tokens per prompt %s, expected %s"
                         % (per_row.tolist()[:8], want.tolist()[:8]))
    out = {}
    for k, v in inputs.items():
        if hasattr(v, "to"):
            v = v.to(device, non_blocking=True)
            if k == "pixel_values":
                v = v.to(dtype)
        out[k] = v
    return out, per_row


def generate(model, inputs, n_new, pad_id, stopping=None):
    import torch
    kw = dict(max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, use_cache=True, pad_token_id=pad_id,
              num_beams=1)
    if stopping is not None:
        kw["stopping_criteria"] = stopping
    with torch.inference_mode():
        return model.generate(**inputs, **kw)


def gpu_info():
    import torch
    import transformers
    d = {"torch": torch.__version__, "transformers": transformers.__version__}
    if torch.cuda.is_available():
        d["gpu"] = torch.cuda.get_device_name(0)
    return d


# ---------------------------------------------------------------- modes

def build_workload(a, family, tok):
    """The throughput workload: num_prompts chat prompts of ~input_len random
    text tokens, each with one random image (deterministic from --seed, so
    --dump-workload and the transformers run see the same requests)."""
    import numpy as np
    rng = np.random.default_rng(a.seed)
    log("making %d prompts of ~%d text tokens and %d random %dx%d images"
        % (a.num_prompts, a.input_len, a.num_prompts, a.image_size, a.image_size))
    texts = [make_prompt(family, make_text(tok, a.input_len, rng)) for _ in range(a.num_prompts)]
    images = make_images(a.num_prompts, a.image_size, a.seed)
    return texts, images


def dump_workload(a, family, tok, out_dir):
    """Write the workload for `vllmd generate --input FILE`: one PNG per
    request and workload.jsonl (greedy, max_tokens = output_len, ignore_eos)."""
    os.makedirs(out_dir, exist_ok=True)
    texts, images = build_workload(a, family, tok)
    path = os.path.join(out_dir, "workload.jsonl")
    with open(path, "w") as f:
        for i, (t, im) in enumerate(zip(texts, images)):
            ip = os.path.abspath(os.path.join(out_dir, "img_%05d.png" % i))
            im.save(ip)
            f.write(json.dumps({"prompt": t, "multi_modal_data": {"image": ip},
                                "sampling_params": {"temperature": 0, "max_tokens": a.output_len,
                                                    "ignore_eos": True}}) + "\n")
    print("wrote %s: %d requests (%dx%d images, ~%d text tokens, %d output tokens each)"
          % (path, len(texts), a.image_size, a.image_size, a.input_len, a.output_len))
    return {"workload": path, "num_requests": len(texts)}


def run_throughput(a, family, model, proc, device, dtype):
    import torch
    tok = proc.tokenizer
    img_id = image_token_id(model, family)
    n_img = llava_tokens(model, family)
    texts, images = build_workload(a, family, tok)
    text_lens = [len(tok(t, add_special_tokens=True)["input_ids"]) for t in texts]  # before image expansion
    results = []
    for bs in a.batch_sizes:
        res = {"batch_size": bs}
        try:
            for w in range(a.warmup):
                inp, _ = process(proc, family, texts[:bs], images[:bs], device, dtype, img_id, n_img)
                generate(model, inp, min(a.output_len, 16), tok.pad_token_id)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            gen_time = proc_time = 0.0
            out_tokens = prompt_tokens = image_tokens = 0
            t0 = time.perf_counter()
            for i in range(0, a.num_prompts, bs):
                tp = time.perf_counter()
                inp, per_row = process(proc, family, texts[i:i + bs], images[i:i + bs], device, dtype, img_id, n_img)
                torch.cuda.synchronize()
                tg = time.perf_counter()
                out = generate(model, inp, a.output_len, tok.pad_token_id)
                torch.cuda.synchronize()
                te = time.perf_counter()
                new = out.shape[1] - inp["input_ids"].shape[1]
                if new != a.output_len:
                    raise SystemExit("hf_throughput: generate made %d tokens, asked for %d" % (new, a.output_len))
                n = inp["input_ids"].shape[0]
                out_tokens += n * new
                prompt_tokens += int(inp["attention_mask"].sum())
                image_tokens += int(per_row.sum())
                proc_time += tg - tp
                gen_time += te - tg
            elapsed = time.perf_counter() - t0
        except torch.cuda.OutOfMemoryError as e:
            res.update(error="out of GPU memory: %s" % str(e).splitlines()[0])
            log("batch %d: out of memory" % bs)
            torch.cuda.empty_cache()
            results.append(res)
            continue
        n = a.num_prompts
        text_prompt = sum(text_lens)
        res.update({
            "elapsed_time": elapsed, "num_requests": n, "generate_time": gen_time, "processor_time": proc_time,
            "prompt_tokens_text": text_prompt, "prompt_tokens": prompt_tokens, "image_tokens": image_tokens,
            "output_tokens": out_tokens,
            # vLLM's benchmark_throughput counts the text prompt (not image placeholders) + output
            "total_num_tokens": text_prompt + out_tokens,
            "requests_per_second": n / elapsed,
            "tokens_per_second": (text_prompt + out_tokens) / elapsed,
            "output_tokens_per_second": out_tokens / elapsed,
            "total_tokens_per_second_with_image_tokens": (prompt_tokens + out_tokens) / elapsed,
            "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
        })
        results.append(res)
        print("[batch %d] Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s "
              "(%.1fs; generate %.1fs, processor %.1fs; prompt %d tokens incl. %d image tokens per request)"
              % (bs, res["requests_per_second"], res["tokens_per_second"], res["output_tokens_per_second"],
                 elapsed, gen_time, proc_time, prompt_tokens // n, image_tokens // n), flush=True)
    ok = [r for r in results if "error" not in r]
    if not ok:
        raise SystemExit("hf_throughput: every batch size failed: %s" % results)
    best = max(ok, key=lambda r: r["requests_per_second"])
    print("Throughput: %.2f requests/s, %.2f total tokens/s, %.2f output tokens/s"
          % (best["requests_per_second"], best["tokens_per_second"], best["output_tokens_per_second"]))
    print("(best batch size %d of %s; total tokens count the text prompt + output as vLLM does; with the %d "
          "image placeholder tokens per request: %.2f total tokens/s)"
          % (best["batch_size"], [r["batch_size"] for r in results], best["image_tokens"] // best["num_requests"],
             best["total_tokens_per_second_with_image_tokens"]))
    out = {k: best[k] for k in ("elapsed_time", "num_requests", "total_num_tokens", "requests_per_second",
                                "tokens_per_second")}
    out.update(best=best, per_batch_size=results)
    return out


def run_decode_step(a, family, model, proc, device, dtype):
    import numpy as np
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    tok = proc.tokenizer
    img_id = image_token_id(model, family)
    n_img = llava_tokens(model, family)
    size = a.image_size or (336 if family == "llava" else 672)   # ~576 image tokens either way
    rng = np.random.default_rng(a.seed)

    class StepClock(StoppingCriteria):
        """Called once per generated token, after that step's forward and
        sampling: the gaps between calls are the decode-step times."""

        def __init__(self):
            self.t = []

        def __call__(self, input_ids, scores, **kwargs):
            torch.cuda.synchronize()
            self.t.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    text = make_text(tok, a.input_len, rng)
    inp, per_row = process(proc, family, [make_prompt(family, text)], make_images(1, size, a.seed), device, dtype,
                           img_id, n_img)
    plen = int(inp["input_ids"].shape[1])
    log("decode-step: prompt %d tokens (%d image tokens, %dx%d image), %d new tokens, %d repeats"
        % (plen, int(per_row[0]), size, size, a.output_len, a.repeats))
    for _ in range(max(1, a.warmup)):
        generate(model, inp, 8, tok.pad_token_id)
    runs = []
    for r in range(a.repeats):
        clock = StepClock()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = generate(model, inp, a.output_len + 1, tok.pad_token_id, StoppingCriteriaList([clock]))
        t_end = time.perf_counter()
        if out.shape[1] - plen != a.output_len + 1 or len(clock.t) != a.output_len + 1:
            raise SystemExit("hf_throughput: expected %d steps, clock saw %d" % (a.output_len + 1, len(clock.t)))
        steps = np.diff(np.array(clock.t)) * 1000.0          # a.output_len decode steps
        runs.append({"prefill_ms": (clock.t[0] - t0) * 1000.0, "decode_ms_mean": float(steps.mean()),
                     "decode_ms_median": float(np.median(steps)), "decode_ms_p90": float(np.percentile(steps, 90)),
                     "total_s": t_end - t0})
        log("run %d: first token %.1f ms, decode %.2f ms/token (median %.2f)"
            % (r, runs[-1]["prefill_ms"], runs[-1]["decode_ms_mean"], runs[-1]["decode_ms_median"]))
    mean = float(np.median([x["decode_ms_mean"] for x in runs]))
    print("Decode step (batch 1, %d-token prompt incl. %d image tokens): %.2f ms/token mean over %d tokens "
          "(median of %d runs); time to first token %.1f ms"
          % (plen, int(per_row[0]), mean, a.output_len, a.repeats,
             float(np.median([x["prefill_ms"] for x in runs]))))
    return {"prompt_tokens": plen, "image_tokens": int(per_row[0]), "image_size": size, "new_tokens": a.output_len,
            "decode_ms_per_token": mean, "runs": runs}


def image_features(model, family, inputs):
    """Vision tower + projector (LLaVA) or ViT + merger (Qwen2-VL) through the
    model's get_image_features, whatever this version calls it with."""
    m = model.model if hasattr(getattr(model, "model", None), "get_image_features") else model
    if family == "llava":
        return m.get_image_features(pixel_values=inputs["pixel_values"])
    try:
        return m.get_image_features(pixel_values=inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"])
    except TypeError:
        return m.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])


def first_tensor(x):
    import torch
    if isinstance(x, torch.Tensor):
        return x
    for k in ("pooler_output", "last_hidden_state"):
        v = getattr(x, k, None)
        if v is not None:
            return first_tensor(v)
    if isinstance(x, (list, tuple)) and x:
        return torch.cat([first_tensor(t).reshape(-1, first_tensor(t).shape[-1]) for t in x])
    raise SystemExit("hf_throughput: get_image_features returned %r" % type(x))


def run_vision(a, family, model, proc, device, dtype):
    import torch
    n = a.vision_batch
    size = a.image_size or 336
    images = make_images(n, size, a.seed)
    ip = proc.image_processor
    inputs = dict(ip(images=images, return_tensors="pt"))
    inputs = {k: (v.to(device).to(dtype) if k == "pixel_values" else v.to(device))
              for k, v in inputs.items() if hasattr(v, "to")}
    with torch.inference_mode():
        for _ in range(max(1, a.warmup) + 2):
            feats = image_features(model, family, inputs)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(a.vision_iters):
            feats = image_features(model, family, inputs)
        torch.cuda.synchronize()
        el = time.perf_counter() - t0
    f = first_tensor(feats)
    ips = n * a.vision_iters / el
    print("Vision tower + projector: %.1f images/s (batch %d, %dx%d, %d iterations, %.2f ms per batch); "
          "features %s" % (ips, n, size, size, a.vision_iters, el * 1000 / a.vision_iters, list(f.shape)))
    return {"images_per_second": ips, "batch": n, "image_size": size, "iterations": a.vision_iters,
            "ms_per_batch": el * 1000 / a.vision_iters, "feature_shape": list(f.shape)}


MODES = ("throughput", "decode-step", "vision")


def mode_args(a, mode, single):
    """Parameters of one mode: --input-len/--output-len/--image-size apply to
    throughput, and to the other modes too when only one mode runs; the
    --decode-*/--vision-* options win for theirs."""
    p = argparse.Namespace(**vars(a))
    gen = (lambda v: v if single else None)
    if mode == "throughput" or mode == "dump":
        p.input_len = a.input_len if a.input_len is not None else 128
        p.output_len = a.output_len if a.output_len is not None else 128
        p.image_size = a.image_size or 336
    elif mode == "decode-step":
        p.input_len = next(v for v in (a.decode_input_len, gen(a.input_len), 16) if v is not None)
        p.output_len = next(v for v in (a.decode_output_len, gen(a.output_len), 128) if v is not None)
        p.image_size = a.decode_image_size or gen(a.image_size)       # None: per family
    else:
        p.image_size = a.vision_image_size or gen(a.image_size) or 336
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (hub layout)")
    ap.add_argument("--mode", default="throughput",
                    help="throughput, decode-step, vision, or several separated by commas (one model load)")
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--input-len", type=int, default=None,
                    help="text tokens per prompt besides the template and image (default 128; decode-step 16)")
    ap.add_argument("--output-len", type=int, default=None, help="generated tokens per request (default 128)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="square synthetic image side (default 336; decode-step: 336 LLaVA, 672 Qwen2-VL)")
    ap.add_argument("--batch-size", default="32", help="batch size, or a list like 16,32,64")
    ap.add_argument("--warmup", type=int, default=1, help="warmup batches / runs")
    ap.add_argument("--repeats", type=int, default=3, help="decode-step: timed runs")
    ap.add_argument("--decode-input-len", type=int, default=None)
    ap.add_argument("--decode-output-len", type=int, default=None)
    ap.add_argument("--decode-image-size", type=int, default=None)
    ap.add_argument("--vision-batch", type=int, default=64)
    ap.add_argument("--vision-iters", type=int, default=20)
    ap.add_argument("--vision-image-size", type=int, default=None)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (default sdpa)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output-json", default=None)
    ap.add_argument("--dump-workload", metavar="DIR", default=None,
                    help="only write the throughput workload (PNGs + workload.jsonl for `vllmd generate "
                         "--input`) and exit; needs the tokenizer, not the GPU")
    a = ap.parse_args()
    try:
        a.batch_sizes = [int(x) for x in str(a.batch_size).split(",") if x.strip()]
    except ValueError:
        ap.error("--batch-size: integers separated by commas")
    modes = [m.strip() for m in a.mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        ap.error("--mode: %s not among %s" % (bad, ", ".join(MODES)))

    cfg = read_config(a.model)
    family = family_of(cfg)
    try:
        import torch
        import transformers
    except ImportError as e:
        raise SystemExit("hf_throughput: needs torch and transformers (%s)" % e)
    if a.dump_workload:
        if family == "phi3_v":
            raise SystemExit("hf_throughput: --dump-workload supports llava and qwen2_vl prompts")
        dump_workload(mode_args(a, "dump", True), family, load_processor(a.model, family).tokenizer,
                      a.dump_workload)
        return 0
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("hf_throughput: no CUDA device visible to torch")
    result = {"model": os.path.abspath(a.model), "family": family, "mode": a.mode, "dtype": a.dtype,
              "attn_implementation": a.attn, "args": {k: v for k, v in vars(a).items() if k != "batch_sizes"}}
    result.update(gpu_info())

    def save():
        if a.output_json:
            with open(a.output_json, "w") as f:
                json.dump(result, f, indent=1)

    torch.manual_seed(a.seed)
    try:
        model, problems = load_model(a.model, family, a.dtype, a.attn, a.device)
    except Skip as e:
        print("SKIPPED %s: %s" % (family, e))
        result.update(skipped=str(e))
        save()
        return 0
    proc = load_processor(a.model, family)
    dt = torch_dtype(a.dtype)
    log("transformers %s, torch %s, %s" % (transformers.__version__, torch.__version__, result.get("gpu")))
    run = {"throughput": run_throughput, "decode-step": run_decode_step, "vision": run_vision}
    for mode in modes:
        res = run[mode](mode_args(a, mode, len(modes) == 1), family, model, proc, a.device, dt)
        result[mode] = res
        if len(modes) == 1:
            result.update(res)
        save()  # after each mode, so a later failure keeps the earlier results
    if a.output_json:
        log("wrote", a.output_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
