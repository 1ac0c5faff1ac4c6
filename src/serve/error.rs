//! JSON errors: every failure is `{"error": {"code": ..., "message": ...}}`
//! with a meaningful HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use cbr::decode::DecodeError;
use cbr::error::{kind_of, ErrorKind};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 503s.
    pub retry_after: Option<u32>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    pub fn busy(code: &'static str, message: impl Into<String>, retry_after: u32) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large", message)
    }

    /// An image that cannot be used: 415 for a format we do not read, 413 for
    /// too many pixels or bytes, 400 for empty or damaged data.
    pub fn from_decode(what: &str, e: &DecodeError) -> Self {
        let msg = format!("{what}: {e}");
        match e {
            DecodeError::UnknownFormat | DecodeError::Unsupported { .. } => {
                Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_image", msg)
            }
            DecodeError::TooManyPixels { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_pixels", msg)
            }
            DecodeError::FileTooLarge { .. } => Self::too_large(msg),
            DecodeError::Empty | DecodeError::Io(_) => Self::bad_request("empty_image", msg),
            DecodeError::Corrupt { .. } => Self::bad_request("corrupt_image", msg),
        }
    }

    /// A failed multipart read: too large (413) or malformed (400; axum says 500 when the body
    /// itself cannot be read, such as a bad chunk-size line, which is the client's doing).
    pub fn from_multipart(e: axum::extract::multipart::MultipartError) -> Self {
        let status = match e.status() {
            s if s.is_server_error() => StatusCode::BAD_REQUEST,
            s => s,
        };
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large(format!("upload too large: {}", e.body_text()))
        } else {
            Self::new(
                status,
                "bad_multipart",
                format!("cannot read the multipart upload: {}", e.body_text()),
            )
        }
    }
}

/// Whether reading a body failed on its size limit (413) rather than on its framing (400).
pub fn is_length_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = super::api::Error {
            error: super::api::ErrorDetail { code: self.code.to_string(), message: self.message },
        };
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<anyhow::Error> for ApiError {
    /// A library error, answered by its [`ErrorKind`]: the user's mistakes
    /// are 4xx, everything else a 500.
    fn from(e: anyhow::Error) -> Self {
        let message = format!("{e:#}");
        let (status, code) = match kind_of(&e) {
            ErrorKind::BadInput => (StatusCode::BAD_REQUEST, "bad_input"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ErrorKind::Unsupported => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, message)
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::internal(e)
    }
}
