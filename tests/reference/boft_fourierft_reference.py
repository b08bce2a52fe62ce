"""Records PEFT's forward pass and gradients of BOFT and FourierFT on the tiny llama, for
tests/tuners_boft.rs (the shape of tuner_reference.py, whose token ids and targets it uses).

Usage: python boft_fourierft_reference.py boft|fourierft BASE_MODEL_DIR OUT_JSON

* boft: BOFTConfig(boft_block_size 4, boft_n_butterfly_factor 1, the targets q_proj, v_proj,
  down_proj): boft_R then set to random values (0.1 * randn) and boft_s to 1 + 0.1 * randn, so
  that every block rotates and every tensor has a gradient. PEFT forces the butterfly factor to
  1 when its CUDA extension cannot be built (on a CPU), so factor 1 is what it can be compared at.
* fourierft: FourierFTConfig(n_frequency 100, scaling 100, random_loc_seed 777, the same
  targets): the spectrum as PEFT draws it (init_weights False: randn), and each slot's spectral
  positions (`indices`, rows and columns), which PEFT regenerates from the seed and never saves.

Seeded (torch.manual_seed(0) before the model is wrapped). On fixed token ids it records the
adapter's tensors under PEFT's state-dict keys, the loss (the mean next-token negative
log-likelihood), the last position's logits, and each trained tensor's gradient. Run with peft
0.21 (scripts/requirements-reference.txt).
"""

import json
import sys
import warnings

import peft
import torch
from peft import BOFTConfig, FourierFTConfig, get_peft_model
from peft.utils import get_peft_model_state_dict
from transformers import AutoModelForCausalLM

from tuner_reference import IDS, TARGETS


def main():
    tuner, base_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if tuner == "boft":
        config = BOFTConfig(boft_block_size=4, boft_n_butterfly_factor=1, target_modules=TARGETS)
    elif tuner == "fourierft":
        config = FourierFTConfig(
            n_frequency=100, scaling=100.0, random_loc_seed=777, target_modules=TARGETS
        )
    else:
        raise SystemExit(f"unknown tuner {tuner}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(model, config)
    extra = {}
    if tuner == "boft":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "boft_R" in name:
                    p.copy_(torch.randn_like(p) * 0.1)
                elif "boft_s" in name:
                    p.copy_(1 + torch.randn_like(p) * 0.1)
    else:
        extra["positions"] = {
            name.removeprefix("base_model.model."): m.indices["default"].tolist()
            for name, m in model.named_modules()
            if hasattr(m, "indices") and "default" in getattr(m, "indices", {})
        }
    model.eval()
    ids = torch.tensor([IDS])
    logits = model(ids).logits
    logp = logits[0, :-1].log_softmax(-1)
    loss = -logp.gather(-1, ids[0, 1:].unsqueeze(-1)).mean()
    loss.backward()
    params = {n.replace(".default", ""): p for n, p in model.named_parameters()}
    tensors, grads = {}, {}
    for key, value in get_peft_model_state_dict(model).items():
        tensors[key] = {"shape": list(value.shape), "values": value.flatten().tolist()}
        p = params.get(key)
        if p is not None and p.grad is not None:
            grads[key] = p.grad.flatten().tolist()
    json.dump(
        {
            "peft": peft.__version__,
            "tuner": tuner,
            "ids": IDS,
            "loss": loss.item(),
            "last_logits": logits[0, -1].tolist(),
            "tensors": tensors,
            "grads": grads,
            **extra,
        },
        open(out, "w"),
    )


if __name__ == "__main__":
    main()
