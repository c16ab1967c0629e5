#!/usr/bin/python3
"""Reference data for tests/test_image.c, made with PIL and numpy.

Usage: image_ref.py OUTDIR  (OUTDIR exists). Writes OUTDIR/manifest.txt, one
case per line, and the files it names:
  resize NAME FILTER IN  IN (input .raw), NAME.out.raw: PIL IN.resize(size, FILTER)
  clip NAME            NAME.in.raw, NAME.crop.raw (uint8 after resize + crop),
                       NAME.out.f32: (3, 336, 336) float32, the HF CLIP PIL path
  decode NAME FILE KIND  FILE encoded, NAME.rgb.raw: Image.open(FILE).convert("RGB");
                       KIND is exact (lossless) or lossy (JPEG: other IDCT)
A .raw file is int32 LE width, int32 LE height, then (h, w, 3) uint8.
Error-case files have fixed names (see the ERRORS section) and no expectation
beyond the C test's. Everything is seeded: the output is the same on each run.
"""
import io
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FILTERS = {"BICUBIC": Image.BICUBIC, "BILINEAR": Image.BILINEAR, "NEAREST": Image.NEAREST}

rng = np.random.RandomState(20240611)
out_dir = sys.argv[1]
manifest = []


def path(name):
    return os.path.join(out_dir, name)


def write_raw(name, im):
    a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    with open(path(name), "wb") as f:
        f.write(struct.pack("<ii", a.shape[1], a.shape[0]))
        f.write(np.ascontiguousarray(a).tobytes())


def write_bytes(name, data):
    with open(path(name), "wb") as f:
        f.write(data)


def noise(w, h):
    return Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def gradient(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = x * 255 // max(w - 1, 1)
    g = y * 255 // max(h - 1, 1)
    b = (x + y) * 255 // max(w + h - 2, 1)
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8), "RGB")


def photo(w, h):
    """Smooth gradient, a hard-edged disc and mild noise: JPEG-friendly content."""
    a = np.asarray(gradient(w, h)).astype(np.int64)
    y, x = np.mgrid[0:h, 0:w]
    disc = (x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(w, h) / 3) ** 2
    a[disc] = 255 - a[disc]
    a += rng.randint(-6, 7, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def encode(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


# ---- resize parity: (in w, in h, out w, out h) ----
RESIZE_SIZES = [
    (640, 480, 448, 336),    # downscale
    (480, 640, 336, 448),
    (100, 80, 333, 257),     # upscale
    (300, 50, 120, 170),     # down in x, up in y
    (50, 300, 170, 120),     # up in x, down in y
    (1000, 20, 336, 6),      # extreme aspect ratios
    (20, 1000, 7, 336),
    (513, 511, 257, 255),    # odd sizes
    (37, 53, 37, 17),        # width unchanged: vertical pass only
    (37, 53, 91, 53),        # height unchanged: horizontal pass only
    (1, 1, 5, 3),            # 1-pixel image
    (1, 7, 3, 1),
    (7, 5, 1, 1),            # down to one pixel
    (3, 2, 1000, 2),         # extreme upscale
    (64, 64, 64, 64),        # same size: a copy
]
for i, (iw, ih, ow, oh) in enumerate(RESIZE_SIZES):
    for kind, make in (("noise", noise), ("grad", gradient)):
        src = make(iw, ih)
        src_name = "rs%02d_%s.in.raw" % (i, kind)
        write_raw(src_name, src)
        for fname, filt in FILTERS.items():
            if fname == "NEAREST" and kind == "grad":
                continue
            name = "rs%02d_%s_%s" % (i, kind, fname.lower())
            write_raw(name + ".out.raw", src.resize((ow, oh), filt))
            manifest.append("resize %s %s %s" % (name, fname, src_name))


# ---- CLIP / LLaVA-1.5 preprocessing as the HF PIL path does it ----
def clip_ref(im, size=336):
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
    r = np.asarray(im.resize((nw, nh), Image.BICUBIC))
    top, left = int((nh - size) / 2.0), int((nw - size) / 2.0)
    c = r[top:top + size, left:left + size]
    x = (c.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return c, np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


CLIP_SIZES = [(336, 336), (640, 480), (480, 640), (1024, 200), (200, 1024),
              (50, 70), (1024, 768), (337, 1000)]
for i, (w, h) in enumerate(CLIP_SIZES):
    src = (photo if i % 2 == 0 else noise)(w, h)
    crop, planes = clip_ref(src)
    name = "clip%02d" % i
    write_raw(name + ".in.raw", src)
    write_raw(name + ".crop.raw", Image.fromarray(crop))
    write_bytes(name + ".out.f32", planes.astype("<f4").tobytes())
    manifest.append("clip %s" % name)


# ---- decode parity ----
def decode_case(name, data, ext, kind):
    fname = name + "." + ext
    write_bytes(fname, data)
    write_raw(name + ".rgb.raw", Image.open(io.BytesIO(data)).convert("RGB"))
    manifest.append("decode %s %s %s" % (name, fname, kind))


base = photo(37, 23)
rgba = base.copy()
rgba.putalpha(Image.fromarray(rng.randint(0, 256, (23, 37), dtype=np.uint8)))
grey = base.convert("L")
pal = base.quantize(16)
pal_trns = pal.copy()
pal_trns.info["transparency"] = 3

decode_case("png_rgb", encode(base, "PNG"), "png", "exact")
decode_case("png_rgba", encode(rgba, "PNG"), "png", "exact")
decode_case("png_grey", encode(grey, "PNG"), "png", "exact")
decode_case("png_la", encode(rgba.convert("LA"), "PNG"), "png", "exact")
decode_case("png_palette", encode(pal, "PNG"), "png", "exact")
decode_case("png_palette_trns", encode(pal, "PNG", transparency=3), "png", "exact")
g16 = Image.fromarray((np.arange(37 * 23, dtype=np.uint16).reshape(23, 37) * 7))
decode_case("png_grey16", encode(g16, "PNG"), "png", "exact")

big = photo(160, 120)
decode_case("jpeg_420", encode(big, "JPEG", quality=90), "jpg", "lossy")
decode_case("jpeg_444", encode(big, "JPEG", quality=95, subsampling=0), "jpg", "lossy")
decode_case("jpeg_grey", encode(big.convert("L"), "JPEG", quality=90), "jpg", "lossy")
decode_case("jpeg_progressive", encode(big, "JPEG", quality=85, progressive=True),
            "jpg", "lossy")
decode_case("jpeg_odd", encode(photo(33, 17), "JPEG", quality=90), "jpg", "lossy")

decode_case("bmp_rgb", encode(base, "BMP"), "bmp", "exact")
decode_case("bmp_palette", encode(pal, "BMP"), "bmp", "exact")
decode_case("bmp_rgba", encode(rgba, "BMP"), "bmp", "exact")

frame0 = base.quantize(32)
frame1 = photo(37, 23).transpose(Image.FLIP_LEFT_RIGHT).quantize(32)
gif2 = encode(frame0, "GIF", save_all=True, append_images=[frame1], duration=100, loop=0)
decode_case("gif_2frames", gif2, "gif", "exact")
decode_case("gif_transparent", encode(pal, "GIF", transparency=3), "gif", "exact")
# A first frame smaller than the logical screen: widen the screen (bytes 6-9).
small = bytearray(encode(pal, "GIF", transparency=5))
struct.pack_into("<HH", small, 6, 37 + 3, 23 + 2)
decode_case("gif_small_frame", bytes(small), "gif", "exact")


# ---- ERRORS: files the decoder must refuse ----
png = encode(base, "PNG")
jpg = encode(big, "JPEG", quality=90)
write_bytes("trunc_half.png", png[: len(png) // 2])
write_bytes("trunc_no_iend.png", png[:-12])
write_bytes("trunc_60.jpg", jpg[: len(jpg) * 6 // 10])
write_bytes("trunc_no_eoi.jpg", jpg[:-2])
gif1 = encode(photo(64, 48).quantize(64), "GIF")
write_bytes("trunc.gif", gif1[: len(gif1) * 6 // 10])
bmp = encode(base, "BMP")
write_bytes("trunc.bmp", bmp[:-100])
write_bytes("image.webp", encode(base, "WEBP"))
write_bytes("image.tiff", encode(base, "TIFF"))
write_bytes("random.bin", rng.randint(0, 256, 4096, dtype=np.uint8).tobytes())
write_bytes("text.txt", b"hello, this is not an image\n")


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_header_only(w, h):
    """Well-formed chunks, but far too little pixel data for w x h."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


write_bytes("huge_10000.png", png_header_only(10000, 10000))
write_bytes("absurd.png", png_header_only(0x7FFFFFFF, 0x7FFFFFFF))
# A real JPEG whose frame header claims 50000 x 40000.
j = bytearray(encode(photo(16, 16), "JPEG", quality=90))
sof = j.index(b"\xff\xc0")
struct.pack_into(">HH", j, sof + 5, 40000, 50000)
write_bytes("huge.jpg", bytes(j))

with open(path("manifest.txt"), "w") as f:
    f.write("\n".join(manifest) + "\n")
