"""Records PEFT's AdaLoRA on the tiny llama, for tests/adalora.rs: its forward pass, the
orthogonal regularisation, the gradients, and the rank allocation over a few deterministic steps.

Usage: python adalora_reference.py BASE_MODEL_DIR OUT_JSON

AdaLoraConfig(task_type CAUSAL_LM, init_r 4, target_r 2, tinit 1, tfinal 2, deltaT 2, beta1 0.8, beta2 0.9,
orth_reg_weight 0.3, total_step 6, lora_alpha 8, no dropout) on q_proj, v_proj, down_proj;
seeded (torch.manual_seed(0) before the model is wrapped), then lora_A, lora_B and lora_E set to
random values (E starts at zero in PEFT, which would leave A and B without gradients).

On fixed token ids (labels = ids, so PEFT's forward adds the orthogonal regularisation) it
records the tensors under PEFT's state-dict keys, the mean next-token negative log-likelihood
(`nll`), the loss PEFT returns (`loss` = nll + orth_reg_weight · regularisation), the last
position's logits and each tensor's gradient. Then it trains 6 steps with plain SGD as PEFT
documents the loop (`loss.backward(); optimizer.step(); update_and_allocate(step);
zero_grad()`) and records each step's loss and rank pattern, every tensor after the last step
(full size, from the parameters), and the state dict PEFT saves (cut to the rank pattern).
Run with peft 0.21 (scripts/requirements-reference.txt).
"""

import json
import sys

import peft
import torch
from peft import AdaLoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict
from transformers import AutoModelForCausalLM

IDS = [5, 17, 42, 7, 99, 3, 61, 12, 8]
TARGETS = ["q_proj", "v_proj", "down_proj"]
STEPS = 6
LR = 0.05


def tensors_of(state):
    return {k: {"shape": list(v.shape), "values": v.flatten().tolist()} for k, v in state.items()}


def pattern(rank_pattern):
    if rank_pattern is None:
        return None
    return {k.replace(".default", ""): list(map(bool, v)) for k, v in rank_pattern.items()}


def main():
    base_dir, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = AdaLoraConfig(
        init_r=4,
        target_r=2,
        tinit=1,
        tfinal=2,
        deltaT=2,
        beta1=0.8,
        beta2=0.9,
        orth_reg_weight=0.3,
        total_step=STEPS,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=TARGETS,
        # PeftModelForCausalLM: a plain PeftModel skips AdaLoraModel.forward, which adds the
        # orthogonal regularisation to the loss.
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    model.eval()
    initial = tensors_of(get_peft_model_state_dict(model))
    params = {n.replace(".default", ""): p for n, p in model.named_parameters() if p.requires_grad}
    ids = torch.tensor([IDS])
    optimizer = torch.optim.SGD(list(params.values()), lr=LR)
    steps = []
    for step in range(1, STEPS + 1):
        outputs = model(input_ids=ids, labels=ids)
        outputs.loss.backward()
        if step == 1:
            logits = outputs.logits
            logp = logits[0, :-1].log_softmax(-1)
            nll = -logp.gather(-1, ids[0, 1:].unsqueeze(-1)).mean()
            first = {
                "nll": nll.item(),
                "loss": outputs.loss.item(),
                "last_logits": logits[0, -1].tolist(),
                "grads": {k: p.grad.flatten().tolist() for k, p in params.items()},
            }
        optimizer.step()
        model.base_model.update_and_allocate(step)
        optimizer.zero_grad()
        steps.append(
            {
                "loss": outputs.loss.item(),
                "rank_pattern": pattern(model.peft_config["default"].rank_pattern),
            }
        )
    final = {k: {"shape": list(p.shape), "values": p.detach().flatten().tolist()} for k, p in params.items()}
    saved = tensors_of(get_peft_model_state_dict(model))
    json.dump(
        {
            "peft": peft.__version__,
            "ids": IDS,
            "lr": LR,
            "tensors": initial,
            **first,
            "steps": steps,
            "final": final,
            "saved": saved,
        },
        open(out, "w"),
    )


if __name__ == "__main__":
    main()
