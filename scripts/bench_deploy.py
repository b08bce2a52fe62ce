"""Load benchmark of `swift deploy` (continuous batching) with the official `openai` client.

Starts the server on the default model (SmolLM2-135M-Instruct), then:

1. single client: each of the 64 requests alone, one after another (the reference answers, and
   the single-client generated tokens/s);
2. 16 concurrent clients sending the same 64 requests (4 each), at temperature 0.

Checks that at least 90 % of the concurrent answers equal the answer the same request got alone
and that the rest agree in their first 8 tokens (batched float arithmetic may break a near-tie
the other way later on), and prints requests/s, generated tokens/s, p50/p99 latency, and the
aggregate tokens/s at 16 clients against the single client (target: at least 3x).

    venv/bin/python scripts/bench_deploy.py [--model DIR] [--swift target/release/swift]
        [--requests 64] [--clients 16] [--max-tokens 32] [--json]
"""

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import time

import openai

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


def ask(client, model, prompt, max_tokens):
    t0 = time.perf_counter()
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0,
        max_tokens=max_tokens, logprobs=True, top_logprobs=0)
    dt = time.perf_counter() - t0
    tokens = [t.token for t in (r.choices[0].logprobs.content if r.choices[0].logprobs else [])]
    return {"text": r.choices[0].message.content, "tokens": tokens,
            "completion_tokens": r.usage.completion_tokens, "latency": dt}


def percentile(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main():
    cache = os.environ.get("SWIFT_RS_CACHE", os.path.expanduser("~/.cache/swift-rs"))
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=os.path.join(cache, "models/SmolLM2-135M-Instruct"))
    p.add_argument("--swift", default="target/release/swift")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--torch-dtype", default=None)
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    a = p.parse_args()
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        sys.exit(f"no model at {a.model} (run make setup)")
    if not os.access(a.swift, os.X_OK):
        sys.exit(f"{a.swift} is missing: build first (cargo build --release)")

    cmd = [a.swift, "deploy", "--model", a.model, "--port", "0", "--device", a.device,
           "--max_batch_size", str(a.clients), "--max_queue", str(a.requests)]
    if a.torch_dtype:
        cmd += ["--torch_dtype", a.torch_dtype]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline().strip()
        if not line.startswith("listening on "):
            sys.exit(f"swift deploy did not start: {line!r}")
        base_url = line.removeprefix("listening on ") + "/v1"
        client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        qs = prompts(a.requests)
        print(f"load average before the run: {os.getloadavg()[0]:.2f}; "
              f"{a.requests} requests, {a.clients} clients, max_tokens {a.max_tokens}, "
              f"{a.device}", flush=True)

        ask(client, model, qs[0], 4)  # warm-up
        t0 = time.perf_counter()
        alone = [ask(client, model, q, a.max_tokens) for q in qs]
        single_s = time.perf_counter() - t0
        single_tok = sum(r["completion_tokens"] for r in alone)

        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(a.clients) as pool:
            together = list(pool.map(lambda q: ask(client, model, q, a.max_tokens), qs))
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=60)

    equal = sum(x["text"] == y["text"] for x, y in zip(alone, together))
    prefix_ok = all(x["text"] == y["text"] or x["tokens"][:8] == y["tokens"][:8]
                    for x, y in zip(alone, together))
    gen = sum(r["completion_tokens"] for r in together)
    lat = [r["latency"] for r in together]
    single_tps = single_tok / single_s
    tps = gen / wall
    figures = {
        "requests": a.requests, "clients": a.clients, "max_tokens": a.max_tokens,
        "equal_to_alone": equal, "rest_equal_in_first_8_tokens": prefix_ok,
        "requests_per_s": a.requests / wall, "generated_tokens_per_s": tps,
        "latency_p50_s": statistics.median(lat), "latency_p99_s": percentile(lat, 0.99),
        "single_client_tokens_per_s": single_tps,
        "single_client_latency_p50_s": statistics.median(r["latency"] for r in alone),
        "speedup_vs_single_client": tps / single_tps,
    }
    print(f"answers equal to the request alone: {equal}/{a.requests} "
          f"({100 * equal / a.requests:.0f} %); the rest equal in their first 8 tokens: {prefix_ok}")
    print(f"{a.clients} clients: {figures['requests_per_s']:.2f} requests/s, "
          f"{tps:.1f} generated tokens/s, latency p50 {figures['latency_p50_s']:.2f} s, "
          f"p99 {figures['latency_p99_s']:.2f} s")
    print(f"1 client:   {a.requests / single_s:.2f} requests/s, {single_tps:.1f} generated tokens/s, "
          f"latency p50 {figures['single_client_latency_p50_s']:.2f} s")
    print(f"aggregate tokens/s, {a.clients} clients vs 1: {figures['speedup_vs_single_client']:.2f}x "
          f"(target >= 3x)")
    if a.json:
        print(json.dumps(figures))
    ok = equal >= 0.9 * a.requests and prefix_ok
    if not ok:
        for i, (x, y) in enumerate(zip(alone, together)):
            if x["text"] != y["text"]:
                print(f"  request {i}: alone {x['text']!r}\n              batched {y['text']!r}")
        sys.exit("FAILED: batched answers differ from the answers alone")


if __name__ == "__main__":
    main()
