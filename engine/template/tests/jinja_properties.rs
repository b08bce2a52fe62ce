//! Property tests of the user-provided `chat_template` (a tokenizer_config.json field, rendered
//! by minijinja): sources put together from pieces of real templates and hostile ones (nested
//! loops, huge `range`s, string repetition, recursive macros, unbalanced tags), rendered over
//! random conversations. Compiling and rendering must return `Ok` or `Err`, never panic, and
//! finish promptly: the render's budget of work stops endless templates.
//!
//! Cases: `PROPTEST_CASES` (proptest's default, 256, in `make test`; `make fuzz` runs more).

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use swift_plugin_api::{Message, StandardRow};
use swift_template::jinja::JinjaTemplate;
use swift_template::{RenderOptions, Tokenizer};

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/llama");
        Tokenizer::from_dir(&dir).expect("the tiny llama's tokenizer loads")
    })
}

/// Pieces of chat templates: real constructs, hostile ones, and broken syntax.
const PIECES: &[&str] = &[
    "{{ bos_token }}",
    "{% for message in messages %}",
    "{% endfor %}",
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}",
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    "{% if message.role == 'user' %}",
    "{% elif message.role == 'assistant' %}",
    "{% else %}",
    "{% endif %}",
    "{% if tools %}{% for t in tools %}{{ t | tojson }}{% endfor %}{% endif %}",
    "{{ messages | length }}",
    "{{ message.content.split('x') | join('y') }}",
    "{{ raise_exception('no') }}",
    "{% set ns = namespace(n=0) %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
    "{% for i in range(10 ** 12) %}x{% endfor %}",
    "{{ 'x' * 1000000000 }}",
    "{{ ('ab' * 100000) * 100000 }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{% macro g(n) %}{% if n > 0 %}{{ g(n - 1) }}{{ g(n - 1) }}{% endif %}{% endmacro %}{{ g(40) }}",
    "{% for m in messages * 100000 %}{{ m.content }}{% endfor %}",
    "{{ messages[999] }}",
    "{{ message['nope']['deeper'] }}",
    "{{ strftime_now('%Y-%m-%d') }}",
    "{{ eos_token }}",
    "{%",
    "{{",
    "}}",
    "{% endif %}{% endif %}",
    "{# comment",
    "plain text ",
    "{{ (messages | map(attribute='content') | list)[0][::-1] }}",
    "{% for k, v in messages[0] | items %}{{ k }}={{ v }}{% endfor %}",
];

fn source() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(PIECES), 0..10).prop_map(|p| p.concat())
}

fn conversation() -> impl Strategy<Value = Vec<Message>> {
    let role = proptest::sample::select(&["system", "user", "assistant", "tool", "odd"][..]);
    proptest::collection::vec((role, "[a-zx{}%<> \\n]{0,12}"), 1..5)
        .prop_map(|ms| ms.into_iter().map(|(r, c)| Message::new(r, c)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn any_chat_template_compiles_and_renders_or_fails_promptly(
        src in source(),
        messages in conversation(),
        generation_prompt in any::<bool>(),
    ) {
        let started = Instant::now();
        if let Ok(t) = JinjaTemplate::new(&src) {
            let _ = t.render(&messages, None, generation_prompt, None, tokenizer());
            let row = StandardRow { messages, ..Default::default() };
            let opts = RenderOptions { generation_prompt, ..Default::default() };
            let _ = t.render_pieces(&row, &opts, tokenizer());
        }
        let took = started.elapsed();
        prop_assert!(took < Duration::from_secs(20), "{took:?} for {src:?}");
    }
}

/// Templates that would run for hours or allocate terabytes stop with an error saying why.
#[test]
fn endless_templates_are_stopped() {
    let messages = [Message::new("user", "hi")];
    for src in [
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "{% macro g(n) %}{% if n > 0 %}{{ g(n - 1) }}{{ g(n - 1) }}{% endif %}{% endmacro %}{{ g(40) }}",
    ] {
        let started = Instant::now();
        let e = JinjaTemplate::new(src)
            .unwrap()
            .render(&messages, None, true, None, tokenizer())
            .unwrap_err()
            .to_string();
        assert!(e.contains("budget"), "{src}: {e}");
        assert!(started.elapsed() < Duration::from_secs(10), "{src}");
    }
}

/// Unbounded recursion is refused by depth, on a thread with the default (2 MiB) stack, as the
/// server's blocking pool and the test harness give.
#[test]
fn endless_recursion_is_refused() {
    let e = std::thread::spawn(|| {
        JinjaTemplate::new("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
            .unwrap()
            .render(&[Message::new("user", "hi")], None, true, None, tokenizer())
            .unwrap_err()
            .to_string()
    })
    .join()
    .unwrap();
    assert!(e.contains("recursion"), "{e}");
}
