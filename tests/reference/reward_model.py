"""Reward-model references from transformers / peft for tests/reward_model.rs.

Run with the project's virtualenv (torch, transformers 4.57, peft 0.17; scripts/setup.sh):

    python tests/reference/reward_model.py record > tests/reference/reward_model.json
        The tiny llama of tests/fixtures/models/llama as transformers'
        LlamaForSequenceClassification (num_labels=1) with a fixed, seeded `score` weight:
        its config.json as transformers saves it, the weight, and the rewards of fixed chosen /
        rejected token ids (one right-padded batch, as TRL's RewardTrainer collates them), with
        TRL's RewardTrainer loss, -logsigmoid(r_chosen - r_rejected).mean() (plus
        center_rewards_coefficient * mean((r_chosen + r_rejected)^2) for the centred value).

    python tests/reference/reward_model.py peft BASE_DIR CHECKPOINT IDS
        Loads a swift-rs LoRA reward-model checkpoint with AutoModelForSequenceClassification +
        PeftModel and prints the adapter keys peft did not expect, the ones it expected and did not
        get, and the scores of IDS (sequences of comma-separated ids joined by ';').

    python tests/reference/reward_model.py full MODEL_DIR IDS
        The same for a full reward-model folder (AutoModelForSequenceClassification alone).
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "fixtures" / "models" / "llama"

# Token ids of the tiny llama's vocabulary (320; 0 is its pad token and appears nowhere).
CHOSEN = [[5, 17, 40, 3, 99, 120, 7], [11, 12, 13, 200, 14]]
REJECTED = [[5, 17, 40, 3, 88], [11, 12, 13, 201, 250, 251, 30, 31]]


def scores(model, seqs, pad_id=0):
    """One right-padded batch (TRL's collator pads on the right); the model pools the last
    non-padding token itself."""
    n = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (n - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits[:, 0].tolist()


def parse_ids(text):
    return [[int(x) for x in seq.split(",")] for seq in text.split(";")]


def record():
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(TINY, num_labels=1, dtype=torch.float32)
    model.eval()
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        model.score.weight.copy_(torch.randn(model.score.weight.shape, generator=g))
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        config = json.loads((Path(d) / "config.json").read_text())
    rc = torch.tensor(scores(model, CHOSEN + REJECTED)[: len(CHOSEN)])
    rr = torch.tensor(scores(model, CHOSEN + REJECTED)[len(CHOSEN) :])
    # trl/trainer/reward_trainer.py (RewardTrainer.compute_loss).
    loss = -F.logsigmoid(rc - rr).mean()
    centred = loss + 0.01 * torch.mean((rc + rr) ** 2)
    print(
        json.dumps(
            {
                "config": config,
                "score_weight": model.score.weight[0].tolist(),
                "chosen_ids": CHOSEN,
                "rejected_ids": REJECTED,
                "rewards_chosen": rc.tolist(),
                "rewards_rejected": rr.tolist(),
                "loss": loss.item(),
                "loss_center_0.01": centred.item(),
            },
            indent=1,
        )
    )


def peft(base, ckpt, ids):
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, ckpt)
    model.eval()
    saved = set(load_file(f"{ckpt}/adapter_model.safetensors").keys())
    expected = set(get_peft_model_state_dict(model).keys())
    print(
        json.dumps(
            {
                "unexpected": sorted(saved - expected),
                "missing": sorted(expected - saved),
                "peft_type": type(model).__name__,
                "scores": [scores(model, [s])[0] for s in parse_ids(ids)],
            }
        )
    )


def full(model_dir, ids):
    model, info = AutoModelForSequenceClassification.from_pretrained(
        model_dir, dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    print(
        json.dumps(
            {
                "unexpected": sorted(info["unexpected_keys"]),
                "missing": sorted(info["missing_keys"]),
                "architecture": type(model).__name__,
                "num_labels": model.config.num_labels,
                "scores": [scores(model, [s])[0] for s in parse_ids(ids)],
            }
        )
    )


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "record"
    if mode == "record":
        record()
    elif mode == "peft":
        peft(sys.argv[2], sys.argv[3], sys.argv[4])
    elif mode == "full":
        full(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown mode {mode}: use record, peft or full")
