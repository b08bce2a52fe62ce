"""Records the Hugging Face image processors' pixel values on the mllm-demo images, for
engine/vision/tests/processors.rs.

Usage: python vision_processors.py IMAGES_DIR FIXTURES_DIR

IMAGES_DIR holds mllm-demo's 1.jpg, 2.jpg, 3.jpg (`make setup` puts them under
~/.cache/swift-rs/assets/llamafactory/data/mllm_demo_data). FIXTURES_DIR is tests/fixtures/vision:
each of its folders holds a small preprocessor_config.json (and config.json); the slow (PIL)
processor it names (use_fast=False) is run on each image, loaded as ms-swift loads images
(`Image.open(path).convert("RGB")`, no EXIF transpose), and FOLDER/reference.safetensors gets,
per image N: `N.pixel_values` (float32, as the processor returns them), `N.image_grid_thw`
(Qwen2-VL); its metadata has `N.decoded_sha256` (sha256 of the uint8 RGB pixels Pillow decoded,
[H, W, 3] row-major), `N.size` (`WxH`) and `N.limit_20000_sha256`: the pixels of ms-swift's
`rescale_image(img, 20000)` (`--max_pixels 20000`: torchvision's Resize on a PIL image, which is
`img.resize((int(w), int(h)), BILINEAR)`, written out here so torchvision is not needed). Run with transformers 4.57 and pillow (scripts/requirements-reference.txt).
"""

import hashlib
import math
import os
import sys

import numpy as np
import PIL
from PIL import Image
from safetensors.numpy import save_file
from transformers import AutoImageProcessor


def main():
    images_dir, fixtures = sys.argv[1], sys.argv[2]
    images = {n: Image.open(os.path.join(images_dir, f"{n}.jpg")).convert("RGB") for n in (1, 2, 3)}
    for i, folder in enumerate(sorted(os.listdir(fixtures))):
        path = os.path.join(fixtures, folder)
        if not os.path.isfile(os.path.join(path, "preprocessor_config.json")):
            continue
        proc = AutoImageProcessor.from_pretrained(path, use_fast=False)
        out = {}
        for n, img in images.items():
            got = proc(images=[img], return_tensors="np")
            out[f"{n}.pixel_values"] = np.ascontiguousarray(got["pixel_values"], dtype=np.float32)
            if "image_grid_thw" in got:
                out[f"{n}.image_grid_thw"] = np.ascontiguousarray(got["image_grid_thw"], dtype=np.int64)
        meta = {"processor": type(proc).__name__, "pillow": PIL.__version__}
        for n, img in images.items():
            meta[f"{n}.decoded_sha256"] = hashlib.sha256(np.asarray(img, dtype=np.uint8).tobytes()).hexdigest()
            meta[f"{n}.size"] = f"{img.width}x{img.height}"
            ratio = img.width / img.height
            h = math.sqrt(20000 / ratio)
            small = img.resize((int(h * ratio), int(h)), Image.Resampling.BILINEAR)
            meta[f"{n}.limit_20000_sha256"] = hashlib.sha256(np.asarray(small, dtype=np.uint8).tobytes()).hexdigest()
        save_file(out, os.path.join(path, "reference.safetensors"), metadata=meta)
        print(folder, type(proc).__name__, {k: v.shape for k, v in out.items() if k.startswith("1.")})


if __name__ == "__main__":
    main()
