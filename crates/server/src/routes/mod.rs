//! The router. Each route module owns its wire shapes.

mod admin;
mod dashboard;
mod events;
mod recommend;
mod webhooks;

use axum::error_handling::HandleErrorLayer;
use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::header;
use axum::middleware::{from_fn_with_state, map_response_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::cors::CorsLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::{ApiError, AppState};

/// The storefront SDK, served as is.
const SDK_JS: &str = include_str!("../../assets/sdk.js");

/// The API's OpenAPI 3.1 description. `tests/openapi.rs` checks it lists
/// exactly the routes of this router (read from this crate's source) and that
/// each one answers, and validates it with `openapi-spec-validator`.
const OPENAPI_JSON: &str = include_str!("../../assets/openapi.json");

pub fn router(state: AppState) -> Router {
    let config = state.config();
    // Storefronts live on the shop's domain: the tracking endpoint answers any
    // origin (it takes no cookies and trusts nothing in the request).
    let storefront = Router::new()
        .route("/v1/events", post(events::post_events))
        .layer(DefaultBodyLimit::max(config.events_body_limit))
        .layer(from_fn_with_state(
            config.events_body_limit,
            declared_size_limit,
        ))
        .route("/v1/recommendations", get(recommend::recommendations))
        .route("/v1/items/{id}/similar", get(recommend::similar))
        .route("/v1/popular", get(recommend::popular))
        .route("/sdk.js", get(sdk))
        .route_layer(from_fn_with_state(state.clone(), crate::limits::rate_limit))
        .layer(CorsLayer::permissive());
    let webhooks = Router::new()
        .route("/webhooks/shoplazza", post(webhooks::post_webhook))
        .layer(DefaultBodyLimit::max(config.webhook_body_limit))
        .layer(from_fn_with_state(
            config.webhook_body_limit,
            declared_size_limit,
        ));
    let admin = admin::router().route_layer(from_fn_with_state(state.clone(), admin::authorize));
    Router::new()
        .merge(storefront)
        .merge(webhooks)
        .merge(admin)
        .route("/dashboard", get(dashboard::page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        // Only matched routes: their template is the label (MatchedPath is
        // set by routing, so this must be a route layer).
        .route_layer(from_fn_with_state(state.clone(), record_latency))
        .fallback(not_found)
        // The path only: a query may carry a shopper's email or token.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
        }))
        .layer(edge(&state))
        .layer(map_response_with_state(state.clone(), crate::error::envelope))
        .with_state(state)
}

/// What every route runs inside: the whole-request timeout (408), under a
/// global concurrency cap that sheds load (503 at once) instead of queueing.
fn edge<S>(
    state: &AppState,
) -> impl tower::Layer<
    S,
    Service = impl tower::Service<
        Request,
        Response = Response,
        Error = std::convert::Infallible,
        Future = impl Send + 'static,
    > + Clone
                  + Send
                  + Sync
                  + 'static,
> + Clone
       + Send
       + Sync
       + 'static
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let limits = &state.config().limits;
    let shed = state.clone();
    tower::ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: tower::BoxError| {
            let state = shed.clone();
            async move {
                state.metrics().refused("overloaded");
                ApiError::unavailable("the server is at its concurrency limit; retry shortly")
            }
        }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout(),
        ))
}

/// Answers 413 at once when the declared `Content-Length` is over the limit,
/// before a byte of the body is read. (`DefaultBodyLimit` still guards chunked
/// bodies.)
async fn declared_size_limit(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => ApiError::too_large(format!(
            "the body is {n} bytes; this endpoint accepts at most {limit}"
        ))
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Times each request into its route's latency histogram.
async fn record_latency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    if let Some(route) = route {
        state
            .metrics()
            .request(&route, method.as_str(), started.elapsed());
    }
    response
}

/// Whether the request carries the admin bearer token.
pub(crate) fn is_admin(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    admin::bearer_matches(state, headers)
}

async fn sdk() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        SDK_JS,
    )
}

async fn openapi() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        OPENAPI_JSON,
    )
}

async fn healthz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    // A round trip through the store thread: healthy means able to answer.
    let schema = state
        .db()
        .call(|_| manirec_store::Store::schema_version())
        .await?;
    Ok(Json(json!({"status": "ok", "schema_version": schema})))
}

async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let lag = state
        .db()
        .read(|s| Ok::<_, manirec_store::Error>(s.last_event_seq()? - s.sync_watermark()?))
        .await?
        .map_err(ApiError::internal)?;
    state.metrics().set_sync_lag(lag);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().render(),
    ))
}

async fn not_found() -> ApiError {
    ApiError {
        status: axum::http::StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such route".into(),
    }
}
