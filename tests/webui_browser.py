"""The web UI in headless Chromium (Debian's, --no-sandbox: the tests run as root), driven by
Playwright (the reference virtualenv; its own browser download is never used). Run by
tests/webui.rs against a `swift web-ui` it started; prints one JSON report on its last line, which
the Rust test checks, and saves a screenshot of each tab in --shots.

The scenario: the error paths first (a dataset that does not exist, a model outside the allowed
roots: refused before launch, shown under the form); a 4-step LoRA SFT of the tiny llama through
the train form, the equivalent command, the loss chart gaining points, the run finishing; a run
that fails (a malformed dataset line: the error shows in the page); the chat on the new
checkpoint (a streamed answer, a second turn, clear); an evaluation's table; a merge's result.
"""

import argparse
import json
import sys
import time

from playwright.sync_api import expect, sync_playwright

p = argparse.ArgumentParser()
for a in ["url", "chromium", "model", "dataset", "bad-dataset", "quiz", "missing", "outside", "shots"]:
    p.add_argument("--" + a, required=True)
args = p.parse_args()
report = {}
T = 120_000  # ms: a generous bound for a run on a loaded machine


def run_state(page):
    return page.locator("#run-state").inner_text()


def wait_state(page, states, timeout_s=120):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        s = run_state(page)
        if s in states:
            return s
        time.sleep(0.1)
    raise AssertionError(f"the run never reached {states}: {run_state(page)}; log:\n"
                         + page.locator("#run-log").inner_text())


with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(args.url)
    expect(page.locator("#tab-train")).to_be_visible()
    if page.locator("#charts-off").count():
        raise AssertionError(page.locator("#charts-off").inner_text())

    # --- error paths before launch
    page.fill("#train-model", args.model)
    page.fill("#train-dataset", args.missing)
    page.click("#train-launch")
    expect(page.locator("#train-error")).to_contain_text("does not exist", timeout=T)
    report["missing_error"] = page.locator("#train-error").inner_text()
    page.fill("#train-model", args.outside)
    page.fill("#train-dataset", args.dataset)
    page.click("#train-launch")
    expect(page.locator("#train-error")).to_contain_text("outside the allowed roots", timeout=T)
    report["outside_error"] = page.locator("#train-error").inner_text()
    assert page.locator("#run-list tr").count() == 0, "nothing was launched"

    # --- a 4-step LoRA SFT
    page.fill("#train-model", args.model)
    page.select_option("#tuner", "lora")
    page.locator('fieldset[data-tuner="lora"] [data-flag="lora_rank"]').fill("4")
    page.fill("#train-max_steps", "4")
    page.fill("#train-logging_steps", "1")
    page.fill("#train-learning_rate", "1e-3")
    expect(page.locator("#train-cmd")).to_contain_text("--max_steps 4", timeout=T)
    expect(page.locator("#train-error")).to_have_text("")
    report["command"] = page.locator("#train-cmd").inner_text()
    page.click("#train-launch")
    expect(page.locator("#run-detail")).to_be_visible(timeout=T)
    report["train_id"] = page.locator("#run-title").inner_text()
    seen = [int(page.locator("#chart-loss").get_attribute("data-points"))]
    deadline = time.time() + 180
    while time.time() < deadline:
        n = int(page.locator("#chart-loss").get_attribute("data-points"))
        if n != seen[-1]:
            seen.append(n)
        if run_state(page) in ("finished", "failed") and n == seen[-1]:
            page.wait_for_timeout(1500)  # one more poll after the end
            n = int(page.locator("#chart-loss").get_attribute("data-points"))
            if n != seen[-1]:
                seen.append(n)
            break
        time.sleep(0.05)
    assert run_state(page) == "finished", page.locator("#run-log").inner_text()
    report["chart_points_seen"] = seen
    expect(page.locator("#chart-loss canvas").first).to_be_visible()
    expect(page.locator("#run-checkpoints li")).to_have_count(1)
    page.screenshot(path=f"{args.shots}/train.png", full_page=True)

    # --- a run that fails: the error shows, the page goes on working
    page.fill("#train-dataset", args.bad_dataset)
    page.click("#train-launch")
    expect(page.locator("#run-title")).not_to_have_text(report["train_id"], timeout=T)
    wait_state(page, ("failed",))
    expect(page.locator("#run-error")).to_contain_text("error", timeout=T)
    report["failed_error"] = page.locator("#run-error").inner_text()

    # --- chat with the new checkpoint
    page.click(f'#run-list tr[data-id="{report["train_id"]}"]')
    expect(page.locator("#run-title")).to_have_text(report["train_id"], timeout=T)
    page.locator("#run-checkpoints button.chat-with").first.click()
    expect(page.locator("#tab-chat")).to_be_visible()
    expect(page.locator("#chat-status")).to_contain_text("ready", timeout=T)
    # Two turns within the tiny model's 256 positions (its tokenizer is nearly one token per
    # character): short answers, the template's own system prompt.
    page.fill("#chat-max_tokens", "4")
    page.fill("#chat-input", "hi")
    page.click("#chat-send")
    answer = page.locator(".msg.assistant.done").first
    expect(answer).to_be_visible(timeout=T)
    expect(page.locator("#chat-error")).to_have_text("")
    report["answer"] = answer.inner_text()
    report["streamed_chunks"] = int(answer.get_attribute("data-chunks") or 0)
    page.fill("#chat-input", "what is two plus two")
    page.click("#chat-send")
    page.wait_for_function(
        "document.querySelectorAll('.msg.assistant.done').length == 2"
        " || document.querySelector('#chat-error').textContent != ''", timeout=T)
    assert page.locator("#chat-error").inner_text() == "", page.locator("#chat-error").inner_text()
    expect(page.locator(".msg")).to_have_count(4)
    expect(page.locator("#chat-error")).to_have_text("")
    # A refusal of the model server (a sampling value out of its range) shows; the turn is
    # taken back and the chat goes on.
    page.fill("#chat-temperature", "-1")
    page.fill("#chat-input", "and three plus three")
    page.click("#chat-send")
    expect(page.locator("#chat-error")).to_contain_text("temperature", timeout=T)
    report["chat_error"] = page.locator("#chat-error").inner_text()
    expect(page.locator(".msg")).to_have_count(4)
    expect(page.locator("#chat-input")).to_have_value("and three plus three")
    page.fill("#chat-temperature", "")
    page.screenshot(path=f"{args.shots}/chat.png", full_page=True)
    page.locator("#chat-clear").dispatch_event("click")
    expect(page.locator(".msg")).to_have_count(0, timeout=T)

    # --- evaluate the checkpoint on a small multiple-choice file
    page.click('nav button[data-tab="eval"]')
    ckpt = page.locator("#run-checkpoints li").first.inner_text().split(" ")[0]
    page.fill("#eval-adapters", ckpt)
    page.fill("#eval-dataset", args.quiz)
    expect(page.locator("#eval-cmd")).to_contain_text("swift eval", timeout=T)
    page.click("#eval-launch")
    expect(page.locator("#run-title")).to_contain_text("eval-", timeout=T)
    wait_state(page, ("finished",))
    expect(page.locator("#run-report tr").first).to_be_visible(timeout=T)
    report["eval_table"] = page.locator("#run-report").inner_text()
    page.screenshot(path=f"{args.shots}/eval.png", full_page=True)

    # --- merge it into the model
    page.click('nav button[data-tab="export"]')
    page.fill("#export-adapters", ckpt)
    page.select_option("#export-action", "merge")
    expect(page.locator("#export-cmd")).to_contain_text("--merge_lora true", timeout=T)
    page.click("#export-launch")
    expect(page.locator("#run-title")).to_contain_text("export-", timeout=T)
    wait_state(page, ("finished",))
    expect(page.locator("#run-outputs li").first).to_be_visible(timeout=T)
    report["export_outputs"] = page.locator("#run-outputs").inner_text()
    page.screenshot(path=f"{args.shots}/export.png", full_page=True)
    browser.close()

print(json.dumps(report))
sys.stdout.flush()
