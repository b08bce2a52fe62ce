"""Loads a swift-rs LoRA checkpoint of the tiny LLaVA with Python `peft` and prints the logits of
an image + text prompt, for tests/train_images.rs.

Usage: python peft_vision_logits.py BASE_MODEL_DIR ADAPTER_DIR IMAGE INPUT_IDS_JSON

The image is loaded as ms-swift loads it (`Image.open(path).convert("RGB")`) and prepared by the
model folder's slow CLIPImageProcessor; INPUT_IDS_JSON is the prompt's token ids with the image
placeholder already expanded (as `swift encode` prints them). `PeftModel.from_pretrained` must
load every adapter tensor (no missing or unexpected keys: it warns, and this script fails). Prints
one JSON line: `last_logits` (the last position's logits with the adapter), `base_last_logits`
(with the adapter disabled), and the adapter's `target_modules`.
Run with transformers 4.57 and peft 0.21 (scripts/requirements-reference.txt).
"""

import json
import sys
import warnings

import torch
from peft import PeftModel
from PIL import Image
from transformers import CLIPImageProcessor, LlavaForConditionalGeneration


def main():
    base, adapter, image, ids = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration.from_pretrained(base, torch_dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(model, adapter)
    bad = [str(w.message) for w in caught if "missing" in str(w.message).lower() or "unexpected" in str(w.message).lower()]
    if bad:
        raise SystemExit(f"peft did not load every adapter tensor: {bad}")
    model.eval()
    proc = CLIPImageProcessor.from_pretrained(base)
    pixel_values = proc(images=[Image.open(image).convert("RGB")], return_tensors="pt")["pixel_values"]
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=input_ids, pixel_values=pixel_values).logits[0, -1]
        with model.disable_adapter():
            base_logits = model(input_ids=input_ids, pixel_values=pixel_values).logits[0, -1]
    cfg = model.peft_config["default"]
    print(json.dumps({
        "last_logits": logits.tolist(),
        "base_last_logits": base_logits.tolist(),
        "target_modules": sorted(cfg.target_modules) if not isinstance(cfg.target_modules, str) else cfg.target_modules,
    }))


if __name__ == "__main__":
    main()
