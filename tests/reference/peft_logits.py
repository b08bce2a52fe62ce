"""Loads a swift-rs LoRA checkpoint with Python peft and prints what the tests compare.

Usage: python peft_logits.py BASE_MODEL_DIR CHECKPOINT_DIR IDS(comma-separated) GREEDY_TOKENS

Prints one JSON object: the adapter's keys that peft did not expect (`unexpected`) and the
LoRA parameters of the wrapped model that the file did not provide (`missing`), peft's
`target_modules` resolution (`lora_modules`, how many modules got adapters), the last position's
logits with the adapter and without it (`last_logits`, `base_last_logits`), and a greedy
continuation of `GREEDY_TOKENS` tokens with the adapter (EOS does not stop it).
"""

import json
import sys

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main():
    base_dir, ckpt, ids, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ids = torch.tensor([[int(x) for x in ids.split(",")]])
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base.eval()
    model = PeftModel.from_pretrained(base, ckpt)
    model.eval()
    saved = set(load_file(f"{ckpt}/adapter_model.safetensors").keys())
    expected = set(get_peft_model_state_dict(model).keys())
    # Modules holding an adapter (LoRA's lora_A, IA3's ia3_l, VeRA's vera_lambda_b, BOFT's
    # boft_R, FourierFT's fourierft_spectrum).
    held = ("lora_A", "ia3_l", "vera_lambda_b", "boft_R", "fourierft_spectrum")
    lora_modules = sum(
        1
        for _, m in model.named_modules()
        if any(len(getattr(m, k, {})) > 0 for k in held)
    )
    with torch.no_grad():
        logits = model(ids).logits[0, -1].tolist()
        with model.disable_adapter():
            base_logits = model(ids).logits[0, -1].tolist()
        model.generation_config.eos_token_id = None
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
    print(
        json.dumps(
            {
                "unexpected": sorted(saved - expected),
                "missing": sorted(expected - saved),
                "lora_modules": lora_modules,
                "last_logits": logits,
                "base_last_logits": base_logits,
                "greedy": out[0, ids.shape[1]:].tolist(),
            }
        )
    )


if __name__ == "__main__":
    main()
