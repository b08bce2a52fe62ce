"""Records the expected values of every built-in preference loss for fixed log-probabilities.

The formulas are transcribed from TRL (0.29: trl/trainer/dpo_trainer.py `_compute_loss`,
cpo_trainer.py `cpo_loss`, orpo_trainer.py `odds_ratio_loss`, kto_trainer.py `kto_loss`,
reward_trainer.py `compute_loss` for the reward model's Bradley-Terry loss) into
plain numpy, independently of the Rust code. Differences from TRL 0.29 that swift-rs keeps on
purpose: the DPO `sigmoid` loss honours --label_smoothing (conservative DPO, as TRL did before
0.2x); everything else is TRL's definition. Run with any Python that has numpy:

    python tests/reference/preference_losses.py > tests/reference/preference_losses.json
"""
import json

import numpy as np


def logsigmoid(x):
    return -np.logaddexp(0.0, -x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


PAIRS = {
    "chosen_logps": [-12.5, -30.0, -8.25],
    "rejected_logps": [-14.0, -27.5, -20.0],
    "ref_chosen_logps": [-13.0, -29.0, -9.0],
    "ref_rejected_logps": [-13.5, -28.0, -18.0],
    "chosen_tokens": [5.0, 12.0, 4.0],
    "rejected_tokens": [6.0, 10.0, 9.0],
}
# Reward modelling: the value head's scores travel in the log-probability fields.
SCORES = {
    "chosen_logps": [0.75, -1.25, 2.5],
    "rejected_logps": [-0.5, 0.25, 2.75],
    "ref_chosen_logps": [0.0, 0.0, 0.0],
    "ref_rejected_logps": [0.0, 0.0, 0.0],
    "chosen_tokens": [5.0, 12.0, 4.0],
    "rejected_tokens": [6.0, 10.0, 9.0],
}
UNPAIRED = {
    "chosen_logps": [-12.5, -30.0],
    "rejected_logps": [-14.0],
    "ref_chosen_logps": [-13.0, -29.0],
    "ref_rejected_logps": [-13.5],
    "chosen_tokens": [5.0, 12.0],
    "rejected_tokens": [6.0],
    "kl": 0.3,
}


def arrays(x):
    return {k: np.asarray(v, dtype=np.float64) for k, v in x.items()}


def nll(x):
    # Token-averaged cross-entropy of the chosen answers (TRL: cross_entropy over the chosen
    # completion tokens of the batch).
    return -x["chosen_logps"].sum() / x["chosen_tokens"].sum()


def dpo(x, loss_type, beta, label_smoothing=0.0, rpo_alpha=0.0):
    cr = x["chosen_logps"] - x["ref_chosen_logps"]
    rr = x["rejected_logps"] - x["ref_rejected_logps"]
    delta = cr - rr
    ls = label_smoothing
    if loss_type == "sigmoid":
        per = -logsigmoid(beta * delta) * (1 - ls) - logsigmoid(-beta * delta) * ls
    elif loss_type == "hinge":
        per = np.maximum(0.0, 1 - beta * delta)
    elif loss_type == "ipo":
        ipo_delta = cr / np.maximum(x["chosen_tokens"], 1) - rr / np.maximum(x["rejected_tokens"], 1)
        per = (ipo_delta - 1 / (2 * beta)) ** 2
    elif loss_type == "robust":
        clean = -(1 - ls) * logsigmoid(beta * delta)
        flipped = -ls * logsigmoid(-beta * delta)
        per = (clean - flipped) / (1 - 2 * ls)
    loss = per.mean()
    if rpo_alpha:
        loss += rpo_alpha * nll(x)
    return loss, beta * cr, beta * rr


def orpo(x, beta):
    ac = x["chosen_logps"] / x["chosen_tokens"]
    ar = x["rejected_logps"] / x["rejected_tokens"]
    log_odds = (ac - ar) - (np.log1p(-np.exp(ac)) - np.log1p(-np.exp(ar)))
    ratio = logsigmoid(log_odds)
    losses = beta * ratio
    return nll(x) - losses.mean(), beta * ac, beta * ar


def cpo(x, loss_type, beta, label_smoothing=0.0, simpo_gamma=0.5, cpo_alpha=1.0):
    if loss_type == "simpo":
        c = x["chosen_logps"] / x["chosen_tokens"]
        r = x["rejected_logps"] / x["rejected_tokens"]
    else:
        c, r = x["chosen_logps"], x["rejected_logps"]
    logits = c - r
    if loss_type == "simpo":
        logits = logits - simpo_gamma / beta
    ls = label_smoothing
    losses = -logsigmoid(beta * logits) * (1 - ls) - logsigmoid(-beta * logits) * ls
    loss = losses.mean() + cpo_alpha * nll(x)
    return loss, beta * c, beta * r


def kto(x, beta, desirable_weight=1.0, undesirable_weight=1.0):
    kl = max(float(x["kl"]), 0.0)
    cr = x["chosen_logps"] - x["ref_chosen_logps"]
    rr = x["rejected_logps"] - x["ref_rejected_logps"]
    chosen_losses = 1 - sigmoid(beta * (cr - kl))
    rejected_losses = 1 - sigmoid(beta * (kl - rr))
    losses = np.concatenate([desirable_weight * chosen_losses, undesirable_weight * rejected_losses])
    return losses.mean(), beta * cr, beta * rr


def bradley_terry(x, center_rewards_coefficient=None):
    # TRL RewardTrainer.compute_loss: the inputs are the value head's scores, not log-probs.
    rc, rr = x["chosen_logps"], x["rejected_logps"]
    loss = -logsigmoid(rc - rr).mean()
    if center_rewards_coefficient is not None:
        loss += center_rewards_coefficient * np.mean((rc + rr) ** 2)
    return loss, rc, rr


def case(name, inputs, params, fn):
    loss, cr, rr = fn(arrays(inputs))
    return {
        "loss": name,
        "params": params,
        "inputs": inputs,
        "expected": {"loss": float(loss), "chosen_rewards": cr.tolist(), "rejected_rewards": rr.tolist()},
    }


CASES = [
    case("sigmoid", PAIRS, {"beta": 0.1}, lambda x: dpo(x, "sigmoid", 0.1)),
    case("sigmoid", PAIRS, {"beta": 0.5, "label_smoothing": 0.1}, lambda x: dpo(x, "sigmoid", 0.5, 0.1)),
    case("sigmoid", PAIRS, {"beta": 0.1, "rpo_alpha": 0.5}, lambda x: dpo(x, "sigmoid", 0.1, rpo_alpha=0.5)),
    case("ipo", PAIRS, {"beta": 0.1}, lambda x: dpo(x, "ipo", 0.1)),
    case("hinge", PAIRS, {"beta": 0.5}, lambda x: dpo(x, "hinge", 0.5)),
    case("robust", PAIRS, {"beta": 0.1, "label_smoothing": 0.2}, lambda x: dpo(x, "robust", 0.1, 0.2)),
    case("orpo", PAIRS, {"beta": 0.1}, lambda x: orpo(x, 0.1)),
    case("simpo", PAIRS, {"beta": 2.0, "simpo_gamma": 1.0, "cpo_alpha": 0.0},
         lambda x: cpo(x, "simpo", 2.0, simpo_gamma=1.0, cpo_alpha=0.0)),
    case("simpo", PAIRS, {"beta": 2.0, "simpo_gamma": 0.5, "cpo_alpha": 1.0},
         lambda x: cpo(x, "simpo", 2.0, simpo_gamma=0.5, cpo_alpha=1.0)),
    case("cpo", PAIRS, {"beta": 0.1, "cpo_alpha": 1.0}, lambda x: cpo(x, "sigmoid", 0.1)),
    case("kto", UNPAIRED, {"beta": 0.1}, lambda x: kto(x, 0.1)),
    case("kto", UNPAIRED, {"beta": 0.5, "desirable_weight": 1.0, "undesirable_weight": 1.33},
         lambda x: kto(x, 0.5, 1.0, 1.33)),
    case("bradley_terry", SCORES, {}, lambda x: bradley_terry(x)),
    case("bradley_terry", SCORES, {"center_rewards_coefficient": 0.01},
         lambda x: bradley_terry(x, 0.01)),
]

if __name__ == "__main__":
    print(json.dumps(CASES, indent=1))
