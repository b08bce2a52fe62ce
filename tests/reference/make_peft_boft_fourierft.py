"""Writes a BOFT and a FourierFT checkpoint made by PEFT itself, for tests/tuners_boft.rs to read
with `swift infer --adapters` (which then compares its logits with peft_logits.py's).

Usage: python make_peft_boft_fourierft.py BASE_MODEL_DIR OUT_DIR

* OUT_DIR/boft: BOFTConfig(boft_block_size 0, boft_block_num 8, targets q_proj, o_proj,
  up_proj), boft_R = 0.2 * randn and boft_s = 1 + 0.2 * randn.
* OUT_DIR/fourierft: FourierFTConfig(n_frequency 50, scaling 40, random_loc_seed 12, targets
  k_proj, gate_proj), the spectrum as PEFT draws it.

Seeded (torch.manual_seed(1)); prints the folders written as JSON. Run with peft 0.21 (scripts/requirements-reference.txt).
"""

import json
import sys
import warnings

import torch
from peft import BOFTConfig, FourierFTConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    base, out = sys.argv[1], sys.argv[2]
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
    print(json.dumps({"written": [name for name, _ in configs]}))


if __name__ == "__main__":
    main()
