//! The kinds of failure a caller must tell apart ([`ErrorKind`], defined in
//! cbr-core), and [`kind_of`], which finds the kind of an error chain,
//! image decoding errors included.

pub use cbr_core::error::{Error, ErrorKind};

/// The kind of an error chain: that of the first [`Error`], image decoding
/// error or metadata error in it, else `Internal`.
pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
    for cause in e.chain() {
        if let Some(d) = cause.downcast_ref::<crate::decode::DecodeError>() {
            use crate::decode::DecodeError as D;
            return match d {
                D::UnknownFormat | D::Unsupported { .. } => ErrorKind::Unsupported,
                D::TooManyPixels { .. } | D::FileTooLarge { .. } => ErrorKind::TooLarge,
                D::Io(_) => ErrorKind::Internal,
                _ => ErrorKind::BadInput,
            };
        }
        if let Some(kind) = cbr_core::error::kind_of_cause(cause) {
            return kind;
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
