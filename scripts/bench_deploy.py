"""Load benchmark of `swift deploy` (continuous batching) with the official `openai` client,
beside ms-swift's `swift deploy` and swift-rs's own offline batching, in one run.

On the default model (SmolLM2-135M-Instruct, float32, CPU, template chatml on every side so that
the prompts are the same tokens), the same --requests requests (chat, temperature 0,
--max-tokens each), in this order:

1. swift-rs `swift deploy`: a single client sends each request alone, one after another (the
   reference answers; skipped with --no-single), then --clients concurrent clients send them all;
2. ms-swift's `swift deploy` (transformers backend, `--max_batch_size` --clients, its own
   virtualenv: scripts/peer-venv.sh; skipped with --no-peer): the same concurrent clients;
3. swift-rs `swift infer --val_dataset` over the same prompts at `--max_batch_size` --clients
   (offline batching; skipped with --no-offline): its summary's generated tokens/s (the whole
   run, prefill included) and decode tokens/s (tokens after each row's first, over the time after
   each batch's first token).

Prints aggregate generated tokens/s at --clients clients for both servers, the ratio (target: at
least 5x ms-swift) and the share of offline batching (target: at least 70 %); for each side the
cores it kept busy during the concurrent phase ((user + system) / wall, every thread of the
server's process tree; the clients' own, which share the cores) and its voluntary context
switches per generated token; the CPU model and
the load average before and after. Checks that at least 90 % of swift-rs's concurrent answers
equal the answer the same request got alone and that the rest agree in their first 8 tokens
(batched float arithmetic may break a near-tie the other way later on).

    python3 scripts/bench_deploy.py [--model DIR] [--swift target/release/swift]
        [--requests 64] [--clients 16] [--max-tokens 32] [--no-peer] [--no-single]
        [--no-offline] [--json]
"""

import argparse
import concurrent.futures as cf
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai

from benchlib import cpu_model, load_average, timed, tree_usage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "USE_HF": "1", "CUDA_VISIBLE_DEVICES": ""}
TOPICS = [
    "the sea", "mountains", "coffee", "the moon", "volcanoes", "honey bees", "rainbows",
    "the Roman empire", "chess", "penguins", "bicycles", "the piano", "deserts", "glaciers",
    "lightning", "owls", "bread", "the internet", "trains", "tea", "autumn", "whales",
    "the Sahara", "dinosaurs", "gardening", "the violin", "comets", "photosynthesis", "maps",
    "lighthouses", "snow", "clocks",
]
FORMS = ["Write one sentence about {}.", "Tell me a short fact about {}."]


def prompts(n):
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        form = FORMS[(i // len(TOPICS)) % len(FORMS)]
        out.append(form.format(topic))
    return out


def ask(client, model, prompt, max_tokens, logprobs=True):
    t0 = time.perf_counter()
    kw = dict(logprobs=True, top_logprobs=0) if logprobs else {}
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0,
        max_tokens=max_tokens, **kw)
    dt = time.perf_counter() - t0
    lp = r.choices[0].logprobs
    tokens = [t.token for t in (lp.content if lp and lp.content else [])]
    return {"text": r.choices[0].message.content, "tokens": tokens,
            "prompt_tokens": r.usage.prompt_tokens,
            "completion_tokens": r.usage.completion_tokens, "latency": dt}


def percentile(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def concurrent(client, model, qs, clients, max_tokens, pid, logprobs=True):
    """Every request from `clients` threads: the answers, the wall time, and the server's cores
    busy and voluntary context switches over that time."""
    cpu0, vcsw0 = tree_usage(pid)
    client0 = time.process_time()
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda q: ask(client, model, q, max_tokens, logprobs), qs))
    wall = time.perf_counter() - t0
    client1 = time.process_time()
    cpu1, vcsw1 = tree_usage(pid)
    gen = sum(r["completion_tokens"] for r in answers)
    lat = [r["latency"] for r in answers]
    return answers, {
        "wall_s": wall, "generated_tokens": gen, "generated_tokens_per_s": gen / wall,
        "requests_per_s": len(qs) / wall, "latency_p50_s": statistics.median(lat),
        "latency_p99_s": percentile(lat, 0.99), "cores_busy": (cpu1 - cpu0) / wall,
        "voluntary_switches_per_token": (vcsw1 - vcsw0) / max(gen, 1),
        "client_cores_busy": (client1 - client0) / wall,
        "prompt_tokens": sum(r["prompt_tokens"] for r in answers),
    }


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base_url, proc, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(base_url + "/models", timeout=2)
            return True
        except OSError:
            time.sleep(1)
    return False


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


STEP = re.compile(r"step \d+ at ([0-9.]+) s: (\d+) rows \((\d+) joining, (\d+) prompt tokens\), "
                  r"backend ([0-9.]+) ms, host ([0-9.]+) ms; (\d+) waiting")


def server_steps(path, max_rows):
    """Where the server's last busy period (the concurrent phase) went, from its per-step log
    lines: rows per step and the empty places in the batch (in the tail after the last join, and
    rows kept waiting by the join policy), joining steps and what their prompt tokens cost beyond
    a decoding step of the same running rows (decoding steps fitted as a + b * rows), and the
    host's work on the outputs. None when the log has no step lines."""
    steps = []
    with open(path) as f:
        for line in f:
            m = STEP.search(line)
            if m:
                at, rows, joined, prompt, backend, host, waiting = map(float, m.groups())
                if steps and at < steps[-1]["at"]:
                    steps = []  # a new busy period
                steps.append({"at": at, "rows": rows, "joined": joined, "prompt": prompt,
                              "backend": backend, "host": host, "waiting": waiting})
    dec = [s for s in steps if s["joined"] == 0]
    joins = [s for s in steps if s["joined"] > 0]
    if len(dec) < 3 or not joins:
        return None
    mx = statistics.mean(s["rows"] for s in dec)
    my = statistics.mean(s["backend"] for s in dec)
    var = sum((s["rows"] - mx) ** 2 for s in dec)
    b = sum((s["rows"] - mx) * (s["backend"] - my) for s in dec) / var if var else 0.0
    a = my - b * mx
    last_join = max(i for i, s in enumerate(steps) if s["joined"] > 0)
    tail = steps[last_join + 1:]
    extra = sum(s["backend"] - (a + b * (s["rows"] - s["joined"])) for s in joins)
    prompt = sum(s["prompt"] for s in joins)
    return {
        "steps": len(steps), "rows_per_step": statistics.mean(s["rows"] for s in steps),
        "empty_places": sum(max_rows - s["rows"] for s in steps),
        "tail_steps": len(tail), "tail_empty_places": sum(max_rows - s["rows"] for s in tail),
        "tail_s": sum(s["backend"] + s["host"] for s in tail) / 1e3,
        "waiting_row_steps": sum(s["waiting"] for s in steps),
        "decode_step_ms": a, "decode_row_ms": b, "join_steps": len(joins),
        "join_backend_s": sum(s["backend"] for s in joins) / 1e3,
        "prompt_token_ms": extra / max(prompt, 1), "host_s": sum(s["host"] for s in steps) / 1e3,
        "backend_s": sum(s["backend"] for s in steps) / 1e3,
    }


def ours(a, qs):
    """swift-rs's server: the answers alone (unless --no-single) and together, and the figures."""
    cmd = [a.swift, "deploy", "--model", a.model, "--port", "0", "--device", a.device,
           "--template", a.template, "--max_batch_size", str(a.clients),
           "--max_queue", str(a.requests)]
    if a.torch_dtype:
        cmd += ["--torch_dtype", a.torch_dtype]
    log = subprocess.DEVNULL
    if a.server_log:
        cmd[1:1] = ["--log-level", "debug,swift_serve::batcher=trace"]
        log = open(a.server_log, "w")
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = server.stdout.readline().strip()
        if not line.startswith("listening on "):
            sys.exit(f"swift deploy did not start: {line!r}")
        base_url = line.removeprefix("listening on ") + "/v1"
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        ask(client, model, qs[0], 4)  # warm-up
        alone, single = None, None
        if not a.no_single:
            t0 = time.perf_counter()
            alone = [ask(client, model, q, a.max_tokens) for q in qs]
            s = time.perf_counter() - t0
            single = {"generated_tokens_per_s": sum(r["completion_tokens"] for r in alone) / s,
                      "latency_p50_s": statistics.median(r["latency"] for r in alone),
                      "requests_per_s": len(qs) / s}
        together, fig = concurrent(client, model, qs, a.clients, a.max_tokens, server.pid)
    finally:
        stop(server)
    return alone, together, fig, single


def peer(a, qs):
    """ms-swift's server on the same requests from the same number of clients."""
    py = subprocess.run(["bash", os.path.join(ROOT, "scripts/peer-venv.sh")],
                        stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    port = free_port()
    cmd = [os.path.join(os.path.dirname(py), "swift"), "deploy", "--model", a.model,
           "--model_type", "llama", "--template", a.template, "--infer_backend", "transformers",
           "--torch_dtype", a.torch_dtype or "float32", "--max_batch_size", str(a.clients),
           "--host", "127.0.0.1", "--port", str(port), "--served_model_name", "peer",
           "--verbose", "false", "--log_interval", "-1"]
    log = tempfile.NamedTemporaryFile(prefix="bench-deploy-peer-", suffix=".log", delete=False)
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, **PEER_ENV))
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        if not wait_ready(base_url, server, 600):
            sys.exit(f"ms-swift's swift deploy did not start; its log: {log.name}")
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=1200)
        ask(client, "peer", qs[0], 4)  # warm-up
        together, fig = concurrent(client, "peer", qs, a.clients, a.max_tokens, server.pid)
    finally:
        stop(server)
    return together, fig


def offline(a, qs):
    """`swift infer --val_dataset` over the same prompts in batches of --clients."""
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as work:
        rows = os.path.join(work, "prompts.jsonl")
        with open(rows, "w") as f:
            for q in qs:
                f.write(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n")
        cmd = [a.swift, "infer", "--model", a.model, "--device", a.device, "--template",
               a.template, "--temperature", "0", "--max_new_tokens", str(a.max_tokens),
               "--max_batch_size", str(a.clients), "--val_dataset", rows,
               "--result_path", os.path.join(work, "out.jsonl")]
        if a.torch_dtype:
            cmd += ["--torch_dtype", a.torch_dtype]
        proc, res = timed(cmd)
    found = re.findall(r"(\{.*\"rows\".*\})", proc.stderr)
    if not found:
        sys.exit(f"no summary in swift infer's log:\n{proc.stderr[-3000:]}")
    s = json.loads(found[-1])
    return {"generated_tokens_per_s": s["generated_tokens_per_s"],
            "decode_tokens_per_s": s["decode_tokens_per_s"],
            "prompt_tokens_per_s": s["prompt_tokens_per_s"], "generated_tokens":
            s["generated_tokens"], "prompt_tokens": s["prompt_tokens"],
            "cores_busy": res["cores_busy"],
            "voluntary_switches_per_token": res["voluntary_switches"] / max(s["generated_tokens"], 1)}


def main():
    cache = os.environ.get("SWIFT_RS_CACHE", os.path.expanduser("~/.cache/swift-rs"))
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=os.path.join(cache, "models/SmolLM2-135M-Instruct"))
    p.add_argument("--swift", default=os.path.join(ROOT, "target/release/swift"))
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--torch-dtype", default=None)
    p.add_argument("--template", default="chatml",
                   help="on every side (ms-swift cannot read SmolLM2's own template's name)")
    p.add_argument("--no-peer", action="store_true", help="skip ms-swift's server")
    p.add_argument("--no-single", action="store_true", help="skip the single-client pass")
    p.add_argument("--no-offline", action="store_true", help="skip swift infer's offline batches")
    p.add_argument("--server-log", help="swift-rs's server log at debug level into this file "
                   "(each step's rows, joins and times, and each busy period's summary)")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    a = p.parse_args()
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        sys.exit(f"no model at {a.model} (run make setup)")
    if not os.access(a.swift, os.X_OK):
        sys.exit(f"{a.swift} is missing: build first (cargo build --release)")
    qs = prompts(a.requests)
    figures = {"cpu": cpu_model(), "load_average_before": load_average(),
               "requests": a.requests, "clients": a.clients, "max_tokens": a.max_tokens}
    print(f"{figures['cpu']}, {os.cpu_count()} cores; load average before the run "
          f"{figures['load_average_before']}; {a.requests} requests, {a.clients} clients, "
          f"max_tokens {a.max_tokens}, {a.device}, template {a.template}", flush=True)

    alone, together, ours_fig, single = ours(a, qs)
    figures["swift_rs"] = ours_fig
    steps = server_steps(a.server_log, a.clients) if a.server_log else None
    if steps:
        figures["swift_rs_steps"] = steps
        print(f"swift-rs deploy's steps: {steps['steps']} ({steps['rows_per_step']:.1f} rows each "
              f"of {a.clients}; {steps['empty_places']:.0f} empty places, "
              f"{steps['tail_empty_places']:.0f} of them in the {steps['tail_steps']} steps after "
              f"the last join ({steps['tail_s']:.2f} s); rows kept waiting "
              f"{steps['waiting_row_steps']:.0f} row-steps); decoding step "
              f"{steps['decode_step_ms']:.1f} + {steps['decode_row_ms']:.2f} ms per row; "
              f"{steps['join_steps']} joining steps {steps['join_backend_s']:.2f} s, a prompt "
              f"token {steps['prompt_token_ms']:.2f} ms beyond the decoding step; backend "
              f"{steps['backend_s']:.2f} s, host {steps['host_s']:.2f} s", flush=True)
    figures["swift_rs_single_client"] = single
    print(f"swift-rs deploy, {a.clients} clients: {ours_fig['generated_tokens_per_s']:.1f} "
          f"generated tok/s, {ours_fig['requests_per_s']:.2f} requests/s, latency p50 "
          f"{ours_fig['latency_p50_s']:.2f} s, p99 {ours_fig['latency_p99_s']:.2f} s, cores busy "
          f"{ours_fig['cores_busy']:.2f} (the clients' {ours_fig['client_cores_busy']:.3f}), "
          f"{ours_fig['voluntary_switches_per_token']:.0f} voluntary switches/token", flush=True)
    if single:
        print(f"swift-rs deploy, 1 client: {single['generated_tokens_per_s']:.1f} generated tok/s, "
              f"latency p50 {single['latency_p50_s']:.2f} s; {a.clients} clients vs 1: "
              f"{ours_fig['generated_tokens_per_s'] / single['generated_tokens_per_s']:.2f}x",
              flush=True)
    if not a.no_peer:
        _, peer_fig = peer(a, qs)
        figures["ms_swift"] = peer_fig
        ratio = ours_fig["generated_tokens_per_s"] / peer_fig["generated_tokens_per_s"]
        figures["vs_ms_swift"] = ratio
        print(f"ms-swift deploy, {a.clients} clients: {peer_fig['generated_tokens_per_s']:.1f} "
              f"generated tok/s, latency p50 {peer_fig['latency_p50_s']:.2f} s, cores busy "
              f"{peer_fig['cores_busy']:.2f}, {peer_fig['voluntary_switches_per_token']:.0f} "
              f"voluntary switches/token; prompt tokens {peer_fig['prompt_tokens']} "
              f"(swift-rs {ours_fig['prompt_tokens']})", flush=True)
        print(f"swift-rs / ms-swift at {a.clients} clients: {ratio:.2f}x (target >= 5x)",
              flush=True)
    if not a.no_offline:
        off = offline(a, qs)
        figures["offline"] = off
        share_gen = ours_fig["generated_tokens_per_s"] / off["generated_tokens_per_s"]
        share_dec = ours_fig["generated_tokens_per_s"] / off["decode_tokens_per_s"]
        figures["share_of_offline_generated"] = share_gen
        figures["share_of_offline_decode"] = share_dec
        print(f"swift infer offline, batches of {a.clients}: {off['generated_tokens_per_s']:.1f} "
              f"generated tok/s (prefill included), {off['decode_tokens_per_s']:.1f} decode "
              f"tok/s; cores busy {off['cores_busy']:.2f} (whole command), "
              f"{off['voluntary_switches_per_token']:.0f} voluntary switches/token; a prompt token "
              f"{1e3 / off['prompt_tokens_per_s']:.2f} ms in its prefill, a decoded token "
              f"{1e3 / off['decode_tokens_per_s']:.2f} ms", flush=True)
        print(f"swift-rs deploy at {a.clients} clients: {share_gen:.0%} of offline generated "
              f"tok/s, {share_dec:.0%} of offline decode tok/s (target >= 70 %)", flush=True)
    figures["load_average_after"] = load_average()
    print(f"load average after the run: {figures['load_average_after']}")

    ok = True
    if alone is not None:
        equal = sum(x["text"] == y["text"] for x, y in zip(alone, together))
        prefix_ok = all(x["text"] == y["text"] or x["tokens"][:8] == y["tokens"][:8]
                        for x, y in zip(alone, together))
        figures["equal_to_alone"] = equal
        print(f"answers equal to the request alone: {equal}/{a.requests} "
              f"({100 * equal / a.requests:.0f} %); the rest equal in their first 8 tokens: "
              f"{prefix_ok}")
        ok = equal >= 0.9 * a.requests and prefix_ok
        if not ok:
            for i, (x, y) in enumerate(zip(alone, together)):
                if x["text"] != y["text"]:
                    print(f"  request {i}: alone {x['text']!r}\n"
                          f"              batched {y['text']!r}")
    if a.json:
        print(json.dumps(figures))
    if not ok:
        sys.exit("FAILED: batched answers differ from the answers alone")


if __name__ == "__main__":
    main()
