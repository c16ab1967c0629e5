#!/usr/bin/python3
"""Reference data for tests/test_image.c, made with PIL and numpy.

Usage: image_ref.py OUTDIR  (OUTDIR exists). Writes OUTDIR/manifest.txt, one
case per line, and the files it names:
  resize NAME FILTER IN  IN (input .raw), NAME.out.raw: PIL IN.resize(size, FILTER)
  clip NAME            NAME.in.raw, NAME.crop.raw (uint8 after resize + crop),
                       NAME.out.f32: (3, 336, 336) float32, the HF CLIP PIL path
  window NAME FILTER IN OW OH L T CW CH
                       NAME.out.raw: IN resized to (OW, OH), then the CW x CH
                       crop at (L, T), fill (9, 99, 199) outside
  decode NAME FILE     FILE encoded, NAME.rgb.raw: what vLLM's media loader
                       makes of it (Image.open, then convert_image_mode RGB:
                       transparency composited onto white)
A .raw file is int32 LE width, int32 LE height, then (h, w, 3) uint8.
Error-case files have fixed names (see the ERRORS section) and no expectation
beyond the C test's. Everything is seeded: the output is the same on each run.
"""
import glob
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


def vllm_rgb(im):
    """vLLM's convert_image_mode(image, "RGB") (vllm/multimodal/image.py):
    an image with transparency (RGBA, LA, PA, or a tRNS/GIF transparency in
    info) becomes RGBA, then is pasted onto white with its alpha as mask."""
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        if im.mode != "RGBA":
            im = im.convert("RGBA")
        out = Image.new("RGB", im.size, (255, 255, 255))
        out.paste(im, mask=im.split()[3])
        return out
    return im.convert("RGB")


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


# ---- windows of a resize: (in w, in h, out w, out h, left, top, crop w, crop h) ----
WINDOW_CASES = [
    (640, 480, 448, 336, 56, 0, 336, 336),      # LLaVA's centre crop
    (480, 640, 336, 448, 0, 56, 336, 336),
    (1000, 3, 11200, 30, 5585, 0, 30, 30),      # extreme aspect: crop of a long strip
    (3, 1000, 30, 11200, 0, 5585, 30, 30),
    (1000, 2, 15000, 30, 0, 0, 30, 30),         # at the start
    (1000, 2, 15000, 30, 14970, 0, 30, 30),     # at the end
    (200, 150, 100, 75, -10, -5, 120, 90),      # overhanging every side: fill
    (200, 150, 100, 75, 90, 70, 40, 40),        # partly outside
    (37, 53, 37, 17, 5, 3, 20, 10),             # width unchanged
    (37, 53, 91, 53, 10, 7, 50, 30),            # height unchanged
    (64, 64, 64, 64, 8, 8, 32, 32),             # same size: a crop
    (300, 7, 40, 333, 1, 100, 37, 200),         # down in x, up in y
]
for i, (iw, ih, ow, oh, left, top, cw, ch) in enumerate(WINDOW_CASES):
    src = (noise if i % 2 else photo)(iw, ih)
    src_name = "win%02d.in.raw" % i
    write_raw(src_name, src)
    for fname, filt in FILTERS.items():
        if ow * oh > 4000000 and fname == "NEAREST":
            continue
        r = np.asarray(src.resize((ow, oh), filt))
        out = np.empty((ch, cw, 3), np.uint8)
        out[:] = (9, 99, 199)
        y0, y1 = max(top, 0), min(top + ch, oh)
        x0, x1 = max(left, 0), min(left + cw, ow)
        if y1 > y0 and x1 > x0:
            out[y0 - top:y1 - top, x0 - left:x1 - left] = r[y0:y1, x0:x1]
        name = "win%02d_%s" % (i, fname.lower())
        write_raw(name + ".out.raw", Image.fromarray(out))
        manifest.append("window %s %s %s %d %d %d %d %d %d" % (
            name, fname, src_name, ow, oh, left, top, cw, ch))


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


# ---- decode parity: every case must equal what vLLM's loader makes ----
def decode_case(name, data, ext):
    fname = name + "." + ext
    write_bytes(fname, data)
    write_raw(name + ".rgb.raw", vllm_rgb(Image.open(io.BytesIO(data))))
    manifest.append("decode %s %s" % (name, fname))


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_raw(w, h, depth, ctype, samples, plte=None, trns=None):
    """A PNG written by hand, for the kinds PIL's encoder does not write:
    samples is (h, w * channels) of sample values packed at `depth` bits."""
    rows = []
    for row in samples:
        if depth >= 8:
            dt = ">u2" if depth == 16 else "u1"
            rows.append(b"\0" + np.asarray(row, dt).tobytes())
        else:
            bits = "".join(format(int(v), "0%db" % depth) for v in row)
            bits += "0" * (-len(bits) % 8)
            rows.append(b"\0" + int(bits, 2).to_bytes(len(bits) // 8, "big"))
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
    if plte is not None:
        out += png_chunk(b"PLTE", plte)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    return out + png_chunk(b"IDAT", zlib.compress(b"".join(rows))) + png_chunk(b"IEND", b"")


base = photo(37, 23)
rgba = base.copy()
alpha = rng.randint(0, 256, (23, 37), dtype=np.uint8)
alpha[0, :8] = (0, 255, 4, 128, 1, 254, 0, 255)
rgba.putalpha(Image.fromarray(alpha))
grey = base.convert("L")
pal = base.quantize(16)

# PNG: every colour type, depth and transparency PIL tells apart
decode_case("png_rgb", encode(base, "PNG"), "png")
decode_case("png_rgba", encode(rgba, "PNG"), "png")
decode_case("png_grey", encode(grey, "PNG"), "png")
decode_case("png_la", encode(rgba.convert("LA"), "PNG"), "png")
decode_case("png_palette", encode(pal, "PNG"), "png")
decode_case("png_palette_trns", encode(pal, "PNG", transparency=3), "png")
decode_case("png_palette_alphas", encode(pal, "PNG", transparency=bytes(range(0, 256, 17))), "png")
decode_case("png_palette_4bit", encode(pal, "PNG", bits=4), "png")
g16 = Image.fromarray((np.arange(37 * 23, dtype=np.uint16).reshape(23, 37) * 7))
decode_case("png_grey16", encode(g16, "PNG"), "png")
decode_case("png_grey_trns", encode(grey, "PNG", transparency=int(np.asarray(grey)[5, 5])), "png")
W, H = 37, 23
lv = rng.randint(0, 65536, (H, W * 4))
for depth in (1, 2, 4):
    top = (1 << depth) - 1
    g = rng.randint(0, top + 1, (H, W))
    decode_case("png_grey%d" % depth, png_raw(W, H, depth, 0, g), "png")
    decode_case("png_grey%d_trns" % depth, png_raw(W, H, depth, 0, g, trns=struct.pack(">H", 0)), "png")
g16b = rng.randint(0, 600, (H, W))
g16b[0, :4] = (200, 300, 255, 0)
decode_case("png_grey16_trns", png_raw(W, H, 16, 0, g16b, trns=struct.pack(">H", 300)), "png")
decode_case("png_grey16_trns255", png_raw(W, H, 16, 0, g16b, trns=struct.pack(">H", 255)), "png")
decode_case("png_rgb16", png_raw(W, H, 16, 2, lv[:, :W * 3]), "png")
decode_case("png_rgba16", png_raw(W, H, 16, 6, lv), "png")
decode_case("png_la16", png_raw(W, H, 16, 4, lv[:, :W * 2]), "png")
rgb8 = rng.randint(0, 4, (H, W * 3)) * 60
decode_case("png_rgb_trns", png_raw(W, H, 8, 2, rgb8, trns=struct.pack(">HHH", 0, 60, 120)), "png")

# JPEG: every kind PIL writes (the others are committed fixtures, below)
big = photo(160, 120)
decode_case("jpeg_420", encode(big, "JPEG", quality=90), "jpg")
decode_case("jpeg_422", encode(big, "JPEG", quality=90, subsampling=1), "jpg")
decode_case("jpeg_444", encode(big, "JPEG", quality=95, subsampling=0), "jpg")
decode_case("jpeg_grey", encode(big.convert("L"), "JPEG", quality=90), "jpg")
decode_case("jpeg_grey_progressive", encode(big.convert("L"), "JPEG", progressive=True), "jpg")
decode_case("jpeg_progressive", encode(big, "JPEG", quality=85, progressive=True), "jpg")
decode_case("jpeg_progressive_444", encode(big, "JPEG", progressive=True, subsampling=0), "jpg")
decode_case("jpeg_optimized", encode(big, "JPEG", quality=75, optimize=True), "jpg")
decode_case("jpeg_q100", encode(big, "JPEG", quality=100), "jpg")
decode_case("jpeg_q5", encode(big, "JPEG", quality=5), "jpg")
decode_case("jpeg_odd", encode(photo(33, 17), "JPEG", quality=90), "jpg")
decode_case("jpeg_1x1", encode(photo(1, 1), "JPEG"), "jpg")
decode_case("jpeg_cmyk", encode(big.convert("CMYK"), "JPEG", quality=90), "jpg")
decode_case("jpeg_large", encode(photo(640, 480), "JPEG", quality=92), "jpg")
exif = Image.Exif()
exif[0x0112] = 6  # orientation: rotate 90 (not applied on open, as PIL)
decode_case("jpeg_exif_rot90", encode(photo(48, 32), "JPEG", exif=exif.tobytes()), "jpg")
decode_case("jpeg_icc", encode(big, "JPEG", icc_profile=b"\0" * 600), "jpg")
for fixture in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "data", "images", "*.jpg"))):
    with open(fixture, "rb") as f:
        decode_case("fix_" + os.path.basename(fixture)[:-4], f.read(), "jpg")

# WebP: lossy and lossless, with and without alpha, still and animated
decode_case("webp_lossy", encode(big, "WEBP", quality=80), "webp")
decode_case("webp_lossless", encode(big, "WEBP", lossless=True), "webp")
decode_case("webp_lossy_alpha", encode(rgba, "WEBP", quality=70), "webp")
decode_case("webp_lossless_alpha", encode(rgba, "WEBP", lossless=True, exact=True), "webp")
decode_case("webp_grey", encode(grey, "WEBP"), "webp")
decode_case("webp_odd", encode(photo(33, 17), "WEBP"), "webp")
anim = encode(photo(40, 30), "WEBP", save_all=True, append_images=[noise(40, 30)], duration=100)
decode_case("webp_animated", anim, "webp")
anim_a = encode(rgba, "WEBP", save_all=True, append_images=[rgba.rotate(180)], duration=50)
decode_case("webp_animated_alpha", anim_a, "webp")

decode_case("bmp_rgb", encode(base, "BMP"), "bmp")
decode_case("bmp_palette", encode(pal, "BMP"), "bmp")
decode_case("bmp_rgba", encode(rgba, "BMP"), "bmp")
decode_case("bmp_grey", encode(grey, "BMP"), "bmp")

frame0 = base.quantize(32)
frame1 = photo(37, 23).transpose(Image.FLIP_LEFT_RIGHT).quantize(32)
gif2 = encode(frame0, "GIF", save_all=True, append_images=[frame1], duration=100, loop=0)
decode_case("gif_2frames", gif2, "gif")
decode_case("gif_transparent", encode(pal, "GIF", transparency=3), "gif")
decode_case("gif_opaque", encode(pal, "GIF"), "gif")
# A first frame smaller than the logical screen: widen the screen (bytes 6-9).
for t in (5, None):
    small = bytearray(encode(pal, "GIF", transparency=t) if t is not None else encode(pal, "GIF"))
    struct.pack_into("<HH", small, 6, 37 + 3, 23 + 2)
    decode_case("gif_small_frame" + ("" if t is not None else "_opaque"), bytes(small), "gif")
# A grey-ramp palette: PIL opens it as mode L
decode_case("gif_grey", encode(grey, "GIF"), "gif")
decode_case("gif_grey_transparent", encode(grey, "GIF", transparency=40), "gif")


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
webp = encode(big, "WEBP")
write_bytes("trunc.webp", webp[: len(webp) * 6 // 10])
write_bytes("image.avif_like", b"\0\0\0\x1cftypavif" + b"\0" * 64)
write_bytes("image.tiff", encode(base, "TIFF"))
write_bytes("random.bin", rng.randint(0, 256, 4096, dtype=np.uint8).tobytes())
write_bytes("text.txt", b"hello, this is not an image\n")


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
