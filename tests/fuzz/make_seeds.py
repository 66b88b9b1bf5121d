"""Writes the seed corpora of the fuzz harnesses, which are also fixtures of
tests/c/test_io.c: small IDX and PNG files made here with the standard
library alone (struct, zlib, gzip), independently of tide's readers.

    python3 tests/fuzz/make_seeds.py      (any python3; no third-party modules)

Pixel and value formulas are mirrored in tests/c/test_io.c:
  PNG 8-bit sample (y, x, c) = (37*y + 11*x + 71*c) % 256, images 5 high, 7 wide.
  IDX value i (row-major) of each dtype: see IDX_CASES.
The safetensors seeds are the fixture of make_safetensors_fixture.py plus a
tiny file; run that script first.
"""
import gzip
import os
import shutil
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
H, W = 5, 7


def sample(y, x, c):
    return (37 * y + 11 * x + 71 * c) % 256


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(color_type, depth, rows, extra=b"", interlace=0):
    """rows: list of raw scanline bytes (without filter bytes) in order of
    transmission; for interlaced images, the already-split pass rows."""
    ihdr = struct.pack(">IIBBBBB", W, H, depth, color_type, 0, 0, interlace)
    raw = b"".join(b"\x00" + r for r in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def pack_bits(vals, depth):
    out, acc, n = bytearray(), 0, 0
    for v in vals:
        acc = acc << depth | v
        n += depth
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def rows8(channels, alpha=False):
    rows = []
    for y in range(H):
        r = bytearray()
        for x in range(W):
            for c in range(channels):
                r.append(sample(y, x, c))
            if alpha:
                r.append((x * 40) % 256)
        rows.append(bytes(r))
    return rows


def sub_filtered(rows, bpp):
    """Scanlines with filter type 1 (Sub) instead of 0."""
    out = []
    for r in rows:
        f = bytearray(r)
        for i in range(len(r) - 1, bpp - 1, -1):
            f[i] = (r[i] - r[i - bpp]) % 256
        out.append(bytes(f))
    return out


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_pngs(d):
    files = {}
    files["gray8.png"] = png(0, 8, rows8(1))
    files["graya8.png"] = png(4, 8, rows8(1, alpha=True))
    files["rgb8.png"] = png(2, 8, rows8(3))
    files["rgba8.png"] = png(6, 8, rows8(3, alpha=True))
    rows16 = [b"".join(struct.pack(">H", sample(y, x, c) * 257) for x in range(W) for c in range(3)) for y in range(H)]
    files["rgb16.png"] = png(2, 16, rows16)
    files["gray1.png"] = png(0, 1, [pack_bits([(x + y) % 2 for x in range(W)], 1) for y in range(H)])
    files["gray2.png"] = png(0, 2, [pack_bits([(x + 2 * y) % 4 for x in range(W)], 2) for y in range(H)])
    # palette: entry k = (60k, 255-60k, 17k); index (2x + y) % 4; with a tRNS chunk that must be ignored
    plte = b"".join(bytes((60 * k, 255 - 60 * k, 17 * k)) for k in range(4))
    idx = [pack_bits([(2 * x + y) % 4 for x in range(W)], 2) for y in range(H)]
    files["palette.png"] = png(3, 2, idx, chunk(b"PLTE", plte) + chunk(b"tRNS", b"\x00\x80"))
    # RGB 8-bit with Sub filters
    ihdr = struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0)
    raw = b"".join(b"\x01" + r for r in sub_filtered(rows8(3), 3))
    files["rgb8_sub.png"] = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    # RGB 8-bit, Adam7 interlaced
    passes = []
    for x0, y0, dx, dy in ADAM7:
        xs = list(range(x0, W, dx))
        if not xs:
            continue
        for y in range(y0, H, dy):
            passes.append(bytes(sample(y, x, c) for x in xs for c in range(3)))
    files["rgb8_adam7.png"] = png(2, 8, passes, interlace=1)
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    return len(files)


# name: (dtype code, struct format, dims, value of element i)
IDX_CASES = {
    "u8_3x4": (0x08, "B", (3, 4), lambda i: (i * 23) % 256),
    "i8_2x3": (0x09, "b", (2, 3), lambda i: i * 25 - 60),
    "i16_4": (0x0B, ">h", (4,), lambda i: i * 1000 - 1500),
    "i32_2x2": (0x0C, ">i", (2, 2), lambda i: i * 100000 - 123456),
    "f32_3": (0x0D, ">f", (3,), lambda i: i * 0.5 - 0.25),
    "f64_1x2x2": (0x0E, ">d", (1, 2, 2), lambda i: i * 1.25 - 2.0),
}


def idx_bytes(code, fmt, dims, fn):
    n = 1
    for d in dims:
        n *= d
    head = bytes((0, 0, code, len(dims))) + b"".join(struct.pack(">I", d) for d in dims)
    return head + b"".join(struct.pack(fmt, fn(i)) for i in range(n))


def write_idx(d):
    for name, case in IDX_CASES.items():
        data = idx_bytes(*case)
        with open(os.path.join(d, name + ".idx"), "wb") as f:
            f.write(data)
        with open(os.path.join(d, name + ".idx.gz"), "wb") as f:
            f.write(gzip.compress(data, mtime=0))
    return 2 * len(IDX_CASES)


def write_safetensors(d):
    fixture = os.path.join(HERE, "..", "fixtures", "safetensors", "fixture.safetensors")
    shutil.copyfile(fixture, os.path.join(d, "fixture.safetensors"))
    header = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    header += b" " * (-len(header) % 8)
    with open(os.path.join(d, "tiny.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, -2.0))
    return 2


def main():
    counts = {}
    for kind, fn in (("png", write_pngs), ("idx", write_idx), ("safetensors", write_safetensors)):
        d = os.path.join(CORPUS, kind)
        os.makedirs(d, exist_ok=True)
        counts[kind] = fn(d)
    print("wrote", ", ".join("%d %s" % (n, k) for k, n in counts.items()), "seeds under", CORPUS)


if __name__ == "__main__":
    main()
