//! [`Error`]: a message, which is what crosses the boundary; `?` converts tch's errors into it
//! and it converts into the `String` that `Model`'s methods return.

/// An error of a plugin's tensor code: a message that the host shows as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error(e.to_string())
    }
}

impl From<String> for Error {
    fn from(e: String) -> Self {
        Error(e)
    }
}

impl From<&str> for Error {
    fn from(e: &str) -> Self {
        Error(e.to_string())
    }
}

impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.0
    }
}

impl From<Error> for swift_plugin_api::PluginError {
    fn from(e: Error) -> Self {
        swift_plugin_api::PluginError(e.0)
    }
}
