#!/usr/bin/env python3
"""Converts a QEMU `screendump` (binary PPM, P6) into a small palette PNG: the VGA text console
has 16 colours, so an indexed image compresses to a few KiB. Usage: ppm2png.py IN.ppm OUT.png"""
import struct
import sys
import zlib


def read_ppm(path):
    data = open(path, "rb").read()
    fields, pos = [], 0
    while len(fields) < 4:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or int(fields[3]) != 255:
        sys.exit(f"{path}: not an 8-bit binary PPM")
    w, h = int(fields[1]), int(fields[2])
    return w, h, data[pos + 1 : pos + 1 + w * h * 3]


def chunk(kind, body):
    c = kind + body
    return struct.pack(">I", len(body)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)


def main():
    w, h, px = read_ppm(sys.argv[1])
    palette, index, rows = [], {}, bytearray()
    for y in range(h):
        rows.append(0)
        for x in range(w):
            o = (y * w + x) * 3
            rgb = px[o : o + 3]
            i = index.get(rgb)
            if i is None:
                if len(palette) == 256:
                    sys.exit("more than 256 colours: not a text-mode screen")
                i = index[rgb] = len(palette)
                palette.append(rgb)
            rows.append(i)
    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
    png += chunk(b"PLTE", b"".join(palette))
    png += chunk(b"IDAT", zlib.compress(bytes(rows), 9))
    png += chunk(b"IEND", b"")
    open(sys.argv[2], "wb").write(png)


if __name__ == "__main__":
    main()
