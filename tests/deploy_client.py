"""Drives a running `swift deploy` with the official `openai` Python client (tests/deploy.rs).

Scenarios (each prints `ok NAME` when its checks pass; the first failure raises):

* `main`: models listed; chat completions at temperature 0 equal `swift infer`'s answers (the
  references file, for the base model and for the LoRA adapter, which changes the answers);
  streamed deltas concatenate to the non-streamed answer; usage counts; a completion (the prompt
  rendered as one user turn); concurrent requests mixing the base model and the adapter each
  equal their answer alone; stop strings, seeds with n > 1, logprobs, tools; every error case
  as a 4xx JSON error in OpenAI's shape, and the server still answers afterwards.
* `limits` (server started with --max_batch_size 1 --max_queue 1 and a step delay): while one
  request decodes and one waits, another is refused with 503 at once; a client that disconnects
  frees its row; then Ctrl-C (SIGINT to `--pid`) while a streamed request is in flight: it still
  completes, and the server exits.
* `tool-stream` (tests/common/deploy.rs: a server whose answer repeats the user's turn, or the
  tiny llama trained to answer with a call, on `pt` and `llama_cpp`): a streamed answer with a
  tool call, after some text, for each of `--n` choices, arrives as `tool_calls` deltas that the
  client assembles into the same call (name, arguments) as the non-streamed answer, with finish
  reason `tool_calls` and the same text as content.
"""

import argparse
import concurrent.futures as cf
import json
import os
import signal
import time
import urllib.error
import urllib.request

import openai


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def raw(base_url, path, body, key=None, method="POST"):
    """A request with an arbitrary body (the client cannot send bad JSON); (status, json)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(base_url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def openai_error_shape(body, what):
    check(isinstance(body, dict) and "error" in body, f"{what}: no error object: {body}")
    err = body["error"]
    for k in ("message", "type", "param", "code"):
        check(k in err, f"{what}: error lacks `{k}`: {err}")
    check(isinstance(err["message"], str) and err["message"], f"{what}: empty message")


def chat(client, model, q, **kw):
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": q}], **kw
    )


def agree_up_to_near_tie(client, model, q, max_tokens, got):
    """True when `got` equals the answer alone, or first differs where the answer alone had two
    candidates within 1e-4 in log-probability (a tie float rounding may break either way)."""
    alone = chat(client, model, q, max_tokens=max_tokens, logprobs=True, top_logprobs=2)
    want = alone.choices[0].message.content
    if got == want:
        return True
    acc = ""
    for t in alone.choices[0].logprobs.content:
        if not got.startswith(acc + t.token):
            top = t.top_logprobs
            return len(top) > 1 and abs(top[0].logprob - top[1].logprob) < 1e-4
        acc += t.token
    return False


def main_scenario(a, refs):
    base_url = a.base_url
    client = openai.OpenAI(base_url=base_url, api_key=a.api_key, max_retries=0)
    base, adapter = refs["base_name"], refs["adapter_name"]
    n_tok = refs["max_tokens"]

    ids = [m.id for m in client.models.list()]
    check(ids == [base, adapter], f"models: {ids}")
    print("ok models", flush=True)

    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health", timeout=10) as r:
        check(r.status == 200, "health")
    print("ok health", flush=True)

    answers = {}
    for ref in refs["base"]:
        r = chat(client, base, ref["query"], max_tokens=n_tok)
        c = r.choices[0]
        check(c.message.role == "assistant", "role")
        check(c.message.content == ref["response"],
              f"base answer {c.message.content!r} != swift infer's {ref['response']!r}")
        check(r.usage.prompt_tokens == ref["prompt_tokens"], f"prompt tokens {r.usage}")
        check(r.usage.completion_tokens == ref["completion_tokens"], f"completion tokens {r.usage}")
        check(r.usage.total_tokens == ref["prompt_tokens"] + ref["completion_tokens"], "total")
        check(c.finish_reason == ref["finish_reason"], f"finish {c.finish_reason} vs {ref}")
        check(r.model == base and r.object == "chat.completion", f"{r.model} {r.object}")
        answers[ref["query"]] = c.message.content
    print("ok chat_equals_swift_infer", flush=True)

    differs = 0
    for ref in refs["adapter"]:
        r = chat(client, adapter, ref["query"], max_tokens=n_tok)
        got = r.choices[0].message.content
        check(got == ref["response"], f"adapter answer {got!r} != swift infer --adapters' {ref['response']!r}")
        check(r.model == adapter, r.model)
        differs += got != answers[ref["query"]]
    check(differs > 0, "the adapter changed no answer")
    print("ok adapter_selection", flush=True)

    for q in list(answers)[:2]:
        for model in (base, adapter):
            whole = chat(client, model, q, max_tokens=n_tok)
            stream = chat(client, model, q, max_tokens=n_tok, stream=True,
                          stream_options={"include_usage": True})
            parts, finish, usage, first_role = [], None, None, None
            for ch in stream:
                if ch.usage:
                    usage = ch.usage
                for c in ch.choices:
                    if first_role is None:
                        first_role = c.delta.role
                    if c.delta.content:
                        parts.append(c.delta.content)
                    if c.finish_reason:
                        finish = c.finish_reason
            check(first_role == "assistant", "the first chunk carries the role")
            check("".join(parts) == whole.choices[0].message.content,
                  f"stream {''.join(parts)!r} != {whole.choices[0].message.content!r}")
            check(finish == whole.choices[0].finish_reason, "stream finish reason")
            check(usage is not None and usage.completion_tokens == whole.usage.completion_tokens,
                  f"stream usage {usage}")
    print("ok stream_equals_whole", flush=True)

    q = refs["base"][0]["query"]
    r = client.completions.create(model=base, prompt=q, max_tokens=n_tok, temperature=0)
    check(r.object == "text_completion", r.object)
    check(r.choices[0].text == answers[q], f"completion {r.choices[0].text!r} vs chat {answers[q]!r}")
    check(r.usage.prompt_tokens == refs["base"][0]["prompt_tokens"], "completion prompt tokens")
    parts = [c.choices[0].text for c in client.completions.create(
        model=base, prompt=q, max_tokens=n_tok, temperature=0, stream=True) if c.choices]
    check("".join(parts) == answers[q], "streamed completion")
    print("ok completion", flush=True)

    # Concurrent requests (the batch mixes base and adapter rows that join at different times).
    jobs = []
    for i, ref in enumerate(refs["base"] * 2):
        model = base if i % 2 == 0 else adapter
        jobs.append((model, ref["query"], n_tok - (i % 3) * 4))
    with cf.ThreadPoolExecutor(len(jobs)) as pool:
        outs = list(pool.map(
            lambda j: chat(client, j[0], j[1], max_tokens=j[2]).choices[0].message.content, jobs))
    for (model, q, m), got in zip(jobs, outs):
        check(agree_up_to_near_tie(client, model, q, m, got),
              f"batched answer of {model} to {q!r} differs from its answer alone: {got!r}")
    print("ok concurrent_equals_alone", flush=True)

    # Stop strings: cut before the first occurrence, finish_reason stop.
    long = max(answers.values(), key=len)
    q = next(k for k, v in answers.items() if v == long)
    clean = [i for i in range(2, len(long) - 2) if "\ufffd" not in long[i:i + 2]]
    check(clean, f"no usable stop string in {long!r}")
    stop = long[clean[0]:clean[0] + 2]
    r = chat(client, base, q, max_tokens=n_tok, stop=[stop])
    check(r.choices[0].message.content == long[:long.find(stop)],
          f"stop {stop!r}: {r.choices[0].message.content!r}")
    check(r.choices[0].finish_reason == "stop", r.choices[0].finish_reason)
    parts = [c.choices[0].delta.content or "" for c in chat(
        client, base, q, max_tokens=n_tok, stop=stop, stream=True) if c.choices]
    check("".join(parts) == long[:long.find(stop)], f"streamed stop: {''.join(parts)!r}")
    print("ok stop", flush=True)

    # Sampling: a seed repeats; n choices are reported separately; max_tokens bounds them.
    kw = dict(temperature=1.0, top_p=0.9, seed=1234, n=3, max_tokens=8)
    r1 = chat(client, base, q, **kw)
    r2 = chat(client, base, q, **kw)
    t1 = [c.message.content for c in r1.choices]
    check(len(t1) == 3 and [c.index for c in r1.choices] == [0, 1, 2], f"n=3: {r1.choices}")
    check(t1 == [c.message.content for c in r2.choices], "the same seed repeats")
    check(len(set(t1)) > 1, f"the choices of n=3 differ: {t1}")
    check(all(c.finish_reason in ("stop", "length") for c in r1.choices), "finish")
    check(r1.usage.completion_tokens <= 24, f"usage counts every choice: {r1.usage}")
    print("ok seed_n", flush=True)

    r = chat(client, base, q, max_tokens=6, logprobs=True, top_logprobs=3)
    lps = r.choices[0].logprobs.content
    check(len(lps) >= 1 and "".join(t.token for t in lps) == r.choices[0].message.content,
          f"logprob tokens spell the answer: {lps}")
    for t in lps:
        check(len(t.top_logprobs) == 3, "three alternatives")
        check(t.logprob <= 0 and t.logprob == t.top_logprobs[0].logprob, "greedy takes the top")
        check(sum(2.718281828459045 ** x.logprob for x in t.top_logprobs) <= 1 + 1e-6, "probs")
        check(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob,
              "sorted")
    print("ok logprobs", flush=True)

    t = refs["tools"]
    r = client.chat.completions.create(model=base, messages=t["messages"], tools=t["tools"],
                                       max_tokens=n_tok, temperature=0)
    check(r.usage.prompt_tokens == t["prompt_tokens"],
          f"tools rendered: {r.usage.prompt_tokens} prompt tokens, swift infer {t['prompt_tokens']}")
    check(r.choices[0].message.content == t["response"], "answer with tools")
    print("ok tools", flush=True)

    # Errors: each a 4xx in OpenAI's shape.
    status, body = raw(base_url, "/chat/completions", "{not json", a.api_key)
    check(status == 400, f"bad JSON: {status}")
    openai_error_shape(body, "bad JSON")
    status, body = raw(base_url, "/chat/completions", json.dumps({"model": base}), a.api_key)
    check(status == 400 and body["error"]["param"] == "messages", f"missing messages: {status} {body}")
    openai_error_shape(body, "missing messages")
    status, body = raw(base_url, "/chat/completions",
                       json.dumps({"model": base, "messages": "hi"}), a.api_key)
    check(status == 400, f"messages of the wrong type: {status}")
    # Messages are checked field by field; each refusal names the field as `param`.
    user = {"role": "user", "content": "hi"}
    for messages, param in [
        ([user, {"role": "wizard", "content": "abracadabra"}], "messages[1].role"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([user, {"role": "assistant", "content": None}], "messages[1].content"),
        # Image parts are read before the model is asked whether it takes images, so a URL that
        # is not a data URL is refused naming the URL.
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
         "messages[0].content[0].image_url.url"),
        ([{"role": "system", "content": 7}, user], "messages[0].content"),
        ([user, {"role": "assistant", "content": "x"}, {"role": "tool", "content": "42"}],
         "messages[2].tool_call_id"),
    ]:
        try:
            client.chat.completions.create(model=base, messages=messages, max_tokens=1)
            check(False, f"{messages} accepted")
        except openai.BadRequestError as e:
            check(e.status_code == 400 and e.param == param and e.type == "invalid_request_error",
                  f"{messages}: {e.status_code} {e.body}")
            openai_error_shape(e.response.json(), param)
    status, body = raw(base_url, "/chat/completions",
                       json.dumps({"model": base, "messages": [user], "temperature": "hot"}),
                       a.api_key)
    check(status == 400 and body["error"]["param"] == "temperature", f"{status} {body}")
    # Every role OpenAI defines is accepted (developer as system, function as a tool reply).
    r = client.chat.completions.create(model=base, max_tokens=2, temperature=0, messages=[
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ], tools=t["tools"])
    check(r.choices[0].finish_reason in ("stop", "length", "tool_calls"), f"{r}")
    try:
        chat(client, "no-such-model", "hi")
        check(False, "unknown model accepted")
    except openai.NotFoundError as e:
        check(e.status_code == 404 and e.code == "model_not_found", f"{e}")
        openai_error_shape(e.response.json(), "unknown model")
    try:
        chat(client, base, "word " * 3000)
        check(False, "a prompt longer than the context accepted")
    except openai.BadRequestError as e:
        check(e.code == "context_length_exceeded", f"{e}")
        openai_error_shape(e.response.json(), "context")
    wrong = openai.OpenAI(base_url=base_url, api_key="wrong-key", max_retries=0)
    for call in (lambda: wrong.models.list(), lambda: chat(wrong, base, "hi")):
        try:
            call()
            check(False, "a wrong API key accepted")
        except openai.AuthenticationError as e:
            check(e.status_code == 401, f"{e}")
            openai_error_shape(e.response.json(), "api key")
    try:
        chat(client, base, "hi", temperature=5)
        check(False, "temperature 5 accepted")
    except openai.BadRequestError as e:
        check(e.body["param"] == "temperature", f"{e}")
    r = chat(client, base, refs["base"][0]["query"], max_tokens=n_tok)
    check(r.choices[0].message.content == refs["base"][0]["response"], "serving after errors")
    print("ok errors", flush=True)


def limits_scenario(a):
    client = openai.OpenAI(base_url=a.base_url, api_key="none", max_retries=0)
    model = client.models.list().data[0].id

    def long_stream(tokens):
        s = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], temperature=0,
            max_tokens=tokens, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True})
        it = iter(s)
        next(it)  # the role chunk comes at once, even while the request waits in the queue
        first = next(it)  # a token: the request is decoding
        return it, first

    it, _ = long_stream(60)  # A: holds the only batch row for 60 steps

    def short():
        t0 = time.monotonic()
        try:
            r = chat(client, model, "hello", max_tokens=2)
            return ("ok", r.choices[0].message.content, time.monotonic() - t0)
        except openai.APIStatusError as e:
            return (e.status_code, e.response.json(), time.monotonic() - t0)

    with cf.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: short(), range(2)))
    refused = [r for r in results if r[0] == 503]
    served = [r for r in results if r[0] == "ok"]
    check(len(refused) == 1 and len(served) == 1, f"one queued, one refused: {results}")
    openai_error_shape(refused[0][1], "queue full")
    check(refused[0][2] < served[0][2], f"the refusal came at once: {results}")
    rest = list(it)
    usage = [c.usage for c in rest if c.usage]
    check(usage and usage[0].completion_tokens == 60, f"A completed: {usage}")
    print("ok queue_full_503", flush=True)

    # A client that goes away frees its row: with the only row taken by an abandoned stream of
    # 200 steps (at least 6 s of step delay), a new request is still answered promptly.
    s = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=200, stream=True,
        extra_body={"ignore_eos": True})
    it = iter(s)
    next(it)
    next(it)  # decoding (past the role chunk)
    s.close()
    t0 = time.monotonic()
    r = chat(client, model, "hello", max_tokens=2)
    check(time.monotonic() - t0 < 4.0, f"abandoned stream still decoding: {time.monotonic() - t0}")
    print("ok disconnect_frees_the_row", flush=True)

    it, first = long_stream(25)
    os.kill(a.pid, signal.SIGINT)
    rest = list(it)
    usage = [c.usage for c in rest if c.usage]
    check(usage and usage[0].completion_tokens == 25, f"in-flight request drained: {usage}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(a.base_url.removesuffix("/v1") + "/health", timeout=2)
            time.sleep(0.1)
        except (urllib.error.URLError, ConnectionError, OSError):
            break
    else:
        check(False, "the server still answers after Ctrl-C")
    print("ok ctrl_c_drains", flush=True)


def tool_stream_scenario(a):
    """Streamed and non-streamed answers to `--query` with a `get_weather` tool offered, `--n`
    choices at temperature 0: every choice's non-streamed answer is one call of get_weather for
    Paris (after the content `--content`), and its streamed deltas assemble into the same call."""
    client = openai.OpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0)
    model = a.model or client.models.list().data[0].id
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}]
    kw = dict(model=model, messages=[{"role": "user", "content": a.query}], tools=tools,
              temperature=0, max_tokens=200, n=a.n)
    whole = client.chat.completions.create(**kw)
    check(len(whole.choices) == a.n, f"non-streamed: {len(whole.choices)} choices, not {a.n}")
    for c in whole.choices:
        check(c.finish_reason == "tool_calls", f"non-streamed: {whole}")
        check(len(c.message.tool_calls) == 1, f"non-streamed calls: {c.message.tool_calls}")
        want = c.message.tool_calls[0]
        check(want.function.name == "get_weather" and json.loads(want.function.arguments) ==
              {"city": "Paris"}, f"non-streamed call: {want}")
        check((c.message.content or "") == a.content,
              f"non-streamed content {c.message.content!r}, not {a.content!r}")
    # Streamed: assemble each choice's deltas as OpenAI's documentation does.
    got = {i: {"calls": {}, "content": "", "finish": None} for i in range(a.n)}
    usage = None
    for chunk in client.chat.completions.create(
            stream=True, stream_options={"include_usage": True}, **kw):
        usage = chunk.usage or usage
        for ch in chunk.choices:
            g = got[ch.index]
            d = ch.delta
            g["content"] += d.content or ""
            for tc in d.tool_calls or []:
                slot = g["calls"].setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                if tc.function:
                    slot["name"] += tc.function.name or ""
                    slot["arguments"] += tc.function.arguments or ""
            if ch.finish_reason:
                check(g["finish"] is None, f"choice {ch.index} finished twice")
                g["finish"] = ch.finish_reason
    # The call spans many tokens, so many deltas the server held back and parsed whole.
    check(usage and usage.completion_tokens >= 20 * a.n, f"streamed usage: {usage}")
    ids = set()
    for i, c in enumerate(whole.choices):
        g, want = got[i], c.message.tool_calls[0]
        check(g["finish"] == "tool_calls", f"choice {i}: streamed finish reason {g['finish']}")
        check(list(g["calls"]) == [0], f"choice {i}: streamed calls {g['calls']}")
        call = g["calls"][0]
        check(call["name"] == want.function.name and
              call["arguments"] == want.function.arguments,
              f"choice {i}: streamed call {call} != {want}")
        check(call["id"] and call["id"].startswith("call_"), f"streamed call id: {call}")
        ids.add(call["id"])
        check("<tool_call>" not in g["content"], f"the call leaked into the content: {g}")
        check(g["content"].strip() == (c.message.content or "").strip(),
              f"choice {i}: streamed content {g['content']!r} != {c.message.content!r}")
    check(len(ids) == a.n, f"each choice's call has its own id: {ids}")
    print("ok tool_stream", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["main", "limits", "tool-stream"])
    p.add_argument("--base-url", required=True)
    p.add_argument("--api-key", default="none")
    p.add_argument("--refs")
    p.add_argument("--pid", type=int)
    # tool-stream: the model to ask (default: the first listed), the user's turn, the number of
    # choices and the content expected before the call.
    p.add_argument("--model")
    p.add_argument("--query")
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--content", default="")
    a = p.parse_args()
    if a.scenario == "main":
        with open(a.refs) as f:
            main_scenario(a, json.load(f))
    elif a.scenario == "tool-stream":
        tool_stream_scenario(a)
    else:
        limits_scenario(a)
