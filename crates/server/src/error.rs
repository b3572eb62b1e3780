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

impl From<manirec_jobs::Error> for ApiError {
    /// Each cause of a job's failure, once: the store stopping is a 503 (try
    /// again), the orders API a 503, the pipeline's errors keep their meaning
    /// ([`ApiError::from_pipeline`]), the rest is internal.
    fn from(e: manirec_jobs::Error) -> Self {
        use manirec_jobs::Error as J;
        match e {
            J::ShuttingDown => ApiError::unavailable("the store is shutting down"),
            J::ShopApi(m) => ApiError::unavailable(m),
            J::Pipeline(e) => ApiError::from_pipeline(e),
            J::Store(e) => ApiError::from_pipeline(manirec_pipeline::Error::Store(e)),
            e @ (J::StoreStopped | J::EventWrite(_) | J::Http(_) | J::Panicked(_)) => {
                ApiError::internal(e)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// The stable code of a status, for answers that were not built as an
/// [`ApiError`] (axum's own rejections, the timeout, the body limit).
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// The one mechanism that keeps every error in the contract's shape: any 4xx
/// or 5xx answer that is not already JSON (axum's plain-text rejections of a
/// query, a path, a method, a media type, a body; the timeout's bare 408) is
/// rewritten as `{"error": {"code", "message"}}`, keeping its status and
/// headers (`Allow`, `Retry-After`). Routes added later get it for free.
pub(crate) async fn envelope(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    response: Response,
) -> Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if json {
        return response;
    }
    if status == StatusCode::REQUEST_TIMEOUT {
        state.metrics().refused("timeout");
    }
    let (parts, body) = response.into_parts();
    // Rejection texts are one line; anything longer is not ours to echo.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut answer = ApiError {
        status,
        code: code_for(status),
        message,
    }
    .into_response();
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
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
