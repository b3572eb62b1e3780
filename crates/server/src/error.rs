//! The one error type of the HTTP edge: a status, a stable code, a message, and
//! nothing internal (no stack traces, no SQL).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered as `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What happened and what to do.
    pub message: String,
}

impl ApiError {
    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// 401 with a code.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code,
            message: message.into(),
        }
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: message.into(),
        }
    }

    /// 503: try again later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
        }
    }

    /// 500; the detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; see the server log".into(),
        }
    }
}

impl ApiError {
    /// A pipeline error: what the caller asked that the state does not allow
    /// (an unknown version, a running experiment, missing data) is theirs to
    /// fix, with the pipeline's message; anything else is internal.
    pub fn from_pipeline(e: manirec_pipeline::Error) -> Self {
        use manirec_pipeline::Error as P;
        use manirec_store::Error as S;
        match e {
            P::Store(S::Conflict(m)) => ApiError {
                status: StatusCode::CONFLICT,
                code: "conflict",
                message: m,
            },
            P::Store(S::Invalid(m)) | P::Data(m) => ApiError::bad_request("invalid", m),
            P::Input { path, message } => {
                ApiError::bad_request("invalid_input", format!("{path}: {message}"))
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large("the request body is larger than this endpoint accepts")
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    }
}
