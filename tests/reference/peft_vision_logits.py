"""Loads a swift-rs LoRA checkpoint of a tiny vision-language model (LLaVA-1.5 or Qwen2-VL) with
Python `peft` and prints the logits of an image + text prompt, for tests/train_images.rs.

Usage: python peft_vision_logits.py BASE_MODEL_DIR ADAPTER_DIR IMAGES_JSON INPUT_IDS_JSON [RESAVE_DIR]

The family is config.json's `model_type` (`llava`: LlavaForConditionalGeneration with the
folder's slow CLIPImageProcessor; `qwen2_vl`: Qwen2VLForConditionalGeneration with its slow
Qwen2VLImageProcessor and `image_grid_thw`). IMAGES_JSON is a list of image paths, loaded as
ms-swift loads them (`Image.open(path).convert("RGB")`); INPUT_IDS_JSON is the prompt's token
ids with each image placeholder already expanded (expected.json's `input_ids`). With RESAVE_DIR,
the loaded adapter is written there again by peft's own `save_pretrained` (a PEFT-written
checkpoint for swift-rs to read back).

Prints one JSON line: the adapter's tensors peft did not expect (`unexpected`) and the LoRA
tensors of the wrapped model the file did not give (`missing`), how many modules got an adapter
(`lora_modules`), `last_logits` (the last position's logits with the adapter),
`base_last_logits` (with it disabled), and adapter_config.json's `target_modules`.
Run with transformers 4.57 and peft 0.21 (scripts/requirements-reference.txt).
"""

import json
import sys

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    CLIPImageProcessor,
    LlavaForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
)


def main():
    base, adapter = sys.argv[1], sys.argv[2]
    images, ids = json.loads(sys.argv[3]), json.loads(sys.argv[4])
    resave = sys.argv[5] if len(sys.argv) > 5 else None
    torch.manual_seed(0)
    model_type = json.load(open(f"{base}/config.json"))["model_type"]
    if model_type == "llava":
        cls, proc = LlavaForConditionalGeneration, CLIPImageProcessor.from_pretrained(base)
    elif model_type == "qwen2_vl":
        cls, proc = Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor.from_pretrained(base)
    else:
        raise SystemExit(f"{base}: model_type {model_type!r} is neither llava nor qwen2_vl")
    model = cls.from_pretrained(base, dtype=torch.float32)
    model.eval()
    model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    saved = set(load_file(f"{adapter}/adapter_model.safetensors").keys())
    expected = set(get_peft_model_state_dict(model).keys())
    lora_modules = sum(1 for _, m in model.named_modules() if len(getattr(m, "lora_A", {})) > 0)
    batch = proc(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")
    extra = {"pixel_values": batch["pixel_values"]}
    if "image_grid_thw" in batch:
        extra["image_grid_thw"] = batch["image_grid_thw"]
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=input_ids, **extra).logits[0, -1]
        with model.disable_adapter():
            base_logits = model(input_ids=input_ids, **extra).logits[0, -1]
    if resave:
        model.save_pretrained(resave)
    cfg = model.peft_config["default"]
    targets = cfg.target_modules
    print(json.dumps({
        "unexpected": sorted(saved - expected),
        "missing": sorted(expected - saved),
        "lora_modules": lora_modules,
        "last_logits": logits.tolist(),
        "base_last_logits": base_logits.tolist(),
        "target_modules": sorted(targets) if not isinstance(targets, str) else targets,
    }))


if __name__ == "__main__":
    main()
