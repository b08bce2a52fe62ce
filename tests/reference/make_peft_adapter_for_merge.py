"""Writes a PEFT LoRA adapter that swift's own trainer never produces, for
tests/export_merge.rs: rsLoRA scaling (alpha / sqrt(r)), and `modules_to_save` (a fully
trained copy of lm_head), with random non-zero A and B so the merge changes every target.

Usage: python make_peft_adapter_for_merge.py BASE_DIR OUT_DIR
"""

import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    base_dir, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
        use_rslora=True,
        modules_to_save=["lm_head"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.1)
            elif "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out)


if __name__ == "__main__":
    main()
