"""Shared by the tests: tiny PNGs from the standard library."""
import struct
import zlib


def png(rgb, size=32):
    """A solid-colour RGB PNG."""

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * size
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * size))
            + chunk(b"IEND", b""))


COLOURS = [
    ("a red square", (220, 30, 30)),
    ("a green square", (30, 180, 60)),
    ("a blue square", (30, 60, 220)),
    ("a yellow square", (240, 220, 40)),
    ("a black square", (10, 10, 10)),
    ("a white square", (250, 250, 250)),
    ("an orange square", (250, 140, 20)),
    ("a purple square", (140, 40, 180)),
]
