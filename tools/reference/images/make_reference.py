#!/usr/bin/python3
"""Reference data for the image decoders and the CLIP preprocessor.

Run with Debian's python3 and its python3-pil (9.4, on libjpeg-turbo 2.1) and python3-numpy:
    apt-get install -y python3-pil python3-numpy
    /usr/bin/python3 tools/reference/images/make_reference.py
It writes, under tests/VteKernels.Tests/Data/images/:
  - test images: PNG in every colour type and bit depth (plain and Adam7), JPEG (PIL's writer: 4:4:4, 4:2:2,
    4:2:0, progressive, grayscale, CMYK, EXIF orientations 1-8; encoders.py for 4:1:1, 4:4:0, restart
    intervals, YCCK, Adobe RGB, one scan per component), BMP and PPM/PGM;
  - decode.json: for every image, PIL's Image.open(f).convert("RGB") as size + SHA-256 of the RGB bytes +
    a few sampled pixels, and the same after ImageOps.exif_transpose where the file has an orientation;
  - resize.json: PIL Image.resize(size, filter, reducing_gap=None) results (SHA-256 + samples);
  - preprocess.json: the HF CLIPImageProcessor pipeline, float32 3xHxW as SHA-256 of the little-endian bytes +
    sampled values, for several images and option sets, with and without LLaVA's expand2square;
  - preprocessor_config.json files in the llava-hf layout, for the config reader;
and assets/sample.png, the README's demo image.
transformers is not installed here, so clip_preprocess() below mirrors CLIPImageProcessor.preprocess
(transformers 4.x/5.x, the PIL-based "slow" processor) step by step:
  resize (get_resize_output_image_size with default_to_square=False, then PIL resize with reducing_gap=None,
  back to uint8), center_crop (transformers.image_transforms.center_crop, including its zero padding),
  rescale (float64 multiply, then float32), normalize ((x - mean) / std with mean and std cast to float32).
A machine with transformers can cross-check with check_with_transformers() at the end of this file.
"""
import hashlib
import io
import json
import math
import os
import sys

import numpy as np
from PIL import Image, ImageOps, features

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import encoders  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
OUT = os.path.join(ROOT, "tests", "VteKernels.Tests", "Data", "images")
ASSETS = os.path.join(ROOT, "assets")
DUMP = os.environ.get("VTE_IMAGE_DUMP")  # optional: also write PIL's decodes as raw .rgb files here, for debugging

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# ------------------------------------------------------------------------------------------------ content


def scene(w, h, seed, noise=10.0, shapes=12):
    """Photo-like test content: smooth gradients, a few filled shapes, Gaussian noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    fx, fy = x / max(w - 1, 1), y / max(h - 1, 1)
    img = np.stack([
        40 + 180 * fx + 20 * np.sin(fy * 7 + seed),
        60 + 150 * fy + 30 * np.cos(fx * 5),
        200 - 120 * fx * fy + 25 * np.sin((fx + fy) * 9),
    ], axis=-1)
    for _ in range(shapes):
        color = rng.uniform(0, 255, 3)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            r = rng.uniform(0.05, 0.3) * max(w, h)
            mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        else:
            hw, hh = rng.uniform(0.05, 0.25) * w, rng.uniform(0.05, 0.25) * h
            mask = (np.abs(x - cx) < hw) & (np.abs(y - cy) < hh)
        img[mask] = 0.3 * img[mask] + 0.7 * color
    img += rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def gray_of(rgb):
    return np.rint(rgb @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)


def demo_scene(w, h):
    """The README's sample: sky, sun, hills, a house; no noise, so it compresses to a few tens of KB."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    t = y / h
    img[..., 0], img[..., 1], img[..., 2] = 70 + 120 * t, 130 + 90 * t, 235 - 20 * t
    sun = (x - 0.78 * w) ** 2 + (y - 0.2 * h) ** 2 < (0.08 * w) ** 2
    img[sun] = (255, 214, 60)
    hill1 = y > h * (0.62 + 0.08 * np.sin(x / w * 5.0))
    img[hill1] = np.stack([60 + 0 * x, 150 + 40 * (y / h), 70 + 0 * x], -1)[hill1]
    hill2 = y > h * (0.75 + 0.05 * np.cos(x / w * 7.0 + 1))
    img[hill2] = np.stack([40 + 0 * x, 110 + 30 * (y / h), 50 + 0 * x], -1)[hill2]
    hx0, hx1, hy0, hy1 = int(0.2 * w), int(0.38 * w), int(0.55 * h), int(0.78 * h)
    img[hy0:hy1, hx0:hx1] = (200, 60, 50)
    roof = (y < hy0) & (y > hy0 - 0.12 * h) & (np.abs(x - (hx0 + hx1) / 2) < (y - (hy0 - 0.12 * h)) * ((hx1 - hx0) / 2 + 10) / (0.12 * h))
    img[roof] = (120, 50, 40)
    img[int(0.63 * h):hy1, int(0.27 * w):int(0.31 * w)] = (90, 60, 30)
    img[int(0.6 * h):int(0.66 * h), int(0.22 * w):int(0.26 * w)] = (250, 240, 150)
    img[int(0.6 * h):int(0.66 * h), int(0.33 * w):int(0.37 * w)] = (250, 240, 150)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)

# ------------------------------------------------------------------------------------------------ references


def sha(b):
    return hashlib.sha256(b).hexdigest()


def sample_points(w, h):
    pts = {(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, h // 2), (w // 3, (2 * h) // 3), ((3 * w) // 4, h // 5)}
    return sorted(pts)


def rgb_ref(im):
    rgb = im.convert("RGB")
    w, h = rgb.size
    data = rgb.tobytes()
    px = rgb.load()
    return {"width": w, "height": h, "sha256": sha(data), "samples": [[x, y, *px[x, y]] for x, y in sample_points(w, h)]}, data


decode_entries = []


def write(name, data, note):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    im = Image.open(io.BytesIO(data))
    im.load()
    entry, raw = rgb_ref(im)
    entry = {"file": name, "note": note, "pil_mode": im.mode, **entry}
    orientation = im.getexif().get(0x0112)
    if orientation is not None:
        entry["exif_orientation"] = orientation
        oriented, _ = rgb_ref(ImageOps.exif_transpose(im))
        entry["oriented"] = oriented
    if DUMP:
        os.makedirs(DUMP, exist_ok=True)
        with open(os.path.join(DUMP, name + ".rgb"), "wb") as f:
            f.write(raw)
    decode_entries.append(entry)


def pil_bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()

# ------------------------------------------------------------------------------------------------ images


def make_png():
    rgb = scene(37, 23, 1)
    g = gray_of(rgb)
    rng = np.random.default_rng(7)
    alpha = rng.integers(0, 256, g.shape, dtype=np.uint16)
    for interlace in (False, True):
        tag = "adam7" if interlace else "plain"
        for depth in (1, 2, 4, 8, 16):
            if depth == 16:
                s = g.astype(np.uint16) * 257
                s[: s.shape[0] // 2] = g[: s.shape[0] // 2]          # small values: PIL keeps them (min(v, 255))
                s = s[..., None]
            else:
                s = (g >> (8 - depth))[..., None]
            write(f"png_gray{depth}_{tag}.png", encoders.png(s, 0, depth, interlace, idat_size=64 if depth == 8 else None),
                  f"gray {depth}-bit {tag}")
        for depth in (8, 16):
            s = rgb.astype(np.uint16) * (257 if depth == 16 else 1)
            if depth == 16:
                s = s + rng.integers(0, 256, s.shape, dtype=np.uint16) - (s & 0xFF)
            write(f"png_rgb{depth}_{tag}.png", encoders.png(s, 2, depth, interlace), f"RGB {depth}-bit {tag}")
            ga = np.stack([g.astype(np.uint16) * (257 if depth == 16 else 1), alpha * (257 if depth == 16 else 1)], -1)
            write(f"png_ga{depth}_{tag}.png", encoders.png(ga, 4, depth, interlace), f"gray+alpha {depth}-bit {tag}")
            rgba = np.concatenate([s, (alpha * (257 if depth == 16 else 1))[..., None]], -1)
            write(f"png_rgba{depth}_{tag}.png", encoders.png(rgba, 6, depth, interlace), f"RGBA {depth}-bit {tag}")
        for depth in (1, 2, 4, 8):
            n = 1 << depth
            pal = np.random.default_rng(depth).integers(0, 256, (n, 3))
            idx = (g.astype(np.int32) * n // 256)[..., None]
            trns = bytes(np.random.default_rng(depth + 10).integers(0, 256, max(1, n // 2), dtype=np.uint8))
            write(f"png_pal{depth}_{tag}.png", encoders.png(idx, 3, depth, interlace, palette=pal, trns=trns),
                  f"palette {depth}-bit {tag} with tRNS")
    # palette shorter than the indices used: PIL reads the default grayscale ramp past the PLTE entries
    pal = np.random.default_rng(3).integers(0, 256, (200, 3))
    write("png_pal8_short_palette.png", encoders.png(g[..., None], 3, 8, palette=pal), "palette of 200 entries, indices up to 255")
    # tRNS on gray and RGB (ignored by convert("RGB")), split IDAT with an empty chunk, ancillary chunks
    write("png_gray8_trns.png", encoders.png(g[..., None], 0, 8, trns=b"\x00\x80"), "gray 8-bit with tRNS")
    write("png_rgb8_trns_split.png", encoders.png(rgb, 2, 8, trns=b"\x00\x10\x00\x20\x00\x30", idat_size=17, empty_idat=True,
                                                  extra_chunks=[(b"tEXt", b"Comment\x00test"), (b"gAMA", b"\x00\x00\xb1\x8f")]),
          "RGB 8-bit, tRNS, IDAT in 17-byte pieces and one empty IDAT, tEXt and gAMA chunks")
    for f in range(5):
        write(f"png_rgb8_filter{f}.png", encoders.png(rgb, 2, 8, filters=f), f"RGB 8-bit, every row filter type {f}")
    # odd sizes
    for w, h in ((1, 1), (7, 3), (1, 9), (9, 1)):
        small = scene(w, h, 20 + w * 10 + h)
        write(f"png_rgb8_{w}x{h}.png", encoders.png(small, 2, 8), f"RGB 8-bit {w}x{h}")
        write(f"png_rgb8_{w}x{h}_adam7.png", encoders.png(small, 2, 8, interlace=True), f"RGB 8-bit {w}x{h} Adam7")
        write(f"png_pal2_{w}x{h}_adam7.png", encoders.png((gray_of(small) >> 6)[..., None], 3, 2, interlace=True,
                                                          palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]]),
              f"palette 2-bit {w}x{h} Adam7")
    # PIL's own writer
    pim = Image.fromarray(scene(45, 31, 5))
    write("png_pil_rgb.png", pil_bytes(pim, "PNG", optimize=True), "PIL-written RGB")
    write("png_pil_p.png", pil_bytes(pim.convert("P", palette=Image.ADAPTIVE, colors=60), "PNG"), "PIL-written adaptive palette")
    write("png_pil_la.png", pil_bytes(pim.convert("LA"), "PNG"), "PIL-written LA")
    write("png_pil_1.png", pil_bytes(pim.convert("1"), "PNG"), "PIL-written 1-bit")
    # EXIF orientation in an eXIf chunk
    write("png_exif6.png", encoders.png(scene(20, 12, 9), 2, 8, exif=encoders.tiff_orientation(6)), "RGB with eXIf orientation 6")
    # preprocessing sources
    write("pre_wide_97x61.png", encoders.png(scene(97, 61, 11), 2, 8), "preprocessing source, landscape")
    write("pre_tall_50x83.png", encoders.png(scene(50, 83, 12), 2, 8), "preprocessing source, portrait")


def make_jpeg():
    base = scene(61, 37, 2)
    im = Image.fromarray(base)
    for sub, name in ((0, "444"), (1, "422"), (2, "420")):
        for prog in (False, True):
            kind = "prog" if prog else "base"
            write(f"jpg_{name}_{kind}_61x37.jpg", pil_bytes(im, "JPEG", quality=85, subsampling=sub, progressive=prog),
                  f"PIL JPEG {name} {kind} q85")
    write("jpg_420_q100_61x37.jpg", pil_bytes(im, "JPEG", quality=100, subsampling=2), "PIL JPEG 4:2:0 q100 (all-ones quantization)")
    write("jpg_420_q10_61x37.jpg", pil_bytes(im, "JPEG", quality=10, subsampling=2), "PIL JPEG 4:2:0 q10")
    write("jpg_420_optimize_61x37.jpg", pil_bytes(im, "JPEG", quality=80, subsampling=2, optimize=True), "PIL JPEG optimized Huffman tables")
    write("jpg_gray_base.jpg", pil_bytes(im.convert("L"), "JPEG", quality=85), "PIL JPEG grayscale baseline")
    write("jpg_gray_prog.jpg", pil_bytes(im.convert("L"), "JPEG", quality=85, progressive=True), "PIL JPEG grayscale progressive")
    cmyk = im.convert("CMYK")
    write("jpg_cmyk_base.jpg", pil_bytes(cmyk, "JPEG", quality=90), "PIL JPEG CMYK (Adobe, inverted)")
    write("jpg_cmyk_prog.jpg", pil_bytes(cmyk, "JPEG", quality=90, progressive=True), "PIL JPEG CMYK progressive")
    for w, h in ((1, 1), (7, 3), (3, 5), (4, 9), (17, 9), (16, 16)):
        small = Image.fromarray(scene(w, h, 30 + w + h))
        for sub, name in ((1, "422"), (2, "420")):
            write(f"jpg_{name}_{w}x{h}.jpg", pil_bytes(small, "JPEG", quality=90, subsampling=sub), f"PIL JPEG {name} {w}x{h}")
        write(f"jpg_420_prog_{w}x{h}.jpg", pil_bytes(small, "JPEG", quality=90, subsampling=2, progressive=True), f"PIL JPEG 4:2:0 progressive {w}x{h}")
    big = Image.fromarray(scene(333, 517, 3, noise=4))
    write("jpg_420_333x517.jpg", pil_bytes(big, "JPEG", quality=80, subsampling=2), "PIL JPEG 4:2:0 333x517")
    write("jpg_444_prog_333x517.jpg", pil_bytes(big, "JPEG", quality=70, subsampling=0, progressive=True), "PIL JPEG 4:4:4 progressive 333x517")
    scene1024 = Image.fromarray(scene(1024, 768, 4, noise=3, shapes=30))
    write("scene_1024x768.jpg", pil_bytes(scene1024, "JPEG", quality=80, subsampling=2), "PIL JPEG 4:2:0 1024x768 (benchmark, preprocessing)")
    # The PNG twin for the benchmark: the same scene without noise (with noise it would take ~1 MB).
    write("scene_1024x768.png", pil_bytes(Image.fromarray(scene(1024, 768, 4, noise=0, shapes=30)), "PNG", optimize=True),
          "PIL PNG RGB 1024x768, noise-free (benchmark)")
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        write(f"jpg_exif{o}.jpg", pil_bytes(Image.fromarray(scene(40, 24, 40 + o)), "JPEG", quality=90, exif=exif.tobytes()),
              f"PIL JPEG with EXIF orientation {o}")

    # encoders.py for what PIL's writer cannot do, with the standard Huffman tables taken from a PIL file
    t = encoders.huffman_tables_of(pil_bytes(im, "JPEG", quality=75))
    tables = ((t[(0, 0)], t[(1, 0)]), (t[(0, 1)], t[(1, 1)]))
    r, g, b = [base[..., i].astype(np.float64) for i in range(3)]
    yy = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    ycc = [yy, cb, cr]
    jp = lambda **kw: encoders.jpeg(**{"planes": ycc, "tables": tables, **kw})  # noqa: E731
    write("jpg_411_61x37.jpg", jp(sampling=[(4, 1), (1, 1), (1, 1)]), "4:1:1 (Y 4x1)")
    write("jpg_440_61x37.jpg", jp(sampling=[(1, 2), (1, 1), (1, 1)]), "4:4:0 (Y 1x2)")
    write("jpg_mixed_61x37.jpg", jp(sampling=[(2, 2), (2, 1), (1, 2)]), "Y 2x2, Cb 2x1, Cr 1x2")
    write("jpg_420_rst1_61x37.jpg", jp(sampling=[(2, 2), (1, 1), (1, 1)], restart=1), "4:2:0, restart every MCU")
    write("jpg_444_rst7_61x37.jpg", jp(sampling=[(1, 1), (1, 1), (1, 1)], restart=7), "4:4:4, restart every 7 MCUs")
    write("jpg_422_rst3_separate_61x37.jpg", jp(sampling=[(2, 1), (1, 1), (1, 1)], restart=3, separate_scans=True),
          "4:2:2, one scan per component, restart every 3 blocks")
    write("jpg_adobe_rgb_61x37.jpg", jp(planes=[r, g, b], sampling=[(1, 1)] * 3, adobe=0, jfif=False), "Adobe transform 0: RGB")
    write("jpg_ids_rgb_61x37.jpg", jp(planes=[r, g, b], sampling=[(1, 1)] * 3, jfif=False, ids=[82, 71, 66]), "component ids R G B")
    k = np.clip(255 - 0.6 * yy, 0, 255)
    write("jpg_ycck_61x37.jpg", jp(planes=[yy, cb, cr, k], sampling=[(2, 2), (1, 1), (1, 1), (2, 2)], adobe=2, jfif=False),
          "YCCK (Adobe transform 2), 4:2:0")
    write("jpg_cmyk_plain_61x37.jpg", jp(planes=[r, g, b, k], sampling=[(1, 1)] * 4, jfif=False), "CMYK without Adobe marker")
    write("jpg_411_rst2_4x9.jpg", encoders.jpeg(planes=[p[:9, :4] for p in ycc], sampling=[(4, 1), (1, 1), (1, 1)], tables=tables, restart=2),
          "4:1:1 4x9, restart every 2 MCUs")
    write("jpg_440_5x17.jpg", encoders.jpeg(planes=[p[:17, :5] for p in ycc], sampling=[(1, 2), (1, 1), (1, 1)], tables=tables), "4:4:0 5x17")


def make_bmp_pnm():
    rgb = scene(29, 13, 6)
    g = gray_of(rgb)
    im = Image.fromarray(rgb)
    write("bmp_pil_24.bmp", pil_bytes(im, "BMP"), "PIL BMP 24-bit bottom-up")
    write("bmp_pil_32.bmp", pil_bytes(im.convert("RGBA"), "BMP"), "PIL BMP 32-bit")
    write("bmp_pil_p8.bmp", pil_bytes(im.convert("P", palette=Image.ADAPTIVE, colors=40), "BMP"), "PIL BMP 8-bit palette")
    write("bmp_pil_l8.bmp", pil_bytes(im.convert("L"), "BMP"), "PIL BMP 8-bit gray")
    write("bmp_24_topdown.bmp", encoders.bmp(rgb, 24, top_down=True), "24-bit top-down")
    write("bmp_32_bgrx.bmp", encoders.bmp(rgb, 32), "32-bit BI_RGB, X byte ignored")
    pal = np.random.default_rng(4).integers(0, 256, (16, 3))
    write("bmp_8_topdown_short_palette.bmp", encoders.bmp(None, 8, top_down=True, palette=pal, indices=(g >> 4).astype(np.uint8)),
          "8-bit top-down, 16-entry palette")
    write("bmp_24_core.bmp", encoders.bmp(rgb, 24, core=True), "24-bit with the 12-byte core header")
    write("ppm_pil.ppm", pil_bytes(im, "PPM"), "PIL P6")
    write("pgm_pil.pgm", pil_bytes(im.convert("L"), "PPM"), "PIL P5")
    write("ppm_comment.ppm", encoders.pnm(rgb, comment=b"made for tests"), "P6 with a header comment")

# ------------------------------------------------------------------------------------------------ resize / preprocess


FILTERS = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC, 4: Image.BOX, 5: Image.HAMMING}


def get_resize_output_image_size(height, width, size, default_to_square):
    """transformers.image_transforms.get_resize_output_image_size for an int size (or (h, w))."""
    if isinstance(size, (tuple, list)):
        return tuple(size)
    if default_to_square:
        return (size, size)
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def center_crop(image, size):
    """transformers.image_transforms.center_crop on a channels-last array, padding included."""
    crop_height, crop_width = size
    orig_height, orig_width = image.shape[:2]
    top = (orig_height - crop_height) // 2
    bottom = top + crop_height
    left = (orig_width - crop_width) // 2
    right = left + crop_width
    if top >= 0 and bottom <= orig_height and left >= 0 and right <= orig_width:
        return image[top:bottom, left:right]
    new_height = max(crop_height, orig_height)
    new_width = max(crop_width, orig_width)
    new_image = np.zeros_like(image, shape=(new_height, new_width) + image.shape[2:])
    top_pad = math.ceil((new_height - orig_height) / 2)
    bottom_pad = top_pad + orig_height
    left_pad = math.ceil((new_width - orig_width) / 2)
    right_pad = left_pad + orig_width
    new_image[top_pad:bottom_pad, left_pad:right_pad] = image
    top += top_pad
    bottom += top_pad
    left += left_pad
    right += left_pad
    return new_image[max(0, top):min(new_height, bottom), max(0, left):min(new_width, right)]


def expand2square(pil_img, background_color):
    """LLaVA-1.5 (llava/mm_utils.py)."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    result = Image.new(pil_img.mode, (height, height), background_color)
    result.paste(pil_img, ((height - width) // 2, 0))
    return result


def clip_preprocess(pil_img, o):
    """CLIPImageProcessor.preprocess for one image, as float32 (3, H, W); o holds the config's fields."""
    if o.get("pad_to_square"):
        pil_img = expand2square(pil_img, tuple(int(x * 255) for x in o["image_mean"]))
    image = np.array(pil_img.convert("RGB"))                                   # do_convert_rgb, to_numpy_array
    if o["do_resize"]:
        size = o["size"]
        if "shortest_edge" in size:
            out = get_resize_output_image_size(image.shape[0], image.shape[1], size["shortest_edge"], False)
        else:
            out = (size["height"], size["width"])
        image = np.array(Image.fromarray(image).resize((out[1], out[0]), resample=FILTERS[o["resample"]], reducing_gap=None))
    resized = image
    if o["do_center_crop"]:
        image = center_crop(image, (o["crop_size"]["height"], o["crop_size"]["width"]))
    if o["do_rescale"]:
        image = (image.astype(np.float64) * o["rescale_factor"]).astype(np.float32)
    if o["do_normalize"]:
        if not np.issubdtype(image.dtype, np.floating):
            image = image.astype(np.float32)
        mean = np.array(o["image_mean"], dtype=image.dtype)
        std = np.array(o["image_std"], dtype=image.dtype)
        image = (image - mean) / std
    return np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32), resized


def clip_options(**kw):
    o = dict(do_resize=True, size={"shortest_edge": 336}, resample=3, do_center_crop=True, crop_size={"height": 336, "width": 336},
             do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    o.update(kw)
    return o


def float_samples(arr):
    c, h, w = arr.shape
    out = []
    for ch in range(c):
        for x, y in sample_points(w, h):
            out.append([ch, y, x, float(arr[ch, y, x]).hex()])
    return out


def make_resize_and_preprocess():
    resize = []
    for src in ("pre_wide_97x61.png", "pre_tall_50x83.png", "png_rgb8_7x3.png", "png_rgb8_1x1.png"):
        im = Image.open(os.path.join(OUT, src)).convert("RGB")
        for code in range(6):
            for size in ((31, 17), (160, 101), (im.width, max(1, im.height // 3)), (max(1, im.width // 2), im.height), (1, 1)):
                if size == im.size:
                    continue
                r = im.resize(size, FILTERS[code], reducing_gap=None)
                e, _ = rgb_ref(r)
                resize.append({"file": src, "filter": code, **e})
    with open(os.path.join(OUT, "resize.json"), "w") as f:
        json.dump({"pil": Image.__version__, "cases": resize}, f, indent=1)

    cases = []
    option_sets = {
        "clip336": clip_options(),
        "clip336_pad": clip_options(pad_to_square=True),
        "se24_crop20x24": clip_options(size={"shortest_edge": 24}, crop_size={"height": 20, "width": 24}),
        "se40_crop64_pads": clip_options(size={"shortest_edge": 40}, crop_size={"height": 64, "width": 48}),
        "hw30x50_nocrop_bilinear": clip_options(size={"height": 30, "width": 50}, do_center_crop=False, resample=2),
        "se32_norescale": clip_options(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_rescale=False),
        "se32_nonormalize_pad": clip_options(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_normalize=False, pad_to_square=True),
        "noresize_crop16": clip_options(do_resize=False, crop_size={"height": 16, "width": 16}),
    }
    sources = ["scene_1024x768.jpg", "jpg_420_333x517.jpg", "pre_wide_97x61.png", "pre_tall_50x83.png", "png_rgb8_7x3.png", "png_rgb8_1x1.png"]
    for src in sources:
        im = Image.open(os.path.join(OUT, src))
        for name, o in option_sets.items():
            if src == "scene_1024x768.jpg" and not name.startswith("clip336"):
                continue
            arr, resized = clip_preprocess(im, o)
            cases.append({"file": src, "options": name, "shape": list(arr.shape), "sha256": sha(arr.astype("<f4").tobytes()),
                          "resized_sha256": sha(np.ascontiguousarray(resized).tobytes()), "resized_shape": list(resized.shape),
                          "samples": float_samples(arr)})
    with open(os.path.join(OUT, "preprocess.json"), "w") as f:
        json.dump({"pil": Image.__version__, "options": option_sets, "cases": cases}, f, indent=1)


def make_configs():
    llava = {
        "crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
        "do_rescale": True, "do_resize": True, "image_mean": CLIP_MEAN, "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD, "processor_class": "LlavaProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 336},
    }
    with open(os.path.join(OUT, "preprocessor_config_llava15.json"), "w") as f:
        json.dump(llava, f, indent=2)
    old = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
           "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3, "size": 224}
    with open(os.path.join(OUT, "preprocessor_config_clip224_old.json"), "w") as f:
        json.dump(old, f, indent=2)


def main():
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(ASSETS, exist_ok=True)
    for name in os.listdir(OUT):
        if name.split(".")[-1] in ("png", "jpg", "bmp", "ppm", "pgm"):
            os.remove(os.path.join(OUT, name))
    make_png()
    make_jpeg()
    make_bmp_pnm()
    with open(os.path.join(OUT, "decode.json"), "w") as f:
        json.dump({"pil": Image.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"), "zlib": features.version("zlib"),
                   "images": decode_entries}, f, indent=1)
    make_resize_and_preprocess()
    make_configs()
    Image.fromarray(demo_scene(640, 480)).save(os.path.join(ASSETS, "sample.png"), optimize=True)
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"{len(decode_entries)} images, {total / 1024:.0f} KiB under {OUT}; sample.png {os.path.getsize(os.path.join(ASSETS, 'sample.png')) / 1024:.0f} KiB")


def check_with_transformers():
    """On a machine with transformers: compare clip_preprocess with CLIPImageProcessor itself."""
    from transformers import CLIPImageProcessor  # noqa: PLC0415
    with open(os.path.join(OUT, "preprocess.json")) as f:
        ref = json.load(f)
    bad = 0
    for case in ref["cases"]:
        o = dict(ref["options"][case["options"]])
        im = Image.open(os.path.join(OUT, case["file"])).convert("RGB")
        if o.pop("pad_to_square", False):
            im = expand2square(im, tuple(int(x * 255) for x in o["image_mean"]))
        proc = CLIPImageProcessor(**o)
        arr = proc.preprocess(im, return_tensors="np")["pixel_values"][0].astype("<f4")
        ok = sha(arr.tobytes()) == case["sha256"]
        bad += not ok
        print(("ok  " if ok else "DIFF"), case["file"], case["options"])
    print(f"{bad} differences")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--check-transformers":
        check_with_transformers()
    else:
        main()
