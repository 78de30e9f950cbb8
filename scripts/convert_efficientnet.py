"""Convert EfficientNet-Lite0's legacy-pickle .pth to safetensors.

torch.load reads the pre-1.6 format (and gathers the strided TF-layout views); the safetensors
file is written by hand (8-byte little-endian header length, JSON header, raw little-endian data)
so no extra package is needed. Only floating-point tensors are kept (num_batches_tracked is not).
"""
import json, os, struct, sys

import torch


def main(src: str, dst: str) -> None:
    state = torch.load(src, map_location="cpu", weights_only=False)
    header, blobs, offset = {}, [], 0
    for name in sorted(state):
        t = state[name]
        if not torch.is_floating_point(t):
            continue
        data = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dst)
    print(f"wrote {len(header)} tensors to {dst}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
