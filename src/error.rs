//! The kinds of failure a caller must tell apart (the server answers a user's
//! mistake with a 4xx and a bug with a 500; the command line exits 1 either
//! way). Library functions return `anyhow::Result` for context; where the
//! kind matters they put an [`Error`] at the root of the chain, and
//! [`kind_of`] finds it.

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

/// The kind of an error chain: that of the first [`Error`] (or image decoding
/// error, or metadata error) in it, else `Internal`.
pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
    for cause in e.chain() {
        if let Some(e) = cause.downcast_ref::<Error>() {
            return e.kind;
        }
        if cause.is::<crate::meta::InvalidMetadata>() {
            return ErrorKind::BadInput;
        }
        if let Some(d) = cause.downcast_ref::<crate::decode::DecodeError>() {
            use crate::decode::DecodeError as D;
            return match d {
                D::UnknownFormat | D::Unsupported { .. } => ErrorKind::Unsupported,
                D::TooManyPixels { .. } | D::FileTooLarge { .. } => ErrorKind::TooLarge,
                D::Io(_) => ErrorKind::Internal,
                _ => ErrorKind::BadInput,
            };
        }
    }
    ErrorKind::Internal
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn kind_survives_context() {
        let e: anyhow::Result<()> = Err(Error::not_found("no class \"x\"").into());
        let e = e.context("model m.onnx").unwrap_err();
        assert_eq!(kind_of(&e), ErrorKind::NotFound);
        assert_eq!(format!("{e:#}"), "model m.onnx: no class \"x\"");
        assert_eq!(kind_of(&anyhow::anyhow!("plain")), ErrorKind::Internal);
    }
}
