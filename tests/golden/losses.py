"""Reference values for every CTP loss term, computed with PyTorch from the same inputs.

Usage: python losses.py INPUT.safetensors OUTPUT.json
The formulas follow the authors' code (KevinLight831/CTP, models/clip_pretrain.py) as described in
docs/method.md ("Losses"), written with torch.nn.functional and nn.KLDivLoss independently of
the Rust implementation.
"""
import json
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

t = load_file(sys.argv[1])
tau = float(t["temp"].item())
v, w, vr, wr, vm, wm = (t[k].double() for k in ["v", "w", "v_ref", "w_ref", "v_m", "w_m"])
qi, qt = t["img_queue"].double(), t["txt_queue"].double()
z, zm, labels = t["z"].double(), t["z_m"].double(), t["labels"].long()
B = v.shape[0]
y = torch.arange(B)
kl = torch.nn.KLDivLoss(reduction="batchmean")

out = {}
s_i2t, s_t2i = v @ w.t(), w @ v.t()
out["itc"] = 0.5 * (F.cross_entropy(s_i2t / tau, y) + F.cross_entropy(s_t2i / tau, y))

# queue ITC with one-hot targets (sim_targets.fill_diagonal_(1)) over [momentum keys ; queue]
i2t = v @ torch.cat([wm.t(), qt.t()], dim=1) / tau
t2i = w @ torch.cat([vm.t(), qi.t()], dim=1) / tau
tgt = torch.zeros_like(i2t)
tgt.fill_diagonal_(1)
out["itc_queue"] = 0.5 * (-(F.log_softmax(i2t, 1) * tgt).sum(1).mean() - (F.log_softmax(t2i, 1) * tgt).sum(1).mean())

out["mlm"] = F.cross_entropy(z, labels, ignore_index=-100)
out["mlm_distill"] = -(F.softmax(zm, -1) * F.log_softmax(z, -1)).sum(-1).mean()

r_i2t, r_t2i = vr @ wr.t(), wr @ vr.t()
out["tp_cross"] = 0.5 * (
    kl(F.log_softmax(s_i2t / tau, 1), F.softmax(r_i2t / tau, 1))
    + kl(F.log_softmax(s_t2i / tau, 1), F.softmax(r_t2i / tau, 1))
)
self_idx = torch.arange(B).unsqueeze(1)
def masked(a):
    return (a @ a.t()).scatter(1, self_idx, -1000)
out["tp_intra"] = 0.5 * (
    kl(F.log_softmax(masked(v) / tau, 1), F.softmax(masked(vr) / tau, 1))
    + kl(F.log_softmax(masked(w) / tau, 1), F.softmax(masked(wr) / tau, 1))
)
json.dump({k: float(x) for k, x in out.items()}, open(sys.argv[2], "w"))
