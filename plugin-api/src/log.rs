//! Logging from inside a plugin.
//!
//! A plugin has its own copy of every Rust library's globals, `tracing`'s dispatcher included, so
//! its log lines travel to the host through a callback the host passes at registration. The
//! `plugin_info!` / `plugin_warn!` / ... macros format a line and send it; the host forwards it into
//! its own `tracing` subscriber with the plugin's name as the target.

use std::sync::OnceLock;

use abi_stable::std_types::RStr;

use crate::abi::LogFn;

/// Log levels as they cross the boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

static SINK: OnceLock<LogFn> = OnceLock::new();

/// Called by the register entry point: remembers where this library's log lines go.
pub(crate) fn install(log: LogFn) {
    let _ = SINK.set(log);
}

/// Sends one log line to the host (or to stderr when no host is attached, e.g. in unit tests).
/// `plugin` is the emitting crate's name (the macros pass `CARGO_PKG_NAME`).
pub fn emit(level: Level, plugin: &str, message: &str) {
    match SINK.get() {
        Some(log) => log(level as u8, RStr::from(plugin), RStr::from(message)),
        None => eprintln!("[{level:?} {plugin}] {message}"),
    }
}

/// The host's end of the callback: forwards a plugin's line into the host's `tracing`.
pub extern "C" fn forward_to_tracing(level: u8, plugin: RStr<'_>, message: RStr<'_>) {
    let (plugin, message) = (plugin.as_str(), message.as_str());
    match level {
        1 => tracing::error!(target: "swift::plugin", plugin, "{message}"),
        2 => tracing::warn!(target: "swift::plugin", plugin, "{message}"),
        3 => tracing::info!(target: "swift::plugin", plugin, "{message}"),
        4 => tracing::debug!(target: "swift::plugin", plugin, "{message}"),
        _ => tracing::trace!(target: "swift::plugin", plugin, "{message}"),
    }
}

/// Logs at info level through the host.
#[macro_export]
macro_rules! plugin_info {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Info, env!("CARGO_PKG_NAME"), &format!($($arg)*)) };
}

/// Logs at warn level through the host.
#[macro_export]
macro_rules! plugin_warn {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Warn, env!("CARGO_PKG_NAME"), &format!($($arg)*)) };
}

/// Logs at error level through the host.
#[macro_export]
macro_rules! plugin_error {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Error, env!("CARGO_PKG_NAME"), &format!($($arg)*)) };
}

/// Logs at debug level through the host.
#[macro_export]
macro_rules! plugin_debug {
    ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Debug, env!("CARGO_PKG_NAME"), &format!($($arg)*)) };
}
