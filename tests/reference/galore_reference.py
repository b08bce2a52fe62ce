"""Records the per-step losses and final weights of GaLore and Q-GaLore on a tiny model, for
plugins/optimizers/src/tests.rs.

Usage: python galore_reference.py OUT_JSON

The model: a two-layer MLP with an output head, its tensors named like a decoder's
(`model.layers.0.mlp.up_proj.weight` [12, 8] and its bias, `model.layers.0.mlp.down_proj.weight`
[4, 12], `lm_head.weight` [4, 4]), on fixed inputs and targets, loss = mean squared error:

    out = tanh(x·upᵀ + b)·downᵀ·headᵀ

Both projection sides are exercised (up_proj is tall: G·Pᵀ with P from Vᴴ; down_proj is wide:
Pᵀ·G with P from U); lm_head and the bias are not GaLore targets (plain Adam, the bias without
weight decay).

* galore: `galore_torch.GaLoreAdamW` 1.0 (PyPI galore-torch, the optimizer ms-swift vendors),
  rank 2, update_proj_gap 3, scale 0.5, lr 0.01, weight decay 0.1, betas (0.9, 0.999), eps 1e-6,
  9 steps (three projections). galore_torch's `__init__` imports bitsandbytes for its 8-bit
  variant, which needs CUDA: a stub module stands in for it (the AdamW used here never calls it).
* q_galore: Q-GaLore has no CPU package (q_galore_torch needs CUDA and bitsandbytes), so this is
  a transcription of q_galore_torch 1.0's `QGaLoreAdamW8bit_simulate` and its `GaLoreProjector`
  (projection quantized to 4 bits per group, adaptive gap, int8 weights with stochastic
  rounding), with Adam's moments in float32 and GaLoreAdamW's formula where the package uses
  bitsandbytes' 8-bit Adam. libtorch's generator is seeded with 1000 + step before each step, so
  the rounding draws are those of the Rust side. rank 2, gap 2, projection group 8, weight group
  32 (down_proj's 48 values fall back to one group per row), queue 2, cos threshold -1 (the gap
  doubles after two similarities), 10 steps.
"""

import json
import sys
import types

import torch
import transformers.utils.versions  # noqa: F401  (before the stub: it probes bitsandbytes)

# galore_torch/__init__.py imports its 8-bit AdamW, which imports bitsandbytes (CUDA only).
_bnb = types.ModuleType("bitsandbytes")
_bnb_optim = types.ModuleType("bitsandbytes.optim")
_bnb_optimizer = types.ModuleType("bitsandbytes.optim.optimizer")
_bnb_optimizer.Optimizer2State = object
sys.modules.update(
    {
        "bitsandbytes": _bnb,
        "bitsandbytes.optim": _bnb_optim,
        "bitsandbytes.optim.optimizer": _bnb_optimizer,
    }
)
from galore_torch import GaLoreAdamW  # noqa: E402

NAMES = [
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "lm_head.weight",
    "model.layers.0.mlp.up_proj.bias",
]
SHAPES = [[12, 8], [4, 12], [4, 4], [12]]


def init():
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(s, generator=g) * 0.5 for s in SHAPES]
    x = torch.randn([6, 8], generator=g)
    t = torch.randn([6, 4], generator=g)
    return ws, x, t


def loss_of(ws, x, t):
    up, down, head, b = ws
    out = torch.tanh(x @ up.t() + b) @ down.t() @ head.t()
    return ((out - t) ** 2).mean()


def quantize(w, group, n_bit, stochastic):
    """q_galore_torch's _quantize / _quantize_stochastic_round (dequantized), one group per row
    when the group does not divide the count."""
    shape = w.shape
    w = w.reshape(-1, group) if group > 0 and w.numel() % group == 0 else w.reshape(-1, shape[-1])
    max_val = w.amax(dim=1, keepdim=True)
    min_val = w.amin(dim=1, keepdim=True)
    max_int = 2**n_bit - 1
    scales = (max_val - min_val).clamp(min=1e-5) / max_int
    zeros = (-torch.round(min_val / scales)).clamp_(0, max_int)
    if stochastic:
        w_round = w / scales
        up = torch.ceil(w_round)
        down = torch.floor(w_round)
        probability = w_round - down
        random = torch.rand_like(probability)
        w = torch.where(random < probability, up, down)
        w = torch.clamp(w + zeros, 0, max_int)
    else:
        w = torch.clamp(torch.round(w / scales) + zeros, 0, max_int)
    return ((w - zeros) * scales).reshape(shape)


class QGaLoreTranscription:
    """QGaLoreAdamW8bit_simulate's step with float32 Adam (GaLoreAdamW's formula)."""

    def __init__(self, params, galore, lr, wd, betas, eps, rank, gap, scale, proj_bits,
                 proj_group, cos_threshold, gamma, queue_size, weight_group, stochastic):
        self.params, self.galore = params, galore
        self.lr, self.wd, self.betas, self.eps = lr, wd, betas, eps
        self.rank, self.gap, self.scale = rank, gap, scale
        self.proj_bits, self.proj_group = proj_bits, proj_group
        self.cos_threshold, self.gamma, self.queue_size = cos_threshold, gamma, queue_size
        self.weight_group, self.stochastic = weight_group, stochastic
        self.state = [dict(step=0) for _ in params]

    def refresh(self, st, g):
        right = g.shape[0] >= g.shape[1]
        U, s, Vh = torch.linalg.svd(g.float(), full_matrices=False)
        float_ortho = Vh[: self.rank, :] if right else U[:, : self.rank]
        first = (float_ortho[:1, :] if right else float_ortho[:, :1]).clone().flatten()
        st.setdefault("gap", self.gap)
        st.setdefault("queue", [])
        if "past" in st:
            if len(st["queue"]) == self.queue_size:
                st["queue"].pop(0)
            st["queue"].append(
                torch.nn.functional.cosine_similarity(st["past"], first, dim=0).item()
            )
            if (len(st["queue"]) == self.queue_size
                    and sum(st["queue"]) / self.queue_size >= self.cos_threshold):
                st["gap"] = int(st["gap"] * self.gamma)
        st["past"] = first
        st["ortho"] = quantize(float_ortho, self.proj_group, self.proj_bits, False)

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        for p, st, is_galore in zip(self.params, self.state, self.galore):
            g = p.grad
            if is_galore:
                if "ortho" not in st or st["step"] % st["gap"] == 0:
                    self.refresh(st, g)
                low = g @ st["ortho"].t() if g.shape[0] >= g.shape[1] else st["ortho"].t() @ g
            else:
                low = g
            if "exp_avg" not in st:
                st["exp_avg"] = torch.zeros_like(low)
                st["exp_avg_sq"] = torch.zeros_like(low)
            st["step"] += 1
            st["exp_avg"].mul_(b1).add_(low, alpha=1.0 - b1)
            st["exp_avg_sq"].mul_(b2).addcmul_(low, low, value=1.0 - b2)
            denom = st["exp_avg_sq"].sqrt().add_(self.eps)
            step_size = self.lr * (1.0 - b2 ** st["step"]) ** 0.5 / (1.0 - b1 ** st["step"])
            norm = st["exp_avg"] / denom
            if is_galore:
                o = st["ortho"]
                norm = (norm @ o if norm.shape[0] >= norm.shape[1] else o @ norm) * self.scale
            p.add_(norm, alpha=-step_size)
            if p.dim() >= 2 and self.wd > 0:
                p.add_(p, alpha=-self.lr * self.wd)
            if is_galore:
                p.copy_(quantize(p, self.weight_group, 8, self.stochastic))


def run(kind):
    ws, x, t = init()
    ws = [w.clone().requires_grad_(True) for w in ws]
    up, down, head, b = ws
    lr, wd = 0.01, 0.1
    if kind == "galore":
        steps = 9
        opt = GaLoreAdamW(
            [
                {"params": [up, down], "rank": 2, "update_proj_gap": 3, "scale": 0.5,
                 "proj_type": "std"},
                {"params": [head], "weight_decay": wd},
                {"params": [b], "weight_decay": 0.0},
            ],
            lr=lr, weight_decay=wd, betas=(0.9, 0.999), eps=1e-6, no_deprecation_warning=True,
        )
    else:
        steps = 10
        opt = QGaLoreTranscription(
            ws, [True, True, False, False], lr=lr, wd=wd, betas=(0.9, 0.999), eps=1e-6, rank=2,
            gap=2, scale=0.5, proj_bits=4, proj_group=8, cos_threshold=-1.0, gamma=2.0,
            queue_size=2, weight_group=32, stochastic=True,
        )
    losses = []
    for step in range(steps):
        for w in ws:
            w.grad = None
        loss = loss_of(ws, x, t)
        loss.backward()
        losses.append(loss.item())
        torch.manual_seed(1000 + step)
        opt.step()
    return {"losses": losses, "final": [w.detach().flatten().tolist() for w in ws]}


def main():
    ws, x, t = init()
    out = {
        "names": NAMES,
        "shapes": SHAPES,
        "init": [w.flatten().tolist() for w in ws],
        "x": x.flatten().tolist(),
        "t": t.flatten().tolist(),
        "galore": run("galore"),
        "q_galore": run("q_galore"),
    }
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
