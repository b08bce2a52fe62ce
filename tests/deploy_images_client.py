"""Asks a running `swift deploy` of a vision-language model about an image with the official
`openai` client (tests/models_vision.rs): the image as a data URL in an `image_url` part. Prints
one JSON line: the answer's text and token usage. Also checks that a remote image URL is refused
with a 400 JSON error naming the part's `url`, and that the server still answers afterwards.

    python deploy_images_client.py --base-url URL --model NAME --image FILE --question TEXT --max-tokens N
"""

import argparse
import base64
import json

import openai


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--question", required=True)
    ap.add_argument("--max-tokens", type=int, required=True)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="none", max_retries=0)
    with open(args.image, "rb") as f:
        url = "data:image/jpeg;base64," + base64.b64encode(f.read()).decode()

    def ask(image_url):
        return client.chat.completions.create(
            model=args.model,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image_url}},
                        {"type": "text", "text": args.question},
                    ],
                }
            ],
            temperature=0,
            max_tokens=args.max_tokens,
        )

    try:
        ask("https://example.com/cat.jpg")
        raise AssertionError("a remote image URL was accepted")
    except openai.BadRequestError as e:
        err = e.body if isinstance(e.body, dict) else {}
        assert err.get("param") == "messages[0].content[0].image_url.url", err
        assert "data URL" in err.get("message", ""), err
    r = ask(url)
    print(json.dumps({"text": r.choices[0].message.content, "prompt_tokens": r.usage.prompt_tokens}))


if __name__ == "__main__":
    main()
