"""Rewrites a safetensors file with every float32 tensor rounded to float16 (half the size).

    python scripts/safetensors-fp16.py IN OUT

ctp loads any float dtype into its fp32 parameters, so the copy is a compact form of the same
pretrained weights (each value rounded to fp16's 11-bit mantissa) for machines that take only a
few tens of MiB of files per run (scripts/gpu-pack.sh --emojicl). Needs torch only.
"""
import json
import struct
import sys

import torch


def main(src: str, dst: str) -> None:
    raw = open(src, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = raw[8 + n :]
    meta = header.pop("__metadata__", None)
    out_header, chunks, offset = {}, [], 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        a, b = info["data_offsets"]
        data = body[a:b]
        dtype = info["dtype"]
        if dtype == "F32":
            t = torch.frombuffer(bytearray(data), dtype=torch.float32).to(torch.float16)
            data, dtype = t.numpy().tobytes() if hasattr(t, "numpy") else bytes(t.untyped_storage()), "F16"
        out_header[name] = {"dtype": dtype, "shape": info["shape"], "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if meta is not None:
        out_header["__metadata__"] = meta
    h = json.dumps(out_header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
