#!/usr/bin/python3
"""The PIL side of bench/preprocess: what the HF CLIP image processor's PIL
path does to an image for LLaVA-1.5, written lean (no processor overhead):
PIL decode, convert("RGB"), resize the short side to 336 (bicubic), centre
crop 336x336, then numpy rescale and normalise to (3, 336, 336) float32.

Usage: pil_preprocess.py IMAGE REPS [PLANES_OUT]
Prints "ms_per_image N" (the mean over REPS after one warm-up run) and, with
PLANES_OUT, writes the last result there as float32 for the C side to
compare. Single-threaded: nothing here starts threads.
"""
import io
import sys
import time

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
SIZE = 336


def preprocess(data):
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    nl = int(SIZE * long / short)
    nw, nh = (SIZE, nl) if w <= h else (nl, SIZE)
    r = np.asarray(im.resize((nw, nh), Image.BICUBIC))
    top, left = int((nh - SIZE) / 2.0), int((nw - SIZE) / 2.0)
    x = (r[top:top + SIZE, left:left + SIZE].astype(np.float64) * (1 / 255)).astype(np.float32)
    return np.ascontiguousarray(((x - MEAN) / STD).transpose(2, 0, 1))


def main():
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    reps = int(sys.argv[2])
    out = preprocess(data)
    t0 = time.perf_counter()
    for _ in range(reps):
        out = preprocess(data)
    dt = (time.perf_counter() - t0) / reps
    if len(sys.argv) > 3:
        out.astype("<f4").tofile(sys.argv[3])
    print("ms_per_image %.4f" % (dt * 1e3))


if __name__ == "__main__":
    main()
