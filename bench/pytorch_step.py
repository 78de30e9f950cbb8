"""The CTP training step of ctp's `small` and `base` presets, written in eager PyTorch, for
throughput comparison (`ctp-bench compare` runs this and ctp's own step in the same invocation).

`small`: EfficientNet-Lite0 with TF SAME padding + all-MiniLM-L6-v2 + 2 fusion layers with
cross-attention, mean-pooled text, 256-d projections, the same pretrained weights (read from the
same safetensors). `base`: ViT-B/16 at 224 px (pre-norm, timm layout) + a BERT-base-shaped
encoder (6 text + 6 fusion layers, [CLS] pooling), random init as in ctp. Same batch, and every
CTP loss term of a task >= 1 step: ITC, MLM (logits at masked positions only), compatible
momentum update + momentum forward + queue ITC + MLM distillation, topology preservation
against the frozen previous-task model, AdamW (PyTorch's default implementation).

`--precision bf16` runs forwards and losses under `torch.autocast(dtype=torch.bfloat16)`.
Without `--tf32`, fp32 matmuls on CUDA stay exact (PyTorch's default; cuDNN convolutions may use
TF32, also PyTorch's default); `--tf32` turns TF32 on for matmuls and cuDNN, as ctp does by
default (`engine.tf32`). TF32 exists only on CUDA: on a CPU `--tf32` is refused.

`--compile default|max-autotune` runs the step through `torch.compile`: one compiled function
for everything up to the loss (the online, momentum and reference forwards, the compatible
momentum update, every loss term, under autocast for bf16; the masked positions are a dynamic
dimension), its backward (compiled by AOTAutograd) and a compiled `opt.step`. Only the token
masking (a data-dependent `nonzero`) and the queue enqueue stay eager. The warm-up steps, which
compile, are timed apart from the measured ones: `compile_s` = warm-up wall time minus warm-up
steps x the median measured step. Under `max-autotune`, CUDA graphs are skipped for graphs with
dynamic shapes (the forward; inductor's `cudagraph_skip_dynamic_graphs`), the optimizer step
keeps them. Graphs compiled after the warm-up are counted (`recompiles_measured`; should be 0).

Without `--tf32`/`--compile`, with `--warmup 2 --reps 1` (the defaults) the step and its
numerics are exactly the eager step this script always ran.

Usage: python pytorch_step.py WEIGHTS_DIR BATCH STEPS THREADS [--preset small|base]
       [--device cpu|cuda] [--precision fp32|bf16] [--random-weights] [--tf32]
       [--compile none|default|max-autotune] [--warmup N] [--reps R]  -> one JSON line:
       per repetition (STEPS measured steps each, after the N warm-up steps of the process)
       samples/s, every measured step's milliseconds, and `samples_per_sec` = their median.
"""
import argparse
import copy
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

ap = argparse.ArgumentParser()
ap.add_argument("weights")
ap.add_argument("batch", type=int)
ap.add_argument("steps", type=int)
ap.add_argument("threads", type=int)
ap.add_argument("--preset", default="small", choices=["small", "base"])
ap.add_argument("--device", default="cpu")
ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
ap.add_argument("--random-weights", action="store_true")
ap.add_argument("--tf32", action="store_true", help="TF32 matmuls and cuDNN convolutions (CUDA)")
ap.add_argument("--compile", default="none", choices=["none", "default", "max-autotune"])
ap.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (they compile)")
ap.add_argument("--reps", type=int, default=1, help="repetitions of STEPS measured steps")
args = ap.parse_args()
WEIGHTS, BATCH, STEPS, THREADS = args.weights, args.batch, args.steps, args.threads
DEV = torch.device(args.device)
if STEPS < 1 or args.reps < 1 or args.warmup < 0:
    ap.error("STEPS and --reps must be >= 1, --warmup >= 0")
if args.tf32:
    if DEV.type != "cuda":
        ap.error("--tf32 applies to CUDA only (a CPU has no TF32)")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
COMPILE = args.compile != "none"
if args.compile == "max-autotune":
    import torch._inductor.config as inductor_config

    inductor_config.triton.cudagraph_skip_dynamic_graphs = True
BASE = args.preset == "base"
if THREADS > 0:
    torch.set_num_threads(THREADS)
torch.manual_seed(0)
TAU, QUEUE = 0.07, 1024
SIZE, MAXLEN = (224, 30) if BASE else (64, 16)
H, INTER, LAYERS, TEXT_LAYERS = (768, 3072, 12, 6) if BASE else (384, 1536, 8, 6)
IMG_W = 768 if BASE else 1280


def same_pad(x, k, s):
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class MBConv(nn.Module):
    def __init__(self, i, o, k, s, e):
        super().__init__()
        m = i * e
        self.k, self.s, self.res = k, s, s == 1 and i == o
        if e != 1:
            self._expand_conv = nn.Conv2d(i, m, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(m, eps=1e-3)
        self.e = e
        self._depthwise_conv = nn.Conv2d(m, m, k, s, groups=m, bias=False)
        self._bn1 = nn.BatchNorm2d(m, eps=1e-3)
        self._project_conv = nn.Conv2d(m, o, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(o, eps=1e-3)

    def forward(self, x):
        h = x
        if self.e != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(same_pad(h, self.k, self.s))))
        h = self._bn2(self._project_conv(h))
        return h + x if self.res else h


class EffNet(nn.Module):
    STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
              (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]

    def __init__(self):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks = []
        for r, k, s, e, i, o in self.STAGES:
            for j in range(r):
                blocks.append(MBConv(i if j == 0 else o, o, k, s if j == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)

    def forward(self, x):
        h = F.relu6(self._bn0(self._conv_stem(same_pad(x, 3, 2))))
        for b in self._blocks:
            h = b(h)
        m = F.relu6(self._bn1(self._conv_head(h)))
        pooled = m.mean((2, 3))
        return torch.cat([pooled.unsqueeze(1), m.flatten(2).transpose(1, 2)], 1), pooled


class Attn(nn.Module):
    def __init__(self, h, kv, heads):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(kv, h), nn.Linear(kv, h)
        self.dense, self.norm = nn.Linear(h, h), nn.LayerNorm(h, eps=1e-12)

    def forward(self, x, kv, mask, p):
        b, l, h = x.shape
        sp = lambda t: t.view(b, t.shape[1], self.heads, h // self.heads).transpose(1, 2)
        ctx = F.scaled_dot_product_attention(sp(self.query(x)), sp(self.key(kv)), sp(self.value(kv)), attn_mask=mask, dropout_p=p)
        y = F.dropout(self.dense(ctx.transpose(1, 2).reshape(b, l, h)), p)
        return self.norm(y + x)


class Layer(nn.Module):
    def __init__(self, h, inter, heads, cross, img_w):
        super().__init__()
        self.attn = Attn(h, h, heads)
        self.cross = Attn(h, img_w, heads) if cross else None
        self.inter, self.out, self.norm = nn.Linear(h, inter), nn.Linear(inter, h), nn.LayerNorm(h, eps=1e-12)

    def forward(self, x, mask, img, p):
        h = self.attn(x, x, mask, p)
        if self.cross is not None and img is not None:
            h = self.cross(h, img, None, p)
        return self.norm(F.dropout(self.out(F.gelu(self.inter(h))), p) + h)


class Block(nn.Module):
    """Pre-norm ViT block (timm layout)."""

    def __init__(self, w, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(w, eps=1e-6), nn.LayerNorm(w, eps=1e-6)
        self.qkv, self.proj = nn.Linear(w, 3 * w), nn.Linear(w, w)
        self.fc1, self.fc2 = nn.Linear(w, 4 * w), nn.Linear(4 * w, w)

    def forward(self, x):
        b, l, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, l, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, l, w))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, image=224, patch=16, w=768, layers=12, heads=12):
        super().__init__()
        n = (image // patch) ** 2
        self.patch_embed = nn.Conv2d(3, w, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, w) * 0.02)
        self.blocks = nn.ModuleList([Block(w, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(w, eps=1e-6)

    def forward(self, x):
        p = self.patch_embed(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), p], 1) + self.pos_embed
        for b in self.blocks:
            h = b(h)
        h = self.norm(h)
        return h, h[:, 0]


class CTP(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.visual = ViT() if BASE else EffNet()
        self.word, self.pos, self.tt = nn.Embedding(vocab, H), nn.Embedding(512, H), nn.Embedding(2, H)
        self.emb_norm = nn.LayerNorm(H, eps=1e-12)
        self.layers = nn.ModuleList([Layer(H, INTER, 12, i >= TEXT_LAYERS, IMG_W) for i in range(LAYERS)])
        self.mlm_dense, self.mlm_norm = nn.Linear(H, H), nn.LayerNorm(H, eps=1e-12)
        self.mlm_bias = nn.Parameter(torch.zeros(vocab))
        self.vision_proj, self.text_proj = nn.Linear(IMG_W, 256), nn.Linear(H, 256)

    def embed(self, ids, p):
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        return F.dropout(self.emb_norm(self.word(ids) + self.pos(pos) + self.tt(torch.zeros_like(ids))), p)

    def features(self, img, ids, mask, p):
        tokens, pooled = self.visual(img)
        m = mask.bool()[:, None, None, :]
        x = self.embed(ids, p)
        for layer in self.layers[:TEXT_LAYERS]:
            x = layer(x, m, None, p)
        if BASE:
            txt = x[:, 0]
        else:
            mm = mask.unsqueeze(-1).float()
            txt = (x * mm).sum(1) / mm.sum(1).clamp_min(1e-9)
        return F.normalize(self.vision_proj(pooled), dim=-1), F.normalize(self.text_proj(txt), dim=-1), tokens

    def mlm_logits(self, mids, mask, img_tokens, positions, p):
        m = mask.bool()[:, None, None, :]
        x = self.embed(mids, p)
        for layer in self.layers:
            x = layer(x, m, img_tokens, p)
        h = x.reshape(-1, x.shape[-1]).index_select(0, positions)
        h = self.mlm_norm(F.gelu(self.mlm_dense(h)))
        return h @ self.word.weight.t() + self.mlm_bias


def load(model):
    eff = load_file(f"{WEIGHTS}/efficientnet-lite0.safetensors")
    model.visual.load_state_dict({k: v for k, v in eff.items() if not k.startswith("_fc")}, strict=False)
    ml = load_file(f"{WEIGHTS}/minilm/model.safetensors")
    sd = {"word.weight": ml["embeddings.word_embeddings.weight"], "pos.weight": ml["embeddings.position_embeddings.weight"],
          "tt.weight": ml["embeddings.token_type_embeddings.weight"], "emb_norm.weight": ml["embeddings.LayerNorm.weight"],
          "emb_norm.bias": ml["embeddings.LayerNorm.bias"]}
    for i in range(6):
        p = f"encoder.layer.{i}."
        for a, b in [("query", "attention.self.query"), ("key", "attention.self.key"), ("value", "attention.self.value"),
                     ("dense", "attention.output.dense")]:
            for w in ("weight", "bias"):
                sd[f"layers.{i}.attn.{a}.{w}"] = ml[p + b + "." + w]
        for w in ("weight", "bias"):
            sd[f"layers.{i}.attn.norm.{w}"] = ml[p + "attention.output.LayerNorm." + w]
            sd[f"layers.{i}.inter.{w}"] = ml[p + "intermediate.dense." + w]
            sd[f"layers.{i}.out.{w}"] = ml[p + "output.dense." + w]
            sd[f"layers.{i}.norm.{w}"] = ml[p + "output.LayerNorm." + w]
    model.load_state_dict(sd, strict=False)


tok = Tokenizer.from_file(f"{WEIGHTS}/minilm/tokenizer.json")
tok.no_padding()
vocab = tok.get_vocab_size()
online = CTP(vocab)
if not (BASE or args.random_weights):
    load(online)
online = online.to(DEV)
online.train()
if not BASE:
    online.visual.eval()  # BN frozen (ctp's default policy)
ref = copy.deepcopy(online).eval().requires_grad_(False)
mom = copy.deepcopy(online).eval().requires_grad_(False)
iq = F.normalize(torch.randn(QUEUE, 256, device=DEV), dim=-1)
tq = F.normalize(torch.randn(QUEUE, 256, device=DEV), dim=-1)
ptr = 0
opt = torch.optim.AdamW(online.parameters(), lr=1e-4, weight_decay=0.05)
g = torch.Generator().manual_seed(1)
words = ["red", "smiling", "face", "dog", "flag", "blue", "car", "music", "heart", "tree"]


def batch():
    img = (torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), generator=g).float() - 127) / 128
    caps = [" ".join(words[(i * 7 + j * 3) % 10] for j in range(6)) for i in range(BATCH)]
    enc = [e.ids[:MAXLEN] for e in tok.encode_batch(caps)]
    L = max(len(e) for e in enc)
    ids = torch.tensor([e + [0] * (L - len(e)) for e in enc])
    return img.to(DEV), ids.to(DEV), (ids != 0).long().to(DEV)


def mask_tokens(ids):
    full = lambda p: torch.full(ids.shape, p, device=DEV)
    chosen = torch.bernoulli(full(0.15)).bool() & (ids != 0) & (ids != 101)
    replace = torch.bernoulli(full(0.8)).bool() & chosen
    rand = torch.bernoulli(full(0.5)).bool() & chosen & ~replace
    m = ids.masked_fill(replace, 103)
    m = torch.where(rand, torch.randint(vocab, ids.shape, device=DEV), m)
    pos = chosen.view(-1).nonzero().view(-1)
    return m, pos, ids.view(-1)[pos]


def kl(t, s):
    return F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")


params_o = [p for p in online.parameters()]
params_m, params_r = list(mom.parameters()), list(ref.parameters())
BF16 = args.precision == "bf16"
amp = torch.autocast(DEV.type, dtype=torch.bfloat16, enabled=BF16)


def eager_step(img, ids, mask):
    """The eager step, unchanged from the script's first version (the same ops in the same order)."""
    global ptr
    amp.__enter__()
    v, w, tokens = online.features(img, ids, mask, 0.1)
    mids, pos, labels = mask_tokens(ids)
    z = online.mlm_logits(mids, mask, tokens, pos, 0.1)
    y = torch.arange(BATCH, device=DEV)
    l_ita = 0.5 * (F.cross_entropy(v @ w.t() / TAU, y) + F.cross_entropy(w @ v.t() / TAU, y))
    l_mlm = F.cross_entropy(z, labels)
    with torch.no_grad():
        for pm, po, pr in zip(params_m, params_o, params_r):  # per-step compatible momentum update
            pm.mul_(0.9).add_(po, alpha=0.05).add_(pr, alpha=0.05)
        vm, wm, tm = mom.features(img, ids, mask, 0.0)
        zm = mom.mlm_logits(mids, mask, tm, pos, 0.0)
    l_q = 0.5 * (F.cross_entropy(v @ torch.cat([wm, tq]).t() / TAU, y) + F.cross_entropy(w @ torch.cat([vm, iq]).t() / TAU, y))
    l_dis = -(F.softmax(zm, -1) * F.log_softmax(z, -1)).sum(-1).mean()
    idx = (torch.arange(BATCH, device=DEV) + ptr) % QUEUE
    iq[idx], tq[idx] = vm.float(), wm.float()
    ptr = (ptr + BATCH) % QUEUE
    with torch.no_grad():
        vr, wr, _ = ref.features(img, ids, mask, 0.0)
    eye = torch.arange(BATCH, device=DEV).unsqueeze(1)
    sm = lambda a: (a @ a.t()).scatter(1, eye, -1000) / TAU
    l_c = 0.5 * (kl(vr @ wr.t() / TAU, v @ w.t() / TAU) + kl(wr @ vr.t() / TAU, w @ v.t() / TAU))
    l_s = 0.5 * (kl(sm(vr), sm(v)) + kl(sm(wr), sm(w)))
    loss = l_ita + l_mlm + l_q + l_dis + l_c + l_s
    amp.__exit__(None, None, None)
    opt.zero_grad(set_to_none=False)
    loss.backward()
    opt.step()
    loss.item()


def step_loss(img, ids, mask, mids, pos, labels, iq, tq):
    """Everything of the step up to the loss, for torch.compile: the same terms as eager_step
    (masking done by the caller; the queue enqueued by the caller with the returned features)."""
    with torch.autocast(DEV.type, dtype=torch.bfloat16, enabled=BF16):
        v, w, tokens = online.features(img, ids, mask, 0.1)
        z = online.mlm_logits(mids, mask, tokens, pos, 0.1)
        y = torch.arange(BATCH, device=DEV)
        l_ita = 0.5 * (F.cross_entropy(v @ w.t() / TAU, y) + F.cross_entropy(w @ v.t() / TAU, y))
        l_mlm = F.cross_entropy(z, labels)
        with torch.no_grad():
            for pm, po, pr in zip(params_m, params_o, params_r):
                pm.mul_(0.9).add_(po, alpha=0.05).add_(pr, alpha=0.05)
            vm, wm, tm = mom.features(img, ids, mask, 0.0)
            zm = mom.mlm_logits(mids, mask, tm, pos, 0.0)
        l_q = 0.5 * (F.cross_entropy(v @ torch.cat([wm, tq]).t() / TAU, y) + F.cross_entropy(w @ torch.cat([vm, iq]).t() / TAU, y))
        l_dis = -(F.softmax(zm, -1) * F.log_softmax(z, -1)).sum(-1).mean()
        with torch.no_grad():
            vr, wr, _ = ref.features(img, ids, mask, 0.0)
        eye = torch.arange(BATCH, device=DEV).unsqueeze(1)
        sm = lambda a: (a @ a.t()).scatter(1, eye, -1000) / TAU
        l_c = 0.5 * (kl(vr @ wr.t() / TAU, v @ w.t() / TAU) + kl(wr @ vr.t() / TAU, w @ v.t() / TAU))
        l_s = 0.5 * (kl(sm(vr), sm(v)) + kl(sm(wr), sm(w)))
        loss = l_ita + l_mlm + l_q + l_dis + l_c + l_s
    return loss, vm.detach().float(), wm.detach().float()


if COMPILE:
    from torch._dynamo.utils import counters

    compiled_loss = torch.compile(step_loss, mode=args.compile)

    @torch.compile(mode=args.compile)
    def compiled_opt_step():
        opt.step()


def compiled_step(img, ids, mask):
    global ptr
    mids, pos, labels = mask_tokens(ids)
    # The number of masked tokens varies per step: one dynamic dimension, not a recompile per size.
    torch._dynamo.maybe_mark_dynamic(pos, 0)
    torch._dynamo.maybe_mark_dynamic(labels, 0)
    loss, vm, wm = compiled_loss(img, ids, mask, mids, pos, labels, iq, tq)
    idx = (torch.arange(BATCH, device=DEV) + ptr) % QUEUE
    iq[idx], tq[idx] = vm, wm
    ptr = (ptr + BATCH) % QUEUE
    opt.zero_grad(set_to_none=False)
    loss.backward()
    compiled_opt_step()
    loss.item()


def graphs():
    return sum(counters["stats"].values()) if COMPILE else 0


step_fn = compiled_step if COMPILE else eager_step
times = []
graphs_after_warmup = None
for step in range(args.warmup + STEPS * args.reps):
    if step == args.warmup:
        graphs_after_warmup = graphs()
    img, ids, mask = batch()
    if DEV.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step_fn(img, ids, mask)
    times.append(time.perf_counter() - t0)
if graphs_after_warmup is None:
    graphs_after_warmup = graphs()
warm, meas = times[: args.warmup], times[args.warmup:]
reps = [meas[r * STEPS:(r + 1) * STEPS] for r in range(args.reps)]
rep_sps = [len(r) / sum(r) for r in reps]
sps = statistics.median(rep_sps)
median_step = statistics.median(meas)
warmup_s = sum(warm)
peak = torch.cuda.max_memory_allocated(DEV) / 2**20 if DEV.type == "cuda" else None
cuda = DEV.type == "cuda"
print(json.dumps({
    "impl": "pytorch-eager" if not COMPILE else f"pytorch-compile-{args.compile}",
    "preset": args.preset, "batch": BATCH, "device": str(DEV), "precision": args.precision,
    # TF32 for fp32 matmuls (cuBLAS) and for cuDNN convolutions, as in effect on this device.
    "tf32": cuda and torch.backends.cuda.matmul.allow_tf32,
    "tf32_cudnn": cuda and torch.backends.cudnn.allow_tf32,
    "compile": args.compile,
    "compile_s": max(warmup_s - args.warmup * median_step, 0.0) if COMPILE else None,
    "warmup": args.warmup, "warmup_s": warmup_s,
    "recompiles_measured": graphs() - graphs_after_warmup if COMPILE else None,
    "steps": STEPS, "reps": args.reps, "rep_samples_per_sec": [x * BATCH for x in rep_sps],
    "step_ms": [1e3 * t for t in meas],
    "steps_per_sec": sps, "samples_per_sec": sps * BATCH,
    "peak_gpu_mib": peak, "threads": THREADS, "torch": torch.__version__}))
