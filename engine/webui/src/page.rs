//! The routes and the page: one server-rendered HTML page with four tabs (train, chat, eval,
//! export) and the runs beside them, its fields built from the registries' rows (templates,
//! datasets with their descriptions, tuners and optimizers with the options their records
//! describe, preference losses, benchmarks, quantizers), so a plugin's entries appear with no UI
//! code; `assets/app.js` previews and launches runs, polls them, draws the charts (uPlot) and
//! streams the chat. Every request passes [`guard`] first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::args::{self, RunRequest};
use crate::chat::refusal;
use crate::safety::{Verdict, KEY_COOKIE};
use crate::{AppState, WebUiError};

const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

type S = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript", APP_JS.as_bytes().to_vec()) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css", APP_CSS.as_bytes().to_vec()) }),
        )
        .route("/assets/uPlot.js", get(uplot_js))
        .route("/assets/uPlot.css", get(uplot_css))
        .route("/api/catalogue", get(catalogue))
        .route("/api/preview", post(preview))
        .route("/api/jobs", get(list_jobs).post(launch))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/stop", post(stop_job))
        .route("/api/chat/load", post(chat_load))
        .route("/api/chat/unload", post(chat_unload))
        .route("/api/chat/status", get(chat_status))
        .route("/api/chat", post(chat_ask))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The safety checks of every request ([`crate::safety::Guard`]): 403 for a foreign `Host` or
/// `Origin`, 401 without the key. `/?api_key=KEY` stores the key in a cookie and reloads `/`.
async fn guard(State(state): S, req: Request, next: Next) -> Response {
    let h = req.headers();
    let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    let bearer = text(header::AUTHORIZATION).and_then(|a| a.strip_prefix("Bearer "));
    let cookie = text(header::COOKIE).and_then(|c| {
        c.split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| *k == KEY_COOKIE)
            .map(|(_, v)| v)
    });
    let query_key = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == "api_key")
            .map(|(_, v)| percent_decode(v))
    });
    let verdict = state.guard.check(
        text(header::HOST),
        text(header::ORIGIN),
        bearer,
        cookie,
        query_key.as_deref(),
    );
    match verdict {
        Verdict::Forbidden(why) => refusal(StatusCode::FORBIDDEN, &why),
        Verdict::Unauthorized => refusal(
            StatusCode::UNAUTHORIZED,
            "this web UI needs its API key: open /?api_key=KEY once, or send \
             Authorization: Bearer KEY",
        ),
        Verdict::Allow => match (query_key, state.guard.needs_key()) {
            (Some(k), true) if bearer.is_none() && cookie != Some(k.as_str()) => {
                Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(header::LOCATION, req.uri().path())
                    .header(
                        header::SET_COOKIE,
                        format!("{KEY_COOKIE}={k}; HttpOnly; SameSite=Strict; Path=/"),
                    )
                    .body(Body::empty())
                    .unwrap_or_default()
            }
            _ => next.run(req).await,
        },
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn asset(content_type: &'static str, bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

async fn uplot_js(State(s): S) -> Response {
    match &s.vendor.js {
        Some(b) => asset("text/javascript", b.clone()),
        None => refusal(
            StatusCode::NOT_FOUND,
            s.vendor.missing().unwrap_or("missing"),
        ),
    }
}

async fn uplot_css(State(s): S) -> Response {
    match &s.vendor.css {
        Some(b) => asset("text/css", b.clone()),
        None => refusal(
            StatusCode::NOT_FOUND,
            s.vendor.missing().unwrap_or("missing"),
        ),
    }
}

async fn catalogue(State(s): S) -> Json<Value> {
    Json(s.catalogue.clone())
}

fn bad(e: impl std::fmt::Display) -> Response {
    refusal(StatusCode::BAD_REQUEST, &e.to_string())
}

/// The argument list a form would launch, and its command line (or why it would be refused).
async fn preview(State(s): S, Json(req): Json<RunRequest>) -> Response {
    let job = s.jobs.dir().join("<new run>");
    let registered = args::registered_names(&s.catalogue);
    match args::build(&req, &job, &s.roots, &registered, &s.check_args) {
        Ok(a) => {
            let argv = s.jobs.full_argv(&a);
            Json(json!({"line": crate::jobs::command_line(&argv), "argv": argv})).into_response()
        }
        Err(e) => bad(e),
    }
}

async fn launch(State(s): S, Json(req): Json<RunRequest>) -> Response {
    let (id, dir) = match s.jobs.new_dir(&req.command) {
        Ok(x) => x,
        Err(e) => return bad(format!("{}: {e}", s.jobs.dir().display())),
    };
    let registered = args::registered_names(&s.catalogue);
    let built = args::build(&req, &dir, &s.roots, &registered, &s.check_args)
        .and_then(|a| s.jobs.spawn(&id, &dir, &req.command, s.jobs.full_argv(&a)));
    match built {
        Ok(()) => Json(json!({"id": id})).into_response(),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            bad(e)
        }
    }
}

async fn list_jobs(State(s): S) -> Json<Value> {
    Json(Value::Array(s.jobs.list()))
}

async fn job(State(s): S, UrlPath(id): UrlPath<String>) -> Response {
    match s.jobs.detail(&id) {
        Some(d) => Json(d).into_response(),
        None => refusal(StatusCode::NOT_FOUND, &format!("no run {id}")),
    }
}

async fn stop_job(State(s): S, UrlPath(id): UrlPath<String>) -> Response {
    match s.jobs.stop(&id) {
        Ok(()) => Json(json!({"stopping": id})).into_response(),
        Err(e) => bad(e),
    }
}

async fn chat_load(State(s): S, Json(req): Json<Value>) -> Response {
    let path = |k: &str| -> Result<Option<PathBuf>, String> {
        match req[k].as_str().map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => s
                .roots
                .existing(p)
                .map(Some)
                .map_err(|e| format!("{k}: {e}")),
            None => Ok(None),
        }
    };
    let (model, checkpoint) = match (path("model"), path("checkpoint")) {
        (Ok(m), Ok(c)) => (m, c),
        (Err(e), _) | (_, Err(e)) => return bad(e),
    };
    match s.chat.start(model, checkpoint).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => bad(e),
    }
}

async fn chat_status(State(s): S) -> Json<Value> {
    Json(s.chat.status().await)
}

async fn chat_unload(State(s): S) -> Json<Value> {
    s.chat.stop().await;
    Json(json!({"unloaded": true}))
}

async fn chat_ask(State(s): S, Json(req): Json<Value>) -> Response {
    match s.chat.ask(req).await {
        Ok(r) => r,
        Err(e) => bad(e),
    }
}

// ------------------------------------------------------------------------------------------
// The page.

/// The pages' language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    pub fn parse(s: &str) -> Result<Self, WebUiError> {
        match s {
            "en" => Ok(Lang::En),
            "zh" => Ok(Lang::Zh),
            other => Err(WebUiError::Startup(format!("--lang {other}: en or zh"))),
        }
    }
}

/// The labels, English and Chinese.
const LABELS: &[(&str, &str, &str)] = &[
    ("train", "Train", "训练"),
    ("chat", "Chat", "对话"),
    ("eval", "Evaluate", "评测"),
    ("export", "Export", "导出"),
    ("runs", "Runs", "运行记录"),
    ("task", "Task", "任务"),
    ("model", "Model (folder or .gguf)", "模型（目录或 .gguf）"),
    (
        "dataset",
        "Datasets (registered names or files)",
        "数据集（注册名或文件）",
    ),
    ("template", "Template", "对话模板"),
    ("tuner", "Tuner", "微调方式"),
    ("optimizer", "Optimizer", "优化器"),
    ("trainer", "Trainer", "训练参数"),
    ("command", "Equivalent command", "等价命令"),
    ("copy", "Copy", "复制"),
    ("launch", "Launch", "启动"),
    ("stop", "Stop", "停止"),
    ("default", "(default)", "（默认）"),
    ("checkpoint", "Checkpoint (adapters)", "检查点（适配器）"),
    ("system", "System prompt", "系统提示"),
    ("load", "Load", "加载"),
    ("send", "Send", "发送"),
    ("clear", "Clear", "清空"),
    (
        "benchmark",
        "Benchmarks (registered names or files)",
        "评测集（注册名或文件）",
    ),
    ("limit", "Rows per benchmark", "每个评测集的行数"),
    ("few_shot", "Few-shot examples", "少样本示例数"),
    ("action", "What to write", "导出内容"),
    ("merge", "Merge LoRA into the model", "合并 LoRA"),
    ("gguf", "GGUF file", "GGUF 文件"),
    ("quantize", "Quantize", "量化"),
    (
        "ollama",
        "GGUF + Ollama Modelfile",
        "GGUF + Ollama Modelfile",
    ),
    ("chat_with", "Chat with it", "与之对话"),
    ("log", "Log", "日志"),
    ("no_run", "Choose a run", "请选择一次运行"),
    ("options", "options", "选项"),
    ("loss_type", "Preference loss", "偏好损失"),
];

fn t(lang: Lang, key: &str) -> &'static str {
    LABELS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, en, zh)| if lang == Lang::Zh { *zh } else { *en })
        .unwrap_or("?")
}

/// HTML-escapes text and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The rows of one kind.
fn rows<'a>(catalogue: &'a Value, kind: &str) -> Vec<&'a Value> {
    catalogue
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["kind"] == kind)
        .collect()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// `<option>`s of a kind's names, each with its description as its label/title.
fn options(catalogue: &Value, kind: &str, selected: &str) -> String {
    rows(catalogue, kind)
        .iter()
        .map(|r| {
            let name = s(r, "name");
            format!(
                "<option value=\"{n}\" title=\"{d}\"{sel}>{n}</option>",
                n = esc(name),
                d = esc(s(r, "description")),
                sel = if name == selected { " selected" } else { "" }
            )
        })
        .collect()
}

/// A `<datalist>` of a kind's names with their descriptions.
fn datalist(id: &str, catalogue: &Value, kinds: &[&str], extra: &[String]) -> String {
    let mut items: String = kinds
        .iter()
        .flat_map(|k| rows(catalogue, k))
        .map(|r| {
            format!(
                "<option value=\"{}\" label=\"{}\"></option>",
                esc(s(r, "name")),
                esc(s(r, "description"))
            )
        })
        .collect();
    for e in extra {
        items.push_str(&format!("<option value=\"{}\"></option>", esc(e)));
    }
    format!("<datalist id=\"{id}\">{items}</datalist>")
}

/// One field per option a record describes (tuners' `schema`, optimizers' `options`), inside a
/// fieldset shown while that entry is chosen: `data-flag` is the option's flag.
fn option_fieldsets(lang: Lang, catalogue: &Value, kind: &str, attr: &str) -> String {
    let mut html = String::new();
    for r in rows(catalogue, kind) {
        let opts = r["options"].as_array().cloned().unwrap_or_default();
        if opts.is_empty() {
            continue;
        }
        html.push_str(&format!(
            "<fieldset class=\"opts\" {attr}=\"{n}\" hidden><legend>{n} {o}</legend>",
            n = esc(s(r, "name")),
            o = t(lang, "options")
        ));
        for o in &opts {
            let name = s(o, "name");
            let default = match &o["default"] {
                Value::String(v) => v.clone(),
                Value::Null => String::new(),
                v => v.to_string(),
            };
            let mut range = String::new();
            if let Some(min) = o["min"].as_f64() {
                range.push_str(&format!(" min=\"{min}\""));
            }
            if let Some(max) = o["max"].as_f64() {
                range.push_str(&format!(" max=\"{max}\""));
            }
            let input = match s(o, "type") {
                "bool" => format!(
                    "<select data-flag=\"{n}\"><option value=\"\">{d} {def}</option><option>true</option><option>false</option></select>",
                    n = esc(name),
                    d = t(lang, "default"),
                    def = esc(&default)
                ),
                "choice" => {
                    let choices: String = o["choices"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|c| format!("<option>{}</option>", esc(c)))
                        .collect();
                    format!(
                        "<select data-flag=\"{n}\"><option value=\"\">{d} {def}</option>{choices}</select>",
                        n = esc(name),
                        d = t(lang, "default"),
                        def = esc(&default)
                    )
                }
                "int" | "float" => format!(
                    "<input type=\"number\" step=\"any\" data-flag=\"{}\" placeholder=\"{}\"{range}>",
                    esc(name),
                    esc(&default)
                ),
                _ => format!(
                    "<input data-flag=\"{}\" placeholder=\"{}\">",
                    esc(name),
                    esc(&default)
                ),
            };
            html.push_str(&format!(
                "<label title=\"{h}\">{n}{input}<small>{h}</small></label>",
                n = esc(name),
                h = esc(s(o, "help"))
            ));
        }
        html.push_str("</fieldset>");
    }
    html
}

/// A labelled text or number field for a flag.
fn field(label: &str, id: &str, flag: &str, placeholder: &str, list: Option<&str>) -> String {
    format!(
        "<label>{label}<input id=\"{id}\" data-flag=\"{flag}\" placeholder=\"{p}\"{l}></label>",
        label = esc(label),
        p = esc(placeholder),
        l = list.map(|l| format!(" list=\"{l}\"")).unwrap_or_default()
    )
}

/// Model folders (a `config.json`) and `.gguf` files under the roots, a few levels deep, and the
/// checkpoints of the runs: suggestions for the model and checkpoint fields.
fn discovered(roots: &[PathBuf]) -> (Vec<String>, Vec<String>) {
    let (mut models, mut checkpoints) = (Vec::new(), Vec::new());
    fn walk(p: &Path, depth: u32, models: &mut Vec<String>, ckpts: &mut Vec<String>) {
        if models.len() + ckpts.len() > 400 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let is_ckpt = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("checkpoint-"));
                if is_ckpt && path.join("adapter_config.json").is_file() {
                    ckpts.push(path.display().to_string());
                } else if path.join("config.json").is_file() {
                    models.push(path.display().to_string());
                } else if depth > 0 {
                    walk(&path, depth - 1, models, ckpts);
                }
            } else if path.extension().is_some_and(|x| x == "gguf") {
                models.push(path.display().to_string());
            }
        }
    }
    for r in roots {
        walk(r, 5, &mut models, &mut checkpoints);
    }
    models.sort();
    checkpoints.sort();
    (models, checkpoints)
}

async fn index(State(st): S) -> Response {
    let html = render(&st);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn render(st: &AppState) -> String {
    let l = st.lang;
    let c = &st.catalogue;
    let (models, checkpoints) = discovered(st.roots.all());
    let rlhf: String = ["dpo", "orpo", "simpo", "cpo", "kto", "rm"]
        .iter()
        .map(|r| format!("<option value=\"rlhf:{r}\">rlhf {r}</option>"))
        .collect();
    let trainer: String = [
        ("max_steps", "max_steps", ""),
        ("num_train_epochs", "num_train_epochs", "1"),
        ("learning_rate", "learning_rate", "1e-4"),
        ("per_device_train_batch_size", "batch size", "1"),
        (
            "gradient_accumulation_steps",
            "gradient_accumulation_steps",
            "1",
        ),
        ("max_length", "max_length", "2048"),
        ("logging_steps", "logging_steps", "5"),
        ("save_steps", "save_steps", "500"),
        ("warmup_ratio", "warmup_ratio", "0"),
        ("lr_scheduler_type", "lr_scheduler_type", "cosine"),
        ("seed", "seed", "42"),
    ]
    .iter()
    .map(|(flag, label, p)| field(label, &format!("train-{flag}"), flag, p, None))
    .collect();
    let charts_note = st
        .vendor
        .missing()
        .map(|w| format!("<p class=\"error\" id=\"charts-off\">{}</p>", esc(w)))
        .unwrap_or_default();
    let uplot = if st.vendor.missing().is_none() {
        "<link rel=\"stylesheet\" href=\"/assets/uPlot.css\"><script src=\"/assets/uPlot.js\"></script>"
    } else {
        ""
    };
    let cmd_box = |id: &str| {
        format!(
            "<div class=\"cmdbox\"><span>{}</span><pre id=\"{id}-cmd\" class=\"cmd\"></pre>\
             <button type=\"button\" class=\"copy\" data-copy=\"{id}-cmd\">{}</button></div>\
             <p class=\"error\" id=\"{id}-error\"></p>\
             <button type=\"button\" class=\"launch\" id=\"{id}-launch\" data-form=\"{id}-form\">{}</button>",
            t(l, "command"),
            t(l, "copy"),
            t(l, "launch")
        )
    };
    format!(
        r##"<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>swift web-ui</title>
<link rel="stylesheet" href="/assets/app.css">{uplot}</head>
<body>
<header><h1>swift web-ui</h1><nav>
<button data-tab="train" class="active">{t_train}</button><button data-tab="chat">{t_chat}</button>
<button data-tab="eval">{t_eval}</button><button data-tab="export">{t_export}</button></nav></header>
{lists}
<main>
<div id="tabs">
<section id="tab-train" class="tab">
<form id="train-form" data-command="sft">
<label>{t_task}<select id="task"><option value="sft" selected>sft</option><option value="pt">pt</option>{rlhf}</select></label>
{f_model}{f_dataset}
<label>{t_template}<select id="train-template" data-flag="template"><option value="">{t_default}</option>{templates}</select></label>
<label class="rlhf-only" hidden>{t_loss_type}<select id="train-loss_type" data-flag="loss_type"><option value="">{t_default}</option>{losses}</select></label>
<label>{t_tuner}<select id="tuner" data-flag="tuner_type">{tuners}</select></label>
{tuner_opts}
<label>{t_optimizer}<select id="optimizer" data-flag="optimizer">{optimizers}</select></label>
{optimizer_opts}
<fieldset><legend>{t_trainer}</legend>{trainer}</fieldset>
</form>
{train_cmd}
</section>
<section id="tab-chat" class="tab" hidden>
<form id="chat-form">
{c_model}{c_ckpt}
<label>{t_system}<textarea id="chat-system" rows="2"></textarea></label>
<label>temperature<input id="chat-temperature" type="number" step="any" placeholder="0"></label>
<label>top_p<input id="chat-top_p" type="number" step="any" placeholder="1"></label>
<label>max_tokens<input id="chat-max_tokens" type="number" placeholder="64" value="64"></label>
<button type="button" id="chat-load">{t_load}</button> <span id="chat-status"></span>
</form>
<p class="error" id="chat-error"></p>
<div id="chat-history"></div>
<textarea id="chat-input" rows="3"></textarea>
<button type="button" id="chat-send">{t_send}</button> <button type="button" id="chat-clear">{t_clear}</button>
</section>
<section id="tab-eval" class="tab" hidden>
<form id="eval-form" data-command="eval">
{e_model}{e_ckpt}{e_bench}
{e_limit}{e_shot}
</form>
{eval_cmd}
</section>
<section id="tab-export" class="tab" hidden>
<form id="export-form" data-command="export">
{x_model}{x_ckpt}
<label>{t_action}<select id="export-action">
<option value="merge">{t_merge}</option><option value="gguf">{t_gguf}</option>
<option value="quantize">{t_quantize}</option><option value="ollama">{t_ollama}</option></select></label>
<label class="for-gguf for-ollama" hidden>gguf_type<select id="export-gguf_type" data-flag="gguf_type"><option value="">{t_default} f16</option><option>f32</option><option>f16</option><option>q8_0</option><option>q4_0</option><option>q4_1</option></select></label>
<label class="for-quantize" hidden>quant_method<select id="export-quant_method" data-flag="quant_method">{quantizers}</select></label>
<label class="for-quantize" hidden>quant_bits<input id="export-quant_bits" data-flag="quant_bits" type="number" placeholder="4"></label>
</form>
{export_cmd}
</section>
</div>
<aside id="runs">
<h2>{t_runs}</h2>
<table id="run-list"><tbody></tbody></table>
<div id="run-detail" hidden>
<h3 id="run-title"></h3>
<p>state: <b id="run-state"></b> <button type="button" id="run-stop" hidden>{t_stop}</button></p>
<p class="error" id="run-error"></p>
<pre id="run-line" class="cmd"></pre>
{charts_note}
<div id="charts"><div id="chart-loss" class="chart" data-points="0"></div><div id="chart-lr" class="chart" data-points="0"></div><div id="chart-acc" class="chart" data-points="0"></div></div>
<ul id="run-checkpoints" data-chat-label="{t_chat_with}"></ul>
<table id="run-report"></table>
<ul id="run-outputs"></ul>
<details open><summary>{t_log}</summary><pre id="run-log"></pre></details>
</div>
<p id="run-none">{t_no_run}</p>
</aside>
</main>
<script src="/assets/app.js"></script>
</body></html>"##,
        lang = if l == Lang::Zh { "zh" } else { "en" },
        t_train = t(l, "train"),
        t_chat = t(l, "chat"),
        t_eval = t(l, "eval"),
        t_export = t(l, "export"),
        t_runs = t(l, "runs"),
        t_task = t(l, "task"),
        t_template = t(l, "template"),
        t_default = t(l, "default"),
        t_loss_type = t(l, "loss_type"),
        t_tuner = t(l, "tuner"),
        t_optimizer = t(l, "optimizer"),
        t_trainer = t(l, "trainer"),
        t_system = t(l, "system"),
        t_load = t(l, "load"),
        t_send = t(l, "send"),
        t_clear = t(l, "clear"),
        t_action = t(l, "action"),
        t_merge = t(l, "merge"),
        t_gguf = t(l, "gguf"),
        t_quantize = t(l, "quantize"),
        t_ollama = t(l, "ollama"),
        t_stop = t(l, "stop"),
        t_chat_with = t(l, "chat_with"),
        t_log = t(l, "log"),
        t_no_run = t(l, "no_run"),
        lists = [
            datalist("models", c, &[], &models),
            datalist("checkpoints", c, &[], &checkpoints),
            datalist("datasets", c, &["dataset"], &[]),
            datalist("benchmarks", c, &["benchmark"], &[]),
        ]
        .concat(),
        f_model = field(t(l, "model"), "train-model", "model", "", Some("models")),
        f_dataset = field(
            t(l, "dataset"),
            "train-dataset",
            "dataset",
            "alpaca-en-demo#100",
            Some("datasets")
        ),
        templates = options(c, "template", ""),
        losses = options(c, "preference loss", ""),
        tuners = options(c, "tuner", "lora"),
        tuner_opts = option_fieldsets(l, c, "tuner", "data-tuner"),
        optimizers = options(c, "optimizer", "adamw"),
        optimizer_opts = option_fieldsets(l, c, "optimizer", "data-optimizer"),
        quantizers = options(c, "quantizer", ""),
        train_cmd = cmd_box("train"),
        eval_cmd = cmd_box("eval"),
        export_cmd = cmd_box("export"),
        c_model = field(t(l, "model"), "chat-model", "model", "", Some("models")),
        c_ckpt = field(
            t(l, "checkpoint"),
            "chat-checkpoint",
            "adapters",
            "",
            Some("checkpoints")
        ),
        e_model = field(t(l, "model"), "eval-model", "model", "", Some("models")),
        e_ckpt = field(
            t(l, "checkpoint"),
            "eval-adapters",
            "adapters",
            "",
            Some("checkpoints")
        ),
        e_bench = field(
            t(l, "benchmark"),
            "eval-dataset",
            "eval_dataset",
            "mmlu",
            Some("benchmarks")
        ),
        e_limit = field(t(l, "limit"), "eval-limit", "eval_limit", "", None),
        e_shot = field(t(l, "few_shot"), "eval-few_shot", "eval_few_shot", "", None),
        x_model = field(t(l, "model"), "export-model", "model", "", Some("models")),
        x_ckpt = field(
            t(l, "checkpoint"),
            "export-adapters",
            "adapters",
            "",
            Some("checkpoints")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_options_become_fields_without_ui_code() {
        let catalogue = json!([
            {"kind": "tuner", "name": "lora", "description": "LoRA", "options": [
                {"name": "lora_rank", "type": "int", "default": 8, "min": 1.0, "help": "the rank"},
                {"name": "init_weights", "type": "choice", "default": "true", "choices": ["true", "gaussian"], "help": "init"}
            ]},
            {"kind": "tuner", "name": "plugin-tuner", "description": "a plugin's", "options": [
                {"name": "gain_scale", "type": "float", "default": 0.5, "help": "<scale>"}
            ]},
            {"kind": "optimizer", "name": "adamw", "description": "AdamW"}
        ]);
        let html = option_fieldsets(Lang::En, &catalogue, "tuner", "data-tuner");
        assert!(html.contains(r#"data-tuner="lora""#), "{html}");
        assert!(
            html.contains(r#"data-flag="lora_rank" placeholder="8" min="1""#),
            "{html}"
        );
        assert!(html.contains(r#"<option>gaussian</option>"#), "{html}");
        assert!(html.contains(r#"data-tuner="plugin-tuner""#), "{html}");
        assert!(html.contains(r#"data-flag="gain_scale""#), "{html}");
        assert!(html.contains("&lt;scale&gt;"), "escaped: {html}");
        assert!(option_fieldsets(Lang::En, &catalogue, "optimizer", "data-optimizer").is_empty());
        assert_eq!(percent_decode("a%20b+c%2F"), "a b c/");
        assert_eq!(t(Lang::Zh, "train"), "训练");
    }
}
