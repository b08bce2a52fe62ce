"""Records reference token ids of the real tokenizers' own chat templates, rendered by
transformers (Jinja2), for the Must-show rows of issue 3. The Rust tests
(engine/template/tests/real_tokenizers.rs) compare swift-rs's templates against this file, which
also checks that minijinja renders the templates exactly as Jinja2 does.

Run with the reference venv that `make setup` creates:

    ~/.cache/swift-rs/venv/bin/python tests/encode_reference.py

It writes tests/fixtures/encode_reference.json: for each (tokenizer, dataset, mode) a list with
one entry per row, the first 16 hex digits of sha256(",".join(ids)), and the total token count.
Rows are converted exactly as the Rust tests convert them (alpaca: instruction + "\n" + input;
sharegpt function_call -> assistant tool_calls, observation -> tool; dpo: conversations + chosen).
"""

import hashlib
import json
import os
import sys

from transformers import AutoTokenizer

CACHE = os.environ.get("SWIFT_RS_CACHE", os.path.expanduser("~/.cache/swift-rs"))
DATA = os.path.join(CACHE, "assets/llamafactory/data")


def alpaca(path):
    rows = []
    for r in json.load(open(path)):
        q = r["instruction"] + ("\n" + r["input"] if r.get("input") else "")
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": r["output"]}]})
    return rows


def sharegpt_message(m):
    role = {"human": "user", "gpt": "assistant", "system": "system", "observation": "tool"}.get(m["from"])
    if m["from"] == "function_call":
        call = json.loads(m["value"])
        return {"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]}
    return {"role": role, "content": m["value"]}


def sharegpt(path):
    rows = []
    for r in json.load(open(path)):
        row = {"messages": [sharegpt_message(m) for m in r["conversations"]]}
        if r.get("tools"):
            row["tools"] = json.loads(r["tools"])
        rows.append(row)
    return rows


def dpo_multi(path):
    return [{"messages": [sharegpt_message(m) for m in r["conversations"]] + [sharegpt_message(r["chosen"])]}
            for r in json.load(open(path)) if len(r["conversations"]) > 1]


def react_text(row):
    """Llama-3.0's template has no tools: write them as swift-rs's react format does."""
    # Mirrors swift_template::ToolFormat::React.
    msgs = list(row["messages"])
    system = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "system" else None
    tools = row.get("tools")
    if tools:
        out = (system + "\n\n") if system else ""
        out += "Answer the following questions as best you can. You have access to the following tools:\n\n"
        names = []
        for t in tools:
            f = t.get("function", t)
            names.append(f.get("name", ""))
            params = json.dumps(f["parameters"], ensure_ascii=False) if "parameters" in f else "{}"
            out += (f"{f.get('name', '')}: Call this tool to interact with the {f.get('name', '')} API. What is the "
                    f"{f.get('name', '')} API useful for? {f.get('description', '')} Parameters: {params} Format the "
                    "arguments as a JSON object.\n\n")
        out += ("Use the following format:\n\nQuestion: the input question you must answer\nThought: you should "
                "always think about what to do\nAction: the action to take, should be one of [" + ",".join(names) +
                "]\nAction Input: the input to the action\nObservation: the result of the action\n... (this "
                "Thought/Action/Action Input/Observation can be repeated zero or more times)\nThought: I now know the "
                "final answer\nFinal Answer: the final answer to the original input question\n\nBegin!")
        system = out
    res = [{"role": "system", "content": system}] if system is not None else []
    for m in msgs:
        content = m["content"]
        if m["role"] == "assistant":
            for k, c in enumerate(m.get("tool_calls") or []):
                a = c["function"]["arguments"]
                a = a if isinstance(a, str) else json.dumps(a, ensure_ascii=False)
                content += ("\n" if k > 0 or content else "") + f"Action: {c['function']['name']}\nAction Input: {a}"
        elif m["role"] == "tool":
            content = "Observation: " + content
        res.append({"role": m["role"], "content": content})
    return res


def digest(ids):
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]


def main():
    sets = {
        "alpaca-en-demo": alpaca(os.path.join(DATA, "alpaca_en_demo.json")),
        "glaive-toolcall-en-demo": sharegpt(os.path.join(DATA, "glaive_toolcall_en_demo.json")),
        "dpo-en-demo-multi": dpo_multi(os.path.join(DATA, "dpo_en_demo.json")),
    }
    out = {}
    for tok_name in ["qwen3", "llama3"]:
        tok = AutoTokenizer.from_pretrained(os.path.join(CACHE, "assets/tokenizers", tok_name))
        for name, rows in sets.items():
            hashes, total = [], 0
            for row in rows:
                if tok_name == "qwen3":  # whole conversations
                    ids = tok.apply_chat_template(row["messages"], tools=row.get("tools"), tokenize=True,
                                                  add_generation_prompt=False)
                else:  # generation prompts: all but the final answer
                    ids = tok.apply_chat_template(react_text(row)[:-1], tokenize=True, add_generation_prompt=True)
                if isinstance(ids, dict):
                    ids = ids["input_ids"]
                hashes.append(digest(ids))
                total += len(ids)
            out[f"{tok_name}/{name}"] = {"rows": len(rows), "tokens": total, "sha": hashes}
            print(tok_name, name, len(rows), "rows", total, "tokens", file=sys.stderr)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "encode_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
