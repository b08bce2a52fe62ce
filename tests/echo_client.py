"""The official `openai` client's legacy completions with `echo=True, logprobs=1, max_tokens=0`
against a server (tests/eval_remote.rs): prints, per text, the prompt's tokens, token
log-probabilities, text offsets and the top alternative at each position, as JSON.

Also checks that `echo` with `max_tokens` other than 0 is refused with a 400 naming
`max_tokens`. The API key comes from OPENAI_API_KEY.

Usage: python tests/echo_client.py BASE_URL TEXTS.json
"""

import json
import sys

import openai
from openai import OpenAI


def main():
    base_url, texts = sys.argv[1], json.load(open(sys.argv[2]))
    client = OpenAI(base_url=base_url)
    out = []
    for text in texts:
        r = client.completions.create(
            model=client.models.list().data[0].id,
            prompt=text,
            echo=True,
            logprobs=1,
            max_tokens=0,
        )
        c = r.choices[0]
        assert c.text == text, (c.text, text)
        lp = c.logprobs
        out.append({
            "tokens": lp.tokens,
            "token_logprobs": lp.token_logprobs,
            "text_offset": lp.text_offset,
            "top_logprobs": lp.top_logprobs,
            "prompt_tokens": r.usage.prompt_tokens,
        })
    try:
        client.completions.create(
            model=client.models.list().data[0].id,
            prompt="hi",
            echo=True,
            logprobs=1,
            max_tokens=4,
        )
        raise SystemExit("echo with max_tokens 4 was accepted")
    except openai.BadRequestError as e:
        assert e.body["param"] == "max_tokens", e.body
    print(json.dumps(out))


if __name__ == "__main__":
    main()
