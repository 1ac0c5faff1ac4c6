//! The kinds of failure a caller must tell apart (the server answers a user's
//! mistake with a 4xx and a bug with a 500; the command line exits 1 either
//! way). Library functions return `anyhow::Result` for context; where the
//! kind matters they put an [`Error`] at the root of the chain, and
//! `cbr::error::kind_of` finds it.

use std::fmt;

/// What went wrong, as far as the caller's reaction depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input (file, field, argument, upload) is not what it must be.
    BadInput,
    /// A named thing (model, class, file) does not exist.
    NotFound,
    /// The request clashes with the current state (exists already, busy).
    Conflict,
    /// The input is above a size limit.
    TooLarge,
    /// Valid, but something cbr does not do (yet).
    Unsupported,
    /// Anything else: a bug, or the machine (disk, runtime library).
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::BadInput => "bad input",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooLarge => "too large",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
        })
    }
}

/// A failure of a known [`ErrorKind`], with a message for people.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into() }
    }
    pub fn bad_input(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadInput, message)
    }
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Conflict, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// An I/O failure: a missing file is `NotFound`, anything else `Internal`.
    pub fn from_io(e: std::io::Error, what: impl fmt::Display) -> Error {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Internal,
        };
        Error::new(kind, format!("{what}: {e}"))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl From<crate::meta::InvalidMetadata> for Error {
    fn from(e: crate::meta::InvalidMetadata) -> Error {
        Error::bad_input(e.to_string())
    }
}

/// The kind of one error of a chain, if it is one cbr-core knows: an
/// [`Error`] or invalid metadata. (`cbr::error::kind_of` walks a whole chain,
/// image decoding errors included.)
pub fn kind_of_cause(cause: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    if let Some(e) = cause.downcast_ref::<Error>() {
        return Some(e.kind);
    }
    cause.is::<crate::meta::InvalidMetadata>().then_some(ErrorKind::BadInput)
}
