"""A reference PyTorch implementation of a ctpd version's two encoders (docs/export.md).

``load(folder)`` reads a folder written by ``ctpctl export`` (``weights.safetensors``, whose
model tensors are under ``online.``) or by ``python -m ctp_client.export --format safetensors``
(``model.safetensors``, no prefix), plus its ``config.json``, and returns a ``CtpEncoders`` in
eval mode whose ``encode_image`` and ``encode_text`` return exactly what the daemon's ``Embed``
returns: the L2-normalised projections of the pooled image and text features.

It mirrors ``src/trainer/model/*.rs`` layer for layer, with the checkpoint's own tensor names:
a ViT (timm naming, pre-norm blocks, LayerNorm eps 1e-6, exact GELU, final norm, [CLS]) for
``tiny`` and ``base``; EfficientNet-Lite0 (lukemelas naming, TF "SAME" padding, ReLU6, BN eps
1e-3, eval-mode BatchNorm, mean pool) for ``small``; the text layers of a BERT (Hugging Face
naming, post-norm, LayerNorm eps 1e-12, exact GELU) pooled by [CLS] or by the mask-weighted
mean. The fusion layers and the MLM head are not needed for embeddings and are not built.

Needs torch and safetensors (``pip install 'ctp-client[export]'``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CtpEncoders", "ImageEncoder", "TextEncoder", "load", "pixels_to_tensor", "tokenize"]

# (repeats, kernel, stride, expand, in, out) per EfficientNet-Lite0 stage.
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
EFFICIENTNET_FEATURES = 1280


def _attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(d) [masked]) v; ``mask`` is bool [B, 1, 1, S], True = attend."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores.softmax(-1) @ v


def normalize(x: Tensor) -> Tensor:
    """Row-wise L2 normalisation: x / max(||x||, 1e-12) (F.normalize)."""
    return x / x.norm(p=2, dim=-1, keepdim=True).clamp_min(1e-12)


# --- ViT (tiny, base) -------------------------------------------------------------------


class _VitAttn(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:
        b, n, w = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        a = _attention(qkv[0], qkv[1], qkv[2], None)
        return self.proj(a.transpose(1, 2).reshape(b, n, w))


class _VitMlp(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _VitBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = _VitAttn(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = _VitMlp(width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch, stride=patch)


class Vit(nn.Module):
    def __init__(self, image: int, patch: int, width: int, layers: int, heads: int):
        super().__init__()
        n = (image // patch) ** 2
        self.patch_embed = _PatchEmbed(patch, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, width))
        self.blocks = nn.ModuleList(_VitBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.width = width

    def pooled(self, x: Tensor) -> Tensor:
        p = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), p], dim=1) + self.pos_embed
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h)[:, 0]


# --- EfficientNet-Lite0 (small) ----------------------------------------------------------


def _same_pad(x: Tensor, k: int, s: int) -> Tensor:
    """TensorFlow "SAME": total max((ceil(i/s)-1)*s + k - i, 0), the extra pixel right/bottom."""
    h, w = int(x.shape[2]), int(x.shape[3])
    ph = max(((h + s - 1) // s - 1) * s + k - h, 0)
    pw = max(((w + s - 1) // s - 1) * s + k - w, 0)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class _MBConv(nn.Module):
    def __init__(self, i: int, o: int, k: int, s: int, e: int):
        super().__init__()
        mid = i * e
        self.has_expand = e != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(i, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride=s, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, o, 1, bias=False)
        self._bn2 = _bn(o)
        self.k, self.s, self.residual = k, s, s == 1 and i == o

    def forward(self, x: Tensor) -> Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(_same_pad(h, self.k, self.s))))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, k, stride, e, cin, cout in _STAGES:
            for r in range(repeats):
                i, s = (cin, stride) if r == 0 else (cout, 1)
                blocks.append(_MBConv(i, cout, k, s, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, EFFICIENTNET_FEATURES, 1, bias=False)
        self._bn1 = _bn(EFFICIENTNET_FEATURES)
        self.width = EFFICIENTNET_FEATURES

    def pooled(self, x: Tensor) -> Tensor:
        h = F.relu6(self._bn0(self._conv_stem(_same_pad(x, 3, 2))))
        for b in self._blocks:
            h = b(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        return h.mean(dim=(2, 3))


# --- BERT text layers --------------------------------------------------------------------


class _Linear(nn.Module):
    """A named wrapper so ``dense``-style paths match Hugging Face's (``output.dense``)."""

    def __init__(self, i: int, o: int):
        super().__init__()
        self.dense = nn.Linear(i, o)


class _SelfAttn(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)


class _AttnOut(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.self = _SelfAttn(hidden)
        self.output = _AttnOut(hidden)
        self.heads = heads

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n, h = x.shape
        d = h // self.heads

        def split(t: Tensor) -> Tensor:
            return t.reshape(b, n, self.heads, d).transpose(1, 2)

        s = self.self
        ctx = _attention(split(s.query(x)), split(s.key(x)), split(s.value(x)), mask)
        ctx = ctx.transpose(1, 2).reshape(b, n, h)
        return self.output.LayerNorm(self.output.dense(ctx) + x)


class _Output(nn.Module):
    def __init__(self, i: int, hidden: int):
        super().__init__()
        self.dense = nn.Linear(i, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)


class _BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int):
        super().__init__()
        self.attention = _Attention(hidden, heads)
        self.intermediate = _Linear(hidden, intermediate)
        self.output = _Output(intermediate, hidden)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.attention(x, mask)
        y = self.output.dense(F.gelu(self.intermediate.dense(h)))
        return self.output.LayerNorm(y + h)


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(512, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, ids: Tensor) -> Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        x = (
            self.word_embeddings(ids)
            + self.position_embeddings(pos)
            + self.token_type_embeddings(torch.zeros_like(ids))
        )
        return self.LayerNorm(x)


class _Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, intermediate: int):
        super().__init__()
        self.layer = nn.ModuleList(_BertLayer(hidden, heads, intermediate) for _ in range(layers))


class BertText(nn.Module):
    """The first ``layers - fusion_layers`` layers of the model's BERT (its text encoder)."""

    def __init__(self, vocab: int, hidden: int, heads: int, intermediate: int, layers: int):
        super().__init__()
        self.embeddings = _Embeddings(vocab, hidden)
        self.encoder = _Encoder(layers, hidden, heads, intermediate)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        m = mask.to(torch.bool).unsqueeze(1).unsqueeze(1)
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x, m)
        return x


# --- the two encoders --------------------------------------------------------------------


class CtpEncoders(nn.Module):
    """Image and text encoders of one version; tensor names as in the checkpoint."""

    def __init__(self, arch: Dict[str, Any], vocab_size: int):
        super().__init__()
        self.arch = dict(arch)
        preset = arch["preset"]
        if preset in ("small", "small-split"):
            self.visual: nn.Module = EfficientNetLite0()
        elif preset in ("tiny", "base"):
            self.visual = Vit(
                arch["image_size"],
                arch["vit_patch"],
                arch["vit_width"],
                arch["vit_layers"],
                arch["vit_heads"],
            )
        else:
            raise ValueError(f"unknown preset {preset!r}")
        e, hidden = arch["embed_dim"], arch["hidden"]
        self.vision_proj = nn.Linear(self.visual.width, e)
        self.text_proj = nn.Linear(hidden, e)
        self.bert = BertText(
            vocab_size,
            hidden,
            arch["heads"],
            arch["intermediate"],
            arch["layers"] - arch["fusion_layers"],
        )
        self.text_pool = arch["text_pool"]
        self.image_size = arch["image_size"]
        self.max_tokens = arch["max_tokens"]

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """``pixel_values``: [B, 3, S, S] float32, (x - 127) / 128 (see ``pixels_to_tensor``)."""
        return normalize(self.vision_proj(self.visual.pooled(pixel_values)))

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``input_ids``, ``attention_mask``: [B, L] int64 (see ``tokenize``)."""
        h = self.bert(input_ids, attention_mask)
        if self.text_pool == "mean":
            m = attention_mask.to(h.dtype).unsqueeze(-1)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        else:
            pooled = h[:, 0]
        return normalize(self.text_proj(pooled))


class ImageEncoder(nn.Module):
    """``forward(pixel_values) -> image_embeds`` (for ONNX export)."""

    def __init__(self, m: CtpEncoders):
        super().__init__()
        self.m = m

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.m.encode_image(pixel_values)


class TextEncoder(nn.Module):
    """``forward(input_ids, attention_mask) -> text_embeds`` (for ONNX export)."""

    def __init__(self, m: CtpEncoders):
        super().__init__()
        self.m = m

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.m.encode_text(input_ids, attention_mask)


# --- loading and inputs --------------------------------------------------------------------


def _weights(folder: Path) -> Tuple[Path, str]:
    if (folder / "model.safetensors").is_file():
        return folder / "model.safetensors", ""
    if (folder / "weights.safetensors").is_file():
        return folder / "weights.safetensors", "online."
    raise FileNotFoundError(f"{folder}: neither model.safetensors nor weights.safetensors")


def load(folder: str | Path) -> CtpEncoders:
    """The encoders of an exported version (a ``ctpctl export`` folder, or a safetensors
    export of ``ctp_client.export``), in eval mode, float32, on the CPU."""
    from safetensors import safe_open

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    path, prefix = _weights(folder)
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        vocab = config.get("vocab_size") or f.get_slice(
            prefix + "bert.embeddings.word_embeddings.weight"
        ).get_shape()[0]
        m = CtpEncoders(config["architecture"], int(vocab))
        state = {}
        for name in m.state_dict():
            if name.endswith("num_batches_tracked"):
                continue
            if prefix + name not in names:
                raise KeyError(f"{path} lacks {prefix + name}")
            state[name] = f.get_tensor(prefix + name).to(torch.float32)
    missing, unexpected = m.load_state_dict(state, strict=False)
    missing = [n for n in missing if not n.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KeyError(f"{path}: missing {missing}, unexpected {unexpected}")
    return m.eval()


def pixels_to_tensor(pixels: Sequence[bytes], size: int) -> Tensor:
    """Preprocessed images (``size`` x ``size`` x 3 RGB bytes each, HWC, as in probe.json)
    as the encoder's input: [N, 3, S, S] float32, (x - 127) / 128."""
    import numpy as np

    arr = np.stack([np.frombuffer(p, dtype=np.uint8).reshape(size, size, 3) for p in pixels])
    return (torch.from_numpy(arr.copy()).permute(0, 3, 1, 2).float() - 127.0) / 128.0


def tokenize(tokenizer: Any, texts: List[str], max_tokens: int) -> Tuple[Tensor, Tensor]:
    """Token ids and attention mask [N, max_tokens] as the engine makes them: the tokenizer's
    ids with [CLS]/[SEP], cut to ``max_tokens`` with the last kept id replaced by the final one
    ([SEP]), padded with 0. ``tokenizer``: a ``tokenizers.Tokenizer`` (``tokenizer.json``)."""
    tokenizer.no_padding()
    ids = torch.zeros(len(texts), max_tokens, dtype=torch.int64)
    mask = torch.zeros(len(texts), max_tokens, dtype=torch.int64)
    for i, t in enumerate(texts):
        toks = tokenizer.encode(t).ids
        keep = min(len(toks), max_tokens)
        row = list(toks[:keep])
        if len(toks) > keep:
            row[keep - 1] = toks[-1]
        ids[i, :keep] = torch.tensor(row, dtype=torch.int64)
        mask[i, :keep] = 1
    return ids, mask
