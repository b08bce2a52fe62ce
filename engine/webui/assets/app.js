// swift web-ui: the page's behaviour. The server builds every argument list (and refuses what
// it must); this file collects the forms' fields, shows the command the server would launch,
// launches, polls the runs, draws their charts with uPlot (vendored by `make setup`) and streams
// the chat.
"use strict";
const $ = (s) => document.querySelector(s);
const $$ = (s) => Array.from(document.querySelectorAll(s));

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const r = await fetch(path, opts);
  const j = await r.json().catch(() => ({ error: r.status + " " + r.statusText }));
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}

// ---- tabs
function showTab(name) {
  $$("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  $$(".tab").forEach((t) => (t.hidden = t.id !== "tab-" + name));
}
$$("nav button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));

// ---- forms: {command, flags} from the visible fields that are set
function collect(form) {
  const flags = {};
  let command = form.dataset.command;
  form.querySelectorAll("[data-flag]").forEach((el) => {
    if (el.closest("[hidden]")) return;
    const v = el.value.trim();
    if (v !== "") flags[el.dataset.flag] = v;
  });
  if (form.id === "train-form") {
    const task = $("#task").value;
    if (task.startsWith("rlhf:")) {
      command = "rlhf";
      flags.rlhf_type = task.slice(5);
    } else {
      command = task;
    }
  }
  if (form.id === "export-form") {
    const a = $("#export-action").value;
    if (a === "merge") flags.merge_lora = true;
    if (a === "gguf") flags.to_gguf = true;
    if (a === "ollama") flags.to_ollama = true;
  }
  return { command, flags };
}

function syncVisibility() {
  const tuner = $("#tuner").value;
  $$("[data-tuner]").forEach((f) => (f.hidden = f.dataset.tuner !== tuner));
  const opt = $("#optimizer").value;
  $$("[data-optimizer]").forEach((f) => (f.hidden = f.dataset.optimizer !== opt));
  const rlhf = $("#task").value.startsWith("rlhf:");
  $$(".rlhf-only").forEach((e) => (e.hidden = !rlhf));
  const a = $("#export-action").value;
  $$(".for-gguf, .for-quantize, .for-ollama").forEach((e) => (e.hidden = !e.classList.contains("for-" + a)));
}

const timers = {};
async function preview(form) {
  const id = form.id.replace("-form", "");
  try {
    const r = await api("/api/preview", collect(form));
    $("#" + id + "-cmd").textContent = r.line;
    $("#" + id + "-error").textContent = "";
  } catch (e) {
    $("#" + id + "-error").textContent = e.message;
  }
}
$$("form[data-command]").forEach((form) => {
  const again = () => {
    syncVisibility();
    clearTimeout(timers[form.id]);
    timers[form.id] = setTimeout(() => preview(form), 150);
  };
  form.addEventListener("input", again);
  form.addEventListener("change", again);
  preview(form);
});
syncVisibility();

$$("button.launch").forEach((b) =>
  b.addEventListener("click", async () => {
    const form = $("#" + b.dataset.form);
    const id = form.id.replace("-form", "");
    try {
      const r = await api("/api/jobs", collect(form));
      $("#" + id + "-error").textContent = "";
      select(r.id);
    } catch (e) {
      $("#" + id + "-error").textContent = e.message;
    }
  })
);
$$("button.copy").forEach((b) =>
  b.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("#" + b.dataset.copy).textContent))
);

// ---- runs
let selected = null;
const charts = {};
function select(id) {
  selected = id;
  Object.keys(charts).forEach((k) => { charts[k].destroy(); delete charts[k]; });
  $$(".chart").forEach((c) => (c.dataset.points = "0"));
  refresh();
}

async function refresh() {
  try {
    const jobs = await api("/api/jobs");
    const body = $("#run-list tbody");
    body.innerHTML = "";
    for (const j of jobs) {
      const tr = document.createElement("tr");
      tr.dataset.id = j.id;
      tr.className = "state-" + j.state + (j.id === selected ? " selected" : "");
      tr.innerHTML = "<td></td><td></td><td></td>";
      tr.children[0].textContent = j.command;
      tr.children[1].textContent = j.id;
      tr.children[2].textContent = j.state;
      tr.addEventListener("click", () => select(j.id));
      body.appendChild(tr);
    }
    if (selected) showRun(await api("/api/jobs/" + selected));
  } catch (e) {
    $("#run-error").textContent = e.message;
  }
}

function showRun(d) {
  $("#run-none").hidden = true;
  $("#run-detail").hidden = false;
  $("#run-title").textContent = d.id;
  $("#run-state").textContent = d.state;
  $("#run-stop").hidden = d.state !== "running";
  $("#run-error").textContent = d.error || "";
  $("#run-line").textContent = d.line;
  $("#run-log").textContent = d.log;
  drawCharts(d.points || []);
  const ul = $("#run-checkpoints");
  ul.innerHTML = "";
  for (const c of d.checkpoints || []) {
    const li = document.createElement("li");
    li.textContent = c + " ";
    const b = document.createElement("button");
    b.type = "button";
    b.className = "chat-with";
    b.textContent = ul.dataset.chatLabel;
    b.addEventListener("click", () => {
      $("#chat-checkpoint").value = c;
      $("#chat-model").value = "";
      showTab("chat");
      loadChat();
    });
    li.appendChild(b);
    ul.appendChild(li);
  }
  const report = $("#run-report");
  report.innerHTML = "";
  if (d.report) {
    for (const row of reportRows(d.report)) {
      const tr = document.createElement("tr");
      for (const cell of row) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.appendChild(td);
      }
      report.appendChild(tr);
    }
  }
  const outs = $("#run-outputs");
  outs.innerHTML = "";
  for (const o of d.outputs || []) {
    const li = document.createElement("li");
    li.textContent = o;
    outs.appendChild(li);
  }
}

// report.json → rows of [benchmark, metric, value]
function reportRows(report) {
  const rows = [["benchmark", "metric", "value"]];
  for (const b of report.benchmarks || []) {
    for (const [k, v] of Object.entries(b.metrics || {})) {
      rows.push([b.name, k, typeof v === "number" ? v.toFixed(4) : JSON.stringify(v)]);
    }
    rows.push([b.name, "rows", String(b.rows)]);
  }
  return rows;
}

const SERIES = {
  "chart-loss": ["loss", "eval_loss"],
  "chart-lr": ["learning_rate"],
  "chart-acc": ["token_acc", "eval_token_acc"],
};
const COLORS = ["#c0392b", "#2471a3", "#27ae60"];
function drawCharts(points) {
  for (const [id, keys] of Object.entries(SERIES)) {
    const el = document.getElementById(id);
    const rows = points.filter((p) => typeof p.step === "number" && keys.some((k) => typeof p[k] === "number"));
    el.dataset.points = String(rows.length);
    if (!window.uPlot || rows.length === 0) continue;
    const present = keys.filter((k) => rows.some((p) => typeof p[k] === "number"));
    const data = [rows.map((p) => p.step)].concat(present.map((k) => rows.map((p) => (typeof p[k] === "number" ? p[k] : null))));
    const sig = present.join(",");
    if (charts[id] && charts[id]._sig === sig) {
      charts[id].setData(data);
      continue;
    }
    if (charts[id]) charts[id].destroy();
    const opts = {
      width: 360,
      height: 170,
      scales: { x: { time: false } },
      series: [{ label: "step" }].concat(present.map((k, i) => ({ label: k, stroke: COLORS[i % 3], spanGaps: true, points: { show: true } }))),
    };
    charts[id] = new uPlot(opts, data, el);
    charts[id]._sig = sig;
  }
}

$("#run-stop").addEventListener("click", async () => {
  try {
    await api("/api/jobs/" + selected + "/stop", {});
  } catch (e) {
    $("#run-error").textContent = e.message;
  }
  refresh();
});
setInterval(refresh, 1000);
refresh();

// ---- chat
let history = [];
async function loadChat() {
  $("#chat-status").textContent = "loading…";
  $("#chat-error").textContent = "";
  try {
    const r = await api("/api/chat/load", { model: $("#chat-model").value, checkpoint: $("#chat-checkpoint").value });
    $("#chat-status").textContent = "ready: " + r.model;
  } catch (e) {
    $("#chat-status").textContent = "";
    $("#chat-error").textContent = e.message;
  }
}
$("#chat-load").addEventListener("click", loadChat);
api("/api/chat/status").then((v) => {
  if (v) $("#chat-status").textContent = "ready: " + (v.checkpoint || v.model);
}).catch(() => {});

function renderHistory() {
  const box = $("#chat-history");
  box.innerHTML = "";
  for (const m of history) {
    const div = document.createElement("div");
    div.className = "msg " + m.role + (m.done ? " done" : "");
    div.textContent = m.content;
    box.appendChild(div);
  }
  return box;
}

function num(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

$("#chat-send").addEventListener("click", async () => {
  const q = $("#chat-input").value.trim();
  if (!q) return;
  $("#chat-input").value = "";
  $("#chat-error").textContent = "";
  history.push({ role: "user", content: q });
  const answer = { role: "assistant", content: "" };
  history.push(answer);
  renderHistory();
  const last = $("#chat-history").lastChild;
  last.classList.add("streaming");
  const body = {
    messages: history.slice(0, -1),
    system: $("#chat-system").value,
    temperature: num("#chat-temperature"),
    top_p: num("#chat-top_p"),
    max_tokens: num("#chat-max_tokens"),
  };
  try {
    const r = await fetch("/api/chat", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!r.ok) {
      const j = await r.json().catch(() => ({}));
      const msg = (j.error && (j.error.message || j.error)) || r.statusText;
      throw new Error(typeof msg === "string" ? msg : JSON.stringify(msg));
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    let chunks = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const ev = JSON.parse(data);
        if (ev.error) throw new Error(ev.error.message || JSON.stringify(ev.error));
        const delta = ev.choices && ev.choices[0] && ev.choices[0].delta;
        if (delta && delta.content) {
          answer.content += delta.content;
          last.textContent = answer.content;
          chunks += 1;
          last.dataset.chunks = String(chunks);
        }
      }
    }
  } catch (e) {
    // The question goes back into the box, the turn out of the history.
    $("#chat-error").textContent = e.message;
    history.splice(-2, 2);
    renderHistory();
    $("#chat-input").value = q;
    return;
  }
  answer.done = true;
  last.classList.remove("streaming");
  last.classList.add("done");
});
$("#chat-clear").addEventListener("click", () => {
  history = [];
  renderHistory();
});
