"""Records PEFT's forward pass and gradients of a tuner on the tiny llama, for tests/tuners.rs.

Usage: python tuner_reference.py ia3|vera BASE_MODEL_DIR OUT_JSON

* ia3: IA3Config(target_modules q_proj, v_proj, down_proj; feedforward_modules down_proj) with
  random vectors (init_ia3_weights=False).
* vera: VeraConfig(r 8, the same targets, projection_prng_key 0, d_initial 0.1): vera_A / vera_B
  as PEFT draws them from the key; λ_b and λ_d then set to random values so that every slot
  changes the output and every vector has a gradient.

Seeded (torch.manual_seed(0) before the model is wrapped). On fixed token ids it records the
adapter's tensors under PEFT's state-dict keys, the loss (the mean next-token negative
log-likelihood), the last position's logits, and each trained tensor's gradient. Run with peft
0.21 (scripts/requirements-reference.txt).
"""

import json
import sys

import peft
import torch
from peft import IA3Config, VeraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict
from transformers import AutoModelForCausalLM

IDS = [5, 17, 42, 7, 99, 3, 61, 12, 8]
TARGETS = ["q_proj", "v_proj", "down_proj"]


def main():
    tuner, base_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if tuner == "ia3":
        config = IA3Config(
            target_modules=TARGETS, feedforward_modules=["down_proj"], init_ia3_weights=False
        )
    elif tuner == "vera":
        config = VeraConfig(r=8, target_modules=TARGETS, projection_prng_key=0, d_initial=0.1)
    else:
        raise SystemExit(f"unknown tuner {tuner}")
    model = get_peft_model(model, config)
    if tuner == "vera":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "vera_lambda" in name:
                    p.copy_(torch.randn_like(p) * 0.5)
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
        },
        open(out, "w"),
    )


if __name__ == "__main__":
    main()
