"""Records llama.cpp's own conversion of a PEFT LoRA adapter to a GGUF adapter file, for
tests/export_to_gguf.rs (`swift export --adapters CKPT --to_gguf` must write the same tensors and
metadata).

Usage: python lora_gguf_reference.py LLAMA_CPP_SRC BASE_MODEL_DIR OUT_DIR

* LLAMA_CPP_SRC: llama.cpp's sources (scripts/build-llama-cpp.sh unpacks the llama-cpp-python
  0.3.36 sdist's into $SWIFT_RS_CACHE/llama.cpp-src-0.3.36), for `convert_lora_to_gguf.py` and
  its `gguf-py`;
* OUT_DIR/adapter: a PEFT LoRA adapter on the tiny llama (r 4, alpha 8, every linear target of
  the blocks, A and B drawn from N(0, 0.1) with torch.manual_seed(0), so that the Q/K row
  permutation of lora_B shows);
* OUT_DIR/llama_cpp.gguf: `convert_lora_to_gguf.py --outtype f32` of it.

Run with the test virtualenv (peft 0.21, scripts/requirements-reference.txt).
"""

import os
import subprocess
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    src, base_dir, out = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.1)
    adapter = os.path.join(out, "adapter")
    model.save_pretrained(adapter)
    # The path of the machine that recorded it means nothing to the test.
    os.remove(os.path.join(adapter, "README.md"))
    env = dict(os.environ, PYTHONPATH=os.path.join(src, "gguf-py"))
    subprocess.run(
        [sys.executable, os.path.join(src, "convert_lora_to_gguf.py"), "--base", base_dir,
         "--outtype", "f32", "--outfile", os.path.join(out, "llama_cpp.gguf"), adapter],
        check=True, env=env,
    )


if __name__ == "__main__":
    main()
