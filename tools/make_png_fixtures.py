#!/usr/bin/env python3
"""Writes the HistoData test fixtures into Tests/HistoDataTests/Fixtures/:

- one small PNG per read format (gray, gray+alpha, RGB, RGBA at 8 and 16 bits; 8- and 4-bit palette, with and
  without transparency), encoded here with numpy + zlib only (no PIL), so the Swift reader (libpng) is checked
  against an independent encoder; every row filter type is used;
- png.json: per file, the samples libpng should decode (palette expanded to RGB or RGBA, interleaved, row-major);
- resize.json: PyTorch's F.interpolate (bilinear and nearest-exact, align_corners=False) of a small input.

Usage: python3 tools/make_png_fixtures.py          (needs numpy; torch for resize.json)
"""
import json, os, struct, zlib
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "HistoDataTests", "Fixtures")
WIDTH, HEIGHT = 7, 5  # odd sizes catch row-stride and transposition mistakes

COLOR_TYPES = {"gray": 0, "rgb": 2, "palette": 3, "gray_alpha": 4, "rgba": 6}
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def filter_row(kind, row, prior, bpp):
    out = bytearray([kind])
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        predictor = [0, a, b, (a + b) // 2, paeth(a, b, c)][kind]
        out.append((x - predictor) & 0xFF)
    return out


def encode(values, color_type, bit_depth, palette=None, alpha=None):
    """values: [H, W, C] integers as stored (palette indices for colour type 3)."""
    height, width, channels = values.shape
    if bit_depth == 16:
        rows = [values[y].astype(">u2").tobytes() for y in range(height)]
    elif bit_depth == 8:
        rows = [values[y].astype(np.uint8).tobytes() for y in range(height)]
    else:  # sub-byte depths: one channel, packed from the most significant bit
        per_byte = 8 // bit_depth
        rows = []
        for y in range(height):
            packed = bytearray((width + per_byte - 1) // per_byte)
            for x in range(width):
                packed[x // per_byte] |= int(values[y, x, 0]) << (8 - bit_depth * (x % per_byte + 1))
            rows.append(bytes(packed))
    bpp = max(1, channels * bit_depth // 8)
    raw, prior = bytearray(), bytes(len(rows[0]))
    for y, row in enumerate(rows):
        raw += filter_row(y % 5, row, prior, bpp)
        prior = row
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    if palette is not None:
        png += chunk(b"PLTE", bytes(np.asarray(palette, dtype=np.uint8).ravel()))
    if alpha is not None:
        png += chunk(b"tRNS", bytes(np.asarray(alpha, dtype=np.uint8)))
    return png + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b"")


def direct(rng, kind, bit_depth):
    channels = CHANNELS[COLOR_TYPES[kind]]
    top = 2**bit_depth
    values = rng.integers(0, top, size=(HEIGHT, WIDTH, channels))
    values[0, 0] = 0
    values[0, 1] = top - 1  # both extremes appear in every channel
    if channels in (2, 4):
        # Mostly opaque (exact even through libpng's premultiplied 16-bit path), some translucent, one clear.
        alpha = np.full((HEIGHT, WIDTH), top - 1)
        alpha[1, :] = rng.integers(top // 2, top - 1, size=WIDTH)
        alpha[2, 3] = 0
        values[..., -1] = alpha
    return values


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240611)
    expected = {}

    def emit(name, png, decoded, bit_depth):
        with open(os.path.join(OUT, name + ".png"), "wb") as f:
            f.write(png)
        h, w, c = decoded.shape
        expected[name] = {"width": w, "height": h, "channels": c, "bitDepth": bit_depth,
                          "samples": [int(v) for v in decoded.ravel()]}

    for kind in ("gray", "gray_alpha", "rgb", "rgba"):
        for bit_depth in (8, 16):
            values = direct(rng, kind, bit_depth)
            emit(f"{kind}{bit_depth}", encode(values, COLOR_TYPES[kind], bit_depth), values, bit_depth)

    palette = rng.integers(0, 256, size=(6, 3))
    indices = rng.integers(0, len(palette), size=(HEIGHT, WIDTH, 1))
    emit("palette8", encode(indices, 3, 8, palette=palette), palette[indices[..., 0]], 8)
    emit("palette4", encode(indices, 3, 4, palette=palette), palette[indices[..., 0]], 8)
    transparency = [255, 0, 128, 255, 40]  # entries past the tRNS list are opaque
    rgba = np.concatenate([palette, np.array(transparency + [255] * (len(palette) - len(transparency)))[:, None]], axis=1)
    emit("palette8_trns", encode(indices, 3, 8, palette=palette, alpha=transparency), rgba[indices[..., 0]], 8)

    with open(os.path.join(OUT, "png.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))

    import torch
    import torch.nn.functional as F
    source = rng.standard_normal((2, 5, 7)).astype(np.float32)
    cases = []
    for height, width in ((3, 4), (8, 11), (5, 7), (1, 1), (10, 3)):
        for name, mode in (("bilinear", "bilinear"), ("nearest", "nearest-exact")):
            kwargs = {"align_corners": False} if mode == "bilinear" else {}
            out = F.interpolate(torch.from_numpy(source)[None], size=(height, width), mode=mode, **kwargs)[0]
            cases.append({"filter": name, "height": height, "width": width, "values": out.ravel().tolist()})
    with open(os.path.join(OUT, "resize.json"), "w") as f:
        json.dump({"shape": list(source.shape), "values": source.ravel().tolist(), "cases": cases}, f,
                  separators=(",", ":"))


if __name__ == "__main__":
    main()
