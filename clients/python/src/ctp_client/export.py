"""Convert a version downloaded with ``ctpctl export`` to ONNX or to safetensors, and verify
the conversion against the daemon's own embeddings of the probe set (docs/export.md).

    python -m ctp_client.export --from DIR --format onnx|safetensors --out OUT

``onnx``: ``image_encoder.onnx`` (``pixel_values`` [B, 3, S, S] -> ``image_embeds`` [B, E]) and
``text_encoder.onnx`` (``input_ids``, ``attention_mask`` [B, L] -> ``text_embeds`` [B, E]),
each ending in the L2-normalised projection that Embed returns, exported with
``torch.onnx.export`` and run with ONNX Runtime for the check; plus ``preprocessing.json``,
``tokenizer.json`` and ``config.json``.
``safetensors``: ``model.safetensors`` (the encoders' float32 weights, checkpoint names
without ``online.``), ``config.json``, ``tokenizer.json`` and ``ctp_torch.py`` (a copy of
``ctp_client.torch``: ``ctp_torch.load(OUT)``), checked by loading OUT back with it.

Both also copy the model card and ``probe.json`` and write ``verification.json``. Everything
is written into a temp folder next to OUT, which becomes OUT only if ``weights.safetensors``
matches its recorded sha256 and every probe embedding has a cosine similarity of at least
0.9999 (fp32) with the daemon's; otherwise nothing is written and the exit code is 1.

Needs ``pip install 'ctp-client[export]'`` (torch, safetensors, tokenizers, onnx, onnxscript,
onnxruntime).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

__all__ = ["ExportError", "export", "read_probe", "compare", "MIN_COSINE"]

MIN_COSINE = 0.9999
FORMATS = ("onnx", "safetensors")
COPIED = ("config.json", "tokenizer.json", "model_card.md", "model_card.json", "probe.json")


class ExportError(Exception):
    """The download is unusable or the conversion does not reproduce the daemon's embeddings."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_download(src: Path) -> Dict[str, Any]:
    """config.json of a ``ctpctl export`` folder, after checking the weights' sha256."""
    for name in ("config.json", "weights.safetensors", "tokenizer.json", "probe.json"):
        if not (src / name).is_file():
            raise ExportError(f"{src}: {name} is missing (is this a `ctpctl export` folder?)")
    config = json.loads((src / "config.json").read_text())
    major = str(config.get("format", "")).split("/")[-1].split(".")[0]
    if not str(config.get("format", "")).startswith("ctp-export/") or major != "1":
        raise ExportError(f"{src}/config.json: unsupported format {config.get('format')!r}")
    want = config["weights"]["sha256"]
    got = _sha256(src / "weights.safetensors")
    if got != want:
        raise ExportError(
            f"{src}/weights.safetensors: sha256 {got} does not match the version's {want} "
            "(changed after download?)"
        )
    return config


def read_probe(src: Path) -> Dict[str, Any]:
    """probe.json with its pixels decoded (``pixels``: list of bytes) and embeddings as arrays."""
    p = json.loads((src / "probe.json").read_text())
    samples = p["samples"]
    if not samples:
        raise ExportError(f"{src}/probe.json has no samples")
    return {
        "image_size": int(p["image_size"]),
        "pixels": [base64.b64decode(s["pixels_base64"]) for s in samples],
        "captions": [s["caption"] for s in samples],
        "image": np.array([s["image_embedding"] for s in samples], dtype=np.float32),
        "text": np.array([s["text_embedding"] for s in samples], dtype=np.float32),
    }


def compare(got: np.ndarray, want: np.ndarray) -> List[float]:
    """Cosine similarity of each row pair."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    num = (got * want).sum(1)
    den = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    return list(num / np.maximum(den, 1e-30))


def _inputs(src: Path, config: Dict[str, Any], probe: Dict[str, Any]):
    from tokenizers import Tokenizer

    from . import torch as ct

    pixels = ct.pixels_to_tensor(probe["pixels"], probe["image_size"])
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    ids, mask = ct.tokenize(tok, probe["captions"], int(config["architecture"]["max_tokens"]))
    return pixels, ids, mask


@contextlib.contextmanager
def _quiet():
    """The exporter's notes (torchvision ops it skips, deprecations) are not the user's business."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)


def _write_onnx(model: Any, tmp: Path, pixels, ids, mask) -> Callable[[], Tuple[Any, Any]]:
    import torch

    from . import torch as ct

    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=1, max=512)
    with torch.no_grad(), _quiet():
        torch.onnx.export(
            ct.ImageEncoder(model).eval(),
            (pixels,),
            str(tmp / "image_encoder.onnx"),
            input_names=["pixel_values"],
            output_names=["image_embeds"],
            dynamic_shapes={"pixel_values": {0: batch}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        torch.onnx.export(
            ct.TextEncoder(model).eval(),
            (ids, mask),
            str(tmp / "text_encoder.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["text_embeds"],
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )

    def run() -> Tuple[Any, Any]:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        img = ort.InferenceSession(str(tmp / "image_encoder.onnx"), opts, providers=["CPUExecutionProvider"])
        txt = ort.InferenceSession(str(tmp / "text_encoder.onnx"), opts, providers=["CPUExecutionProvider"])
        i = img.run(None, {"pixel_values": pixels.numpy()})[0]
        t = txt.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        return i, t

    return run


def _write_safetensors(model: Any, tmp: Path, pixels, ids, mask) -> Callable[[], Tuple[Any, Any]]:
    import torch
    from safetensors.torch import save_file

    from . import torch as ct

    state = {
        k: v.detach().contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(ct.__file__, tmp / "ctp_torch.py")

    def run() -> Tuple[Any, Any]:
        # The written folder, loaded back as a user would.
        m = ct.load(tmp)
        with torch.no_grad():
            return m.encode_image(pixels).numpy(), m.encode_text(ids, mask).numpy()

    return run


def _preprocessing(config: Dict[str, Any]) -> Dict[str, Any]:
    a = config["architecture"]
    return {
        "image": dict(config["preprocessing"], input="pixel_values", output="image_embeds"),
        "text": dict(
            config["tokenizer"],
            inputs=["input_ids", "attention_mask"],
            output="text_embeds",
            dtype="int64",
        ),
        "embed_dim": a["embed_dim"],
        "normalized": True,
    }


def export(src: str | os.PathLike, fmt: str, out: str | os.PathLike, min_cosine: float = MIN_COSINE) -> Dict[str, Any]:
    """Converts the ``ctpctl export`` folder ``src`` to ``fmt`` ("onnx" or "safetensors") in the
    new folder ``out`` and returns the verification report (also ``out/verification.json``).
    Raises ``ExportError`` (and writes nothing) if the check fails."""
    import torch

    from . import torch as ct

    src, out = Path(src), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, not {fmt!r}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not an empty folder")
    config = check_download(src)
    probe = read_probe(src)
    model = ct.load(src)
    pixels, ids, mask = _inputs(src, config, probe)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write = _write_onnx if fmt == "onnx" else _write_safetensors
        run = write(model, tmp, pixels, ids, mask)
        for name in COPIED:
            shutil.copyfile(src / name, tmp / name)
        if fmt == "onnx":
            (tmp / "preprocessing.json").write_text(json.dumps(_preprocessing(config), indent=2) + "\n")
        image, text = run()
        cos_i, cos_t = compare(image, probe["image"]), compare(text, probe["text"])
        worst = min(cos_i + cos_t)
        runtime = (
            f"onnxruntime {__import__('onnxruntime').__version__}"
            if fmt == "onnx"
            else f"torch {torch.__version__}"
        )
        report = {
            "format": fmt,
            "model": config.get("model"),
            "version": config.get("version"),
            "checkpoint_sha256": config["weights"]["sha256"],
            "runtime": runtime,
            "threshold": min_cosine,
            "min_cosine": worst,
            "passed": bool(worst >= min_cosine),
            "samples": [
                {"caption": c, "image_cosine": a, "text_cosine": b}
                for c, a, b in zip(probe["captions"], cos_i, cos_t)
            ],
        }
        if not report["passed"]:
            bad = [
                f"sample {i} ({s['caption']!r}): image {s['image_cosine']:.6f}, text {s['text_cosine']:.6f}"
                for i, s in enumerate(report["samples"])
                if min(s["image_cosine"], s["text_cosine"]) < min_cosine
            ]
            raise ExportError(
                f"the {fmt} conversion does not reproduce the daemon's probe embeddings "
                f"(cosine < {min_cosine}): " + "; ".join(bad)
            )
        (tmp / "verification.json").write_text(json.dumps(report, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ctp_client.export",
        description="Convert a `ctpctl export` folder to ONNX or safetensors, verified against "
        "the daemon's probe embeddings.",
    )
    ap.add_argument("--from", dest="src", required=True, help="folder written by `ctpctl export`")
    ap.add_argument("--format", required=True, choices=FORMATS)
    ap.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    ap.add_argument("--min-cosine", type=float, default=MIN_COSINE, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    try:
        r = export(a.src, a.format, a.out, a.min_cosine)
    except (ExportError, OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{a.format} export of {r['model']} version {r['version']} written to {a.out}: "
          f"{len(r['samples'])} probe samples, min cosine {r['min_cosine']:.7f} ({r['runtime']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
