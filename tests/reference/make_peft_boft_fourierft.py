"""Writes a BOFT and a FourierFT checkpoint made by PEFT itself, for tests/tuners_boft.rs to read
with `swift infer --adapters`, and prints PEFT's last-position logits for them.

Usage: python make_peft_boft_fourierft.py BASE_MODEL_DIR OUT_DIR IDS(comma-separated)

* OUT_DIR/boft: BOFTConfig(boft_block_size 0, boft_block_num 8, targets q_proj, o_proj,
  up_proj), boft_R = 0.2 * randn and boft_s = 1 + 0.2 * randn.
* OUT_DIR/fourierft: FourierFTConfig(n_frequency 50, scaling 40, random_loc_seed 12, targets
  k_proj, gate_proj), the spectrum as PEFT draws it.

Seeded (torch.manual_seed(1)). Prints one JSON object: per checkpoint, the last position's
logits on IDS with the adapter (`last_logits`) and without it (`base_last_logits`). Run with peft 0.21 (scripts/requirements-reference.txt).
"""

import json
import sys
import warnings

import torch
from peft import BOFTConfig, FourierFTConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    base, out = sys.argv[1], sys.argv[2]
    ids = torch.tensor([[int(x) for x in sys.argv[3].split(",")]])
    logits = {}
    torch.manual_seed(1)
    configs = [
        (
            "boft",
            BOFTConfig(
                boft_block_size=0, boft_block_num=8, target_modules=["q_proj", "o_proj", "up_proj"]
            ),
        ),
        (
            "fourierft",
            FourierFTConfig(
                n_frequency=50,
                scaling=40.0,
                random_loc_seed=12,
                target_modules=["k_proj", "gate_proj"],
            ),
        ),
    ]
    for name, config in configs:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = get_peft_model(model, config)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "boft_R" in n:
                    p.copy_(torch.randn_like(p) * 0.2)
                elif "boft_s" in n:
                    p.copy_(1 + torch.randn_like(p) * 0.2)
        model.save_pretrained(f"{out}/{name}")
        model.eval()
        with torch.no_grad():
            with_adapter = model(ids).logits[0, -1].tolist()
            with model.disable_adapter():
                without = model(ids).logits[0, -1].tolist()
        logits[name] = {"last_logits": with_adapter, "base_last_logits": without}
    print(json.dumps(logits))


if __name__ == "__main__":
    main()
