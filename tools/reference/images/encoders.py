"""Minimal PNG, JPEG, BMP and PNM writers for test inputs that PIL's own writers cannot produce.

These only *make inputs* (Adam7, 1/2/4/16-bit PNG with every filter type, 4:1:1 and 4:4:0 JPEG, restart
intervals, YCCK, Adobe RGB, one scan per component, top-down BMP, ...). The expected pixels always come from
PIL decoding the written bytes (make_reference.py), never from these writers.
"""
import struct
import zlib

import numpy as np

# ------------------------------------------------------------------------------------------------ PNG

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _pack_row(samples, depth):
    """samples: 1-D integer array of one row's samples (channels interleaved)."""
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    per = 8 // depth
    n = len(samples)
    padded = np.zeros(((n + per - 1) // per) * per, dtype=np.uint16)
    padded[:n] = samples
    padded = padded.reshape(-1, per)
    out = np.zeros(len(padded), dtype=np.uint16)
    for i in range(per):
        out |= padded[:, i] << (8 - depth * (i + 1))
    return out.astype(np.uint8).tobytes()


def _filter_row(kind, raw, prior, bpp):
    r = np.frombuffer(raw, dtype=np.uint8).astype(np.int16)
    p = np.frombuffer(prior, dtype=np.uint8).astype(np.int16)
    a = np.concatenate([np.zeros(bpp, np.int16), r[:-bpp]]) if len(r) > bpp else np.zeros_like(r)
    c = np.concatenate([np.zeros(bpp, np.int16), p[:-bpp]]) if len(p) > bpp else np.zeros_like(p)
    if len(r) <= bpp:
        a = np.zeros_like(r)
        c = np.zeros_like(r)
    if kind == 0:
        f = r
    elif kind == 1:
        f = r - a
    elif kind == 2:
        f = r - p
    elif kind == 3:
        f = r - ((a + p) >> 1)
    else:
        pa, pb, pc = np.abs(p - c), np.abs(a - c), np.abs(a + p - 2 * c)
        pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, p, c))
        f = r - pred
    return bytes([kind]) + (f & 0xFF).astype(np.uint8).tobytes()


def png(samples, color_type, depth, interlace=False, palette=None, trns=None, exif=None,
        idat_size=None, filters="cycle", extra_chunks=(), empty_idat=False):
    """samples: (h, w, channels) integer array in 0 .. 2**depth - 1."""
    h, w = samples.shape[:2]
    ch = CHANNELS[color_type]
    assert samples.shape[2] == ch
    bpp = max(1, ch * depth // 8)
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    raw = bytearray()
    row_index = 0
    for pi, (x0, y0, dx, dy) in enumerate(passes):
        sub = samples[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        prior = None
        for r in range(sub.shape[0]):
            packed = _pack_row(sub[r].reshape(-1), depth)
            if prior is None:
                prior = bytes(len(packed))
            kind = (row_index + pi) % 5 if filters == "cycle" else filters
            raw += _filter_row(kind, packed, prior, bpp)
            prior = packed
            row_index += 1
    comp = zlib.compress(bytes(raw), 9)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0))
    for kind, data in extra_chunks:
        out += png_chunk(kind, data)
    if exif is not None:
        out += png_chunk(b"eXIf", exif)
    if palette is not None:
        out += png_chunk(b"PLTE", bytes(np.asarray(palette, dtype=np.uint8).reshape(-1)))
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    step = idat_size or len(comp) or 1
    pieces = [comp[i:i + step] for i in range(0, len(comp), step)] or [b""]
    for i, piece in enumerate(pieces):
        out += png_chunk(b"IDAT", piece)
        if empty_idat and i == 0:
            out += png_chunk(b"IDAT", b"")
    return out + png_chunk(b"IEND", b"")


def tiff_orientation(value, little=False):
    """A minimal TIFF structure holding IFD0 with one entry: Orientation (0x0112, SHORT) = value."""
    if little:
        return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, value, 0) + struct.pack("<I", 0)
    return b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, value, 0) + struct.pack(">I", 0)

# ------------------------------------------------------------------------------------------------ JPEG

ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63])

LUMA_Q = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])
CHROMA_Q = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99]
    + [99] * 32)


def quality_table(base, quality):
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


def _dct_matrix():
    m = np.zeros((8, 8))
    for k in range(8):
        for n in range(8):
            m[k, n] = (np.sqrt(0.125) if k == 0 else 0.5) * np.cos((2 * n + 1) * k * np.pi / 16)
    return m


DCT = _dct_matrix()


class _Huff:
    def __init__(self, bits, vals):
        self.bits, self.vals = bits, vals
        self.code = {}
        code, k = 0, 0
        for length in range(1, 17):
            for _ in range(bits[length - 1]):
                self.code[vals[k]] = (code, length)
                code += 1
                k += 1
            code <<= 1


class _BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value, length):
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc, self.n = 0, 0

    def flush(self):
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)


def _category(v):
    return 0 if v == 0 else int(abs(int(v))).bit_length()


def _encode_block(bw, coefs, pred, dc, ac):
    diff = int(coefs[0]) - pred
    s = _category(diff)
    bw.put(*dc.code[s])
    if s:
        bw.put(diff if diff > 0 else diff + (1 << s) - 1, s)
    run = 0
    for k in range(1, 64):
        v = int(coefs[k])
        if v == 0:
            run += 1
            continue
        while run > 15:
            bw.put(*ac.code[0xF0])
            run -= 16
        s = _category(v)
        bw.put(*ac.code[(run << 4) | s])
        bw.put(v if v > 0 else v + (1 << s) - 1, s)
        run = 0
    if run:
        bw.put(*ac.code[0x00])
    return int(coefs[0])


def _segment(marker, payload):
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg(planes, sampling, tables, quality=85, restart=0, adobe=None, jfif=True, ids=None, separate_scans=False,
         exif=None):
    """Baseline Huffman JPEG. planes: list of full-resolution (h, w) float arrays of sample values 0..255, one per
    component; sampling: list of (h, v) factors; tables: ((dc_bits, dc_vals), (ac_bits, ac_vals)) for luma and
    chroma, taken from a PIL-written file. The first component uses the luma tables, the others the chroma ones
    (a fourth, K, uses luma). Chroma is downsampled by box averaging."""
    h, w = planes[0].shape
    n = len(planes)
    ids = ids or list(range(1, n + 1))
    hmax = max(s[0] for s in sampling)
    vmax = max(s[1] for s in sampling)
    mx, my = -(-w // (8 * hmax)), -(-h // (8 * vmax))
    qt = [quality_table(LUMA_Q, quality), quality_table(CHROMA_Q, quality)]
    which = [0 if i in (0, 3) else 1 for i in range(n)]
    huff = [(_Huff(*tables[0][0]), _Huff(*tables[0][1])), (_Huff(*tables[1][0]), _Huff(*tables[1][1]))]

    comps = []
    for i, p in enumerate(planes):
        hs, vs = sampling[i]
        fx, fy = hmax // hs, vmax // vs
        cw, chh = -(-w * hs // hmax), -(-h * vs // vmax)
        # pad the full plane to a multiple of the factors by edge replication, then box-average
        pw, ph = cw * fx, chh * fy
        full = np.pad(p, ((0, ph - h), (0, pw - w)), mode="edge")
        small = full.reshape(chh, fy, cw, fx).mean(axis=(1, 3))
        bw_, bh_ = mx * hs, my * vs
        small = np.pad(small, ((0, bh_ * 8 - chh), (0, bw_ * 8 - cw)), mode="edge")
        blocks = np.zeros((bh_, bw_, 64), dtype=np.int32)
        q = qt[which[i]]
        for by in range(bh_):
            for bx in range(bw_):
                blk = small[by * 8:by * 8 + 8, bx * 8:bx * 8 + 8] - 128.0
                c = (DCT @ blk @ DCT.T).reshape(-1)
                blocks[by, bx] = np.rint(c[ZIGZAG] / q).astype(np.int32)
        comps.append(dict(h=hs, v=vs, blocks=blocks, cw=cw, ch=chh))

    out = bytearray(b"\xFF\xD8")
    if jfif:
        out += _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    if exif is not None:
        out += _segment(0xE1, b"Exif\x00\x00" + exif)
    if adobe is not None:
        out += _segment(0xEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, adobe))
    for t in range(2):
        out += _segment(0xDB, bytes([t]) + bytes(int(v) for v in qt[t]))
    sof = struct.pack(">BHHB", 8, h, w, n)
    for i in range(n):
        sof += bytes([ids[i], (sampling[i][0] << 4) | sampling[i][1], which[i]])
    out += _segment(0xC0, sof)
    for t in range(2):
        for cls, (bits, vals) in ((0, tables[t][0]), (1, tables[t][1])):
            out += _segment(0xC4, bytes([(cls << 4) | t]) + bytes(bits) + bytes(vals))
    if restart:
        out += _segment(0xDD, struct.pack(">H", restart))

    def scan(members, units):
        payload = bytes([len(members)])
        for i in members:
            payload += bytes([ids[i], (which[i] << 4) | which[i]])
        payload += bytes([0, 63, 0])
        data = _segment(0xDA, payload)
        bw = _BitWriter()
        preds = {i: 0 for i in members}
        for u, blocks in enumerate(units):
            if restart and u and u % restart == 0:
                bw.flush()
                data += bytes(bw.out) + bytes([0xFF, 0xD0 + ((u // restart - 1) & 7)])
                bw = _BitWriter()
                preds = {i: 0 for i in members}
            for i, blk in blocks:
                dc, ac = huff[which[i]]
                preds[i] = _encode_block(bw, blk, preds[i], dc, ac)
        bw.flush()
        return data + bytes(bw.out)

    if separate_scans or n == 1:
        for i in range(n):
            c = comps[i]
            units = [[(i, c["blocks"][by, bx])] for by in range(-(-c["ch"] // 8)) for bx in range(-(-c["cw"] // 8))]
            out += scan([i], units)
    else:
        units = []
        for y in range(my):
            for x in range(mx):
                mcu = []
                for i, c in enumerate(comps):
                    for v in range(c["v"]):
                        for hh in range(c["h"]):
                            mcu.append((i, c["blocks"][y * c["v"] + v, x * c["h"] + hh]))
                units.append(mcu)
        out += scan(list(range(n)), units)
    return bytes(out + b"\xFF\xD9")


def huffman_tables_of(jpeg_bytes):
    """The DHT tables of a JPEG file: {(class, index): (bits, vals)}."""
    tables, p = {}, 2
    while p < len(jpeg_bytes):
        assert jpeg_bytes[p] == 0xFF
        marker = jpeg_bytes[p + 1]
        if marker == 0xDA:
            break
        length = struct.unpack(">H", jpeg_bytes[p + 2:p + 4])[0]
        seg = jpeg_bytes[p + 4:p + 2 + length]
        if marker == 0xC4:
            q = 0
            while q < len(seg):
                tc, th = seg[q] >> 4, seg[q] & 15
                bits = list(seg[q + 1:q + 17])
                vals = list(seg[q + 17:q + 17 + sum(bits)])
                tables[(tc, th)] = (bits, vals)
                q += 17 + sum(bits)
        p += 2 + length
    return tables

# ------------------------------------------------------------------------------------------------ BMP / PNM


def bmp(rgb, bits=24, top_down=False, palette=None, indices=None, core=False):
    """Uncompressed BMP. bits 24/32 from rgb (h, w, 3); bits 8 from indices (h, w) and palette (n, 3)."""
    h, w = (rgb.shape[:2] if rgb is not None else indices.shape)
    stride = (w * bits + 31) // 32 * 4
    rows = []
    for y in range(h):
        if bits == 8:
            row = indices[y].astype(np.uint8).tobytes()
        elif bits == 24:
            row = rgb[y][:, ::-1].astype(np.uint8).tobytes()
        else:
            bgrx = np.concatenate([rgb[y][:, ::-1], np.full((w, 1), 0x5A)], axis=1)
            row = bgrx.astype(np.uint8).tobytes()
        rows.append(row + bytes(stride - len(row)))
    if not top_down:
        rows = rows[::-1]
    pal = b""
    if bits == 8:
        pal = b"".join(bytes([b, g, r]) + (b"" if core else b"\x00") for r, g, b in np.asarray(palette, dtype=np.uint8))
    if core:
        info = struct.pack("<IHHHH", 12, w, h, 1, bits)
    else:
        info = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, bits, 0, stride * h, 2835, 2835,
                           len(palette) if bits == 8 else 0, 0)
    offset = 14 + len(info) + len(pal)
    data = b"".join(rows)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + pal + data


def pnm(arr, comment=None):
    """P6 for (h, w, 3), P5 for (h, w); maxval 255; an optional comment line in the header."""
    magic = b"P6" if arr.ndim == 3 else b"P5"
    h, w = arr.shape[:2]
    head = magic + b"\n" + (b"# " + comment + b"\n" if comment else b"") + b"%d %d\n255\n" % (w, h)
    return head + arr.astype(np.uint8).tobytes()
