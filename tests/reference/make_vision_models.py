"""Writes the tiny random-weight vision-language models the multimodal tests pin, and
transformers' outputs for them (issue 21).

Run with the project's virtualenv (torch + transformers 4.57 + pillow, see scripts/setup.sh):

    ~/.cache/swift-rs/venv/bin/python tests/reference/make_vision_models.py [--images DIR]

DIR is LLaMA-Factory's `mllm_demo_data` (default: $SWIFT_RS_CACHE/assets/llamafactory/data/
mllm_demo_data). For each family it writes tests/fixtures/models/<name>/:

* `llava`: a `LlavaForConditionalGeneration` as llava-1.5-hf is built (CLIP vision tower,
  `vision_feature_layer` -2, select strategy `default`: the CLS position dropped, a two-layer GELU
  MLP projector, a llama language model), a `CLIPImageProcessor` at 56 pixels (16 patches of 14);
* `example_gpt2_vision`: the example plugin's vision family (plugins/examples/src/gpt2_vision.rs):
  the tiny GPT-2 of make_tiny_models.py plus a Conv2d patch embedding, a LayerNorm, one head of
  attention with a residual and a projector; its reference is written here in plain torch (the
  features replace the first block's input at the placeholders: `inputs_embeds` there is the
  feature minus the position embedding), through transformers' GPT-2 for the rest;
* `qwen2_vl`: a `Qwen2VLForConditionalGeneration` (Conv3d patch embedding, 2-D vision rotary,
  patch merger, M-RoPE in the qwen2 language model) with a `Qwen2VLImageProcessor` whose
  `max_pixels` keeps an image to a few dozen patches.

Each folder gets config.json, model.safetensors (float32), the fixture BPE tokenizer of
make_tiny_models.py with the family's image tokens added, tokenizer_config.json without a
chat_template (so swift-rs renders prompts with the family's default template, ms-swift's
`llava1_5_hf` / `qwen2_vl`, as ms-swift does), preprocessor_config.json, and:

* `expected.json`: the prompt's `input_ids` (placeholders already expanded, as the processor
  does), the images used, `image_grid_thw` (Qwen2-VL), Qwen2-VL's `rope_deltas`, and a 32-token
  greedy continuation (`generate` with its cache, EOS ignored);
* `expected.safetensors`: `pixel_values` exactly as fed to the model, `logits` at every prompt
  position (float32), and for Qwen2-VL `position_ids` (`get_rope_index`, `[3, 1, seq]`).

The weights are random but seeded, so rerunning reproduces the same files.
"""

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessor,
)

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "models"
BASE_TOKENIZER = ROOT / "llama" / "tokenizer.json"

def tokenizer(out: Path, extra: list[str]) -> Tokenizer:
    tok = Tokenizer.from_file(str(BASE_TOKENIZER))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra])
    tok.save(str(out / "tokenizer.json"))
    return tok


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights with std 0.2 (peaked logits), norms near 1, non-zero biases (as make_tiny_models)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name or "ln_q" in name or "layer_norm" in name or "layrnorm" in name:
                p.copy_(1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def encode(tok: Tokenizer, pieces) -> list[int]:
    """Text pieces and ("image", n) markers → ids, an image becoming n placeholder ids."""
    ids = []
    for p in pieces:
        if isinstance(p, tuple):
            ids += [p[1]] * p[2]
        else:
            ids += tok.encode(p).ids
    return ids


def greedy(model, ids, extra, steps=32):
    """32 greedy tokens through generate's cache (EOS ignored): the prompt's images are encoded
    once, so a generated placeholder id is embedded as plain text, as in cached decoding."""
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]), **extra, max_new_tokens=steps, do_sample=False
        )
    return out[0, len(ids):].tolist()


def save(model, out: Path, tok_config: dict, processor, expected: dict, tensors: dict) -> None:
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (out / "expected.json").write_text(json.dumps(expected))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "expected.safetensors"))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{out.name}: {size // 1024} KiB, prompt {len(expected['input_ids'])} tokens")


def llava(images: Path) -> None:
    out = ROOT / "llava"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tok = tokenizer(out, ["<image>"])
    image_id = tok.token_to_id("<image>")
    vocab = tok.get_vocab_size()
    eos = tok.token_to_id("<|im_end|>")
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=56,
        patch_size=14,
        projection_dim=32,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    text = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        eos_token_id=eos,
        bos_token_id=None,
        pad_token_id=tok.token_to_id("<|endoftext|>"),
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        image_seq_length=16,
    )
    torch.manual_seed(21)
    model = LlavaForConditionalGeneration(cfg).eval()
    randomize(model, 21)
    processor = CLIPImageProcessor(
        size={"shortest_edge": 56},
        crop_size={"height": 56, "width": 56},
        do_center_crop=True,
        resample=3,
    )
    image = Image.open(images / "1.jpg").convert("RGB")
    pixel_values = processor(images=[image], return_tensors="pt")["pixel_values"]
    # llava1_5_hf's prefix is the BOS token (this tokenizer's <|im_start|> stands in for <s>).
    bos = tok.token_to_id("<|im_start|>")
    ids = [bos] + encode(tok, ["USER: ", ("image", image_id, 16), "\nWho are they?\nASSISTANT:"])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), pixel_values=pixel_values).logits[0]
    expected = {
        "input_ids": ids,
        "images": ["mllm_demo_data/1.jpg"],
        "image_token_id": image_id,
        "greedy": greedy(model, ids, {"pixel_values": pixel_values}),
    }
    tok_config = {
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": "<|im_start|>",
    }
    save(model, out, tok_config, processor, expected, {"pixel_values": pixel_values, "logits": logits})


def qwen2_vl(images: Path) -> None:
    out = ROOT / "qwen2_vl"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    specials = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = tokenizer(out, specials)
    ids_of = {t: tok.token_to_id(t) for t in specials}
    vocab = tok.get_vocab_size()
    eos = tok.token_to_id("<|im_end|>")
    cfg = Qwen2VLConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            rope_scaling={"type": "mrope", "mrope_section": [4, 2, 2]},
            eos_token_id=eos,
            bos_token_id=None,
            pad_token_id=tok.token_to_id("<|endoftext|>"),
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=2,
            embed_dim=32,
            hidden_size=64,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
            hidden_act="quick_gelu",
        ),
        image_token_id=ids_of["<|image_pad|>"],
        video_token_id=ids_of["<|video_pad|>"],
        vision_start_token_id=ids_of["<|vision_start|>"],
        vision_end_token_id=ids_of["<|vision_end|>"],
        tie_word_embeddings=False,
        vocab_size=vocab,
    )
    torch.manual_seed(22)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    randomize(model, 22)
    processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 12)
    imgs = [Image.open(images / f).convert("RGB") for f in ("1.jpg", "2.jpg")]
    batch = processor(images=imgs, return_tensors="pt")
    pixel_values, grid = batch["pixel_values"], batch["image_grid_thw"]
    counts = [int(g.prod()) // 4 for g in grid]
    start, end, pad = (ids_of[t] for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>"))
    ids = encode(
        tok,
        [
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
            ("start", start, 1),
            ("image", pad, counts[0]),
            ("end", end, 1),
            "Who are they?",
            ("start", start, 1),
            ("image", pad, counts[1]),
            ("end", end, 1),
            "And he?<|im_end|>\n<|im_start|>assistant\n",
        ],
    )
    x = torch.tensor([ids])
    extra = {"pixel_values": pixel_values, "image_grid_thw": grid}
    with torch.no_grad():
        logits = model(input_ids=x, **extra).logits[0]
        position_ids, deltas = model.model.get_rope_index(x, grid, None, torch.ones_like(x))
    expected = {
        "input_ids": ids,
        "images": ["mllm_demo_data/1.jpg", "mllm_demo_data/2.jpg"],
        "image_token_id": pad,
        "image_grid_thw": grid.tolist(),
        "rope_deltas": deltas.flatten().tolist(),
        "greedy": greedy(model, ids, extra),
    }
    tok_config = {
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
    }
    save(
        model,
        out,
        tok_config,
        processor,
        expected,
        {"pixel_values": pixel_values, "logits": logits, "position_ids": position_ids},
    )


def example_gpt2_vision(images: Path) -> None:
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from transformers import GPT2LMHeadModel

    base = ROOT / "gpt2"
    out = ROOT / "example_gpt2_vision"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    model = GPT2LMHeadModel.from_pretrained(base).eval()
    cfg = json.loads((base / "config.json").read_text())
    image_token_id = 5
    cfg.update(
        model_type="example_gpt2_vision",
        architectures=["ExampleGpt2VisionForCausalLM"],
        image_token_id=image_token_id,
        vision={"image_size": 28, "patch_size": 14, "num_channels": 3, "hidden_size": 16},
    )
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    g = torch.Generator().manual_seed(23)
    vis = {
        "vision.patch_embed.weight": 0.2 * torch.randn(16, 3, 14, 14, generator=g),
        "vision.norm.weight": 1.0 + 0.1 * torch.randn(16, generator=g),
        "vision.norm.bias": 0.1 * torch.randn(16, generator=g),
        "projector.weight": 0.2 * torch.randn(cfg["n_embd"], 16, generator=g),
        "projector.bias": 0.1 * torch.randn(cfg["n_embd"], generator=g),
    }
    weights = load_file(str(base / "model.safetensors"))
    weights.update(vis)
    save_file(weights, str(out / "model.safetensors"))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / f, out / f)
    processor = CLIPImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, resample=3
    )
    processor.save_pretrained(out)
    pixel_values = processor(images=[Image.open(images / "2.jpg").convert("RGB")], return_tensors="pt")[
        "pixel_values"
    ]

    def features(px):
        h = F.conv2d(px, vis["vision.patch_embed.weight"], stride=14).flatten(2).transpose(1, 2)
        x = F.layer_norm(h, (16,), vis["vision.norm.weight"], vis["vision.norm.bias"], 1e-5)
        q = x.unsqueeze(1)
        h = h + F.scaled_dot_product_attention(q, q, q).squeeze(1)
        return F.linear(h, vis["projector.weight"], vis["projector.bias"]).reshape(-1, cfg["n_embd"])

    ids = [10, 11, 12] + [image_token_id] * 4 + [13, 14, 15, 16]
    feats = features(pixel_values)

    def logits_of(seq):
        x = torch.tensor([seq])
        emb = model.transformer.wte(x)
        pos = model.transformer.wpe(torch.arange(len(seq)))
        place = (x[0] == image_token_id).nonzero().flatten()[: feats.shape[0]]
        emb[0, place] = feats - pos[place]
        return model(inputs_embeds=emb).logits[0]

    with torch.no_grad():
        logits = logits_of(ids)
        seq = list(ids)
        for _ in range(16):
            seq.append(int(logits_of(seq)[-1].argmax()))
    expected = {
        "input_ids": ids,
        "images": ["mllm_demo_data/2.jpg"],
        "image_token_id": image_token_id,
        "greedy": seq[len(ids):],
    }
    (out / "expected.json").write_text(json.dumps(expected))
    save_file({"pixel_values": pixel_values.contiguous(), "logits": logits.contiguous()}, str(out / "expected.safetensors"))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{out.name}: {size // 1024} KiB, prompt {len(ids)} tokens")


def main() -> None:
    cache = Path(os.environ.get("SWIFT_RS_CACHE", Path.home() / ".cache" / "swift-rs"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=Path, default=cache / "assets/llamafactory/data/mllm_demo_data")
    args = ap.parse_args()
    llava(args.images)
    qwen2_vl(args.images)
    example_gpt2_vision(args.images)


if __name__ == "__main__":
    main()
