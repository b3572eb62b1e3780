//! manirec's HTTP service.
//!
//! - [`app`] builds the router: `POST /webhooks/shoplazza` (signed order
//!   webhooks), `POST /v1/events` and `GET /sdk.js` (storefront tracking),
//!   `GET /healthz`, `GET /metrics`.
//! - [`AppState`] holds the configuration, the jobs (`manirec_jobs::Jobs`, whose
//!   store thread every request queues its work on), the serving snapshot and
//!   the metrics; it is the jobs' `Observer`, so a promotion made by a job
//!   reloads what serves.
//! - [`serve`] runs the router and, beside it, the jobs' scheduler, the
//!   recommendation log's writer and the serving reloader.
//!
//! Only this crate knows HTTP and JSON wire shapes (`views.rs` holds the ones
//! built from store rows); it calls the jobs and the pipeline for everything else.
#![deny(missing_docs)]

mod error;
mod limits;
mod metrics;
mod routes;
mod serving;
pub mod shopper;
pub mod storefront;
mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use manirec_jobs::{Db, Jobs, JobsConfig, Observer, Pending};
use manirec_pipeline::serving::LiveModel;
use manirec_store::Objects;

pub use error::ApiError;
pub use limits::Limits;
pub use manirec_pipeline::serving::Serving;
pub use metrics::Metrics;
pub use storefront::Storefront;

/// Everything the service is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// What the jobs run with (the user key, sync's weights, the schedule, …);
    /// the server's own handlers read the key, the seed and the weights here.
    pub jobs: JobsConfig,
    /// The app secret that signs webhooks; without it webhooks are refused.
    pub shoplazza_secret: Option<String>,
    /// Largest webhook body accepted, bytes.
    pub webhook_body_limit: usize,
    /// Largest event batch body accepted, bytes.
    pub events_body_limit: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Key of the shoppers' user tokens: a `user_id` from a browser counts
    /// only with a token made with it (see [`shopper`]).
    pub storefront_secret: String,
    /// Bearer token of `/admin/*`; without it the admin API is off.
    pub admin_token: Option<String>,
    /// Timeouts, the concurrency cap, the per-client rate limit.
    pub limits: Limits,
    /// The shop's product pages, for the links of `details=1` answers.
    pub storefront: Storefront,
    /// How often what serves is reloaded from the store: a promotion, an
    /// experiment or a catalogue rule made by another process (a replica,
    /// the command line) reaches this one within it.
    pub reload_interval: Duration,
}

impl ServerConfig {
    /// Defaults for everything but the jobs' configuration.
    pub fn new(jobs: JobsConfig) -> Self {
        ServerConfig {
            jobs,
            shoplazza_secret: None,
            webhook_body_limit: 2 << 20,
            events_body_limit: 2 << 20,
            max_batch_events: 1000,
            // Random unless configured: no token verifies until one is set.
            storefront_secret: hex::encode(rand::random::<[u8; 32]>()),
            admin_token: None,
            limits: Limits::default(),
            storefront: Storefront::default(),
            reload_interval: Duration::from_secs(30),
        }
    }
}

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServerConfig,
    jobs: Jobs,
    metrics: Metrics,
    /// What answers recommendations; swapped whole when the registry, the
    /// running experiment or the catalogue rules change.
    serving: std::sync::RwLock<Arc<Serving>>,
    /// Recommendation answers waiting to be logged.
    log: serving::LogBuffer,
    /// Per-client token buckets of the public routes.
    rate_limiter: limits::RateLimiter,
}

impl AppState {
    /// State over a running [`Db`]; the jobs made here report to this state
    /// (a promotion reloads what serves).
    pub fn new(config: ServerConfig, db: Db, objects: Objects) -> Self {
        let jobs = Jobs::new(config.jobs.clone(), db, objects);
        let state = AppState {
            inner: Arc::new(Inner {
                rate_limiter: limits::RateLimiter::new(&config.limits),
                config,
                jobs,
                metrics: Metrics::default(),
                serving: std::sync::RwLock::new(Arc::new(Serving::default())),
                log: serving::LogBuffer::default(),
            }),
        };
        state.inner.jobs.observe(Arc::new(Reloader {
            state: Arc::downgrade(&state.inner),
        }));
        state
    }

    /// The jobs (sync, the weekly loop, the report, retention, the poll).
    pub fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The store's thread.
    pub fn db(&self) -> &Db {
        self.inner.jobs.db()
    }

    /// The object store.
    pub fn objects(&self) -> &Objects {
        self.inner.jobs.objects()
    }

    /// What answers recommendations now.
    pub fn serving(&self) -> Arc<Serving> {
        self.inner.serving.read().expect("not poisoned").clone()
    }

    /// The model answering recommendations, if one is active.
    pub fn live_model(&self) -> Option<Arc<LiveModel>> {
        self.serving().active.clone()
    }

    /// Reloads what serving depends on: the active version, the running
    /// experiment's two versions, the catalogue rules. Models already loaded are
    /// reused; requests in flight keep what they started with. Returns the
    /// active version.
    pub async fn refresh_model(&self) -> Result<Option<String>, ApiError> {
        let next = serving::load(self, &self.serving()).await?;
        let active = next.active.as_ref().map(|m| m.version.clone());
        *self.inner.serving.write().expect("not poisoned") = Arc::new(next);
        Ok(active)
    }

    /// Queues a recommendation answer for the log (written in batches), within
    /// the log's budget for answers outside experiments.
    pub(crate) fn log_recommendation(&self, entry: manirec_store::RecommendationLog) {
        let budget = self.config().limits.answers_logged_per_second;
        if !self.inner.log.push(entry, budget) {
            self.metrics().unlogged_answer();
        }
    }

    /// Writes the queued log entries now.
    pub async fn flush_log(&self) -> Result<u64, ApiError> {
        serving::flush(self).await
    }

    pub(crate) fn rate_limiter(&self) -> &limits::RateLimiter {
        &self.inner.rate_limiter
    }

    /// Whether a request may act as shopper `user_id`: with their user token
    /// (`user_token` given in the query or body, or the `X-Manirec-User-Token`
    /// header), or with the admin bearer token.
    pub(crate) fn shopper(
        &self,
        user_id: &str,
        token: Option<&str>,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), ApiError> {
        let header_token = headers
            .get("x-manirec-user-token")
            .and_then(|v| v.to_str().ok());
        let now = manirec_store::now_ms() / 1000;
        let secret = &self.config().storefront_secret;
        let outcome = shopper::verify(secret, user_id, token.or(header_token), now);
        if outcome.is_ok() || routes::is_admin(self, headers) {
            return Ok(());
        }
        Err(match outcome {
            Err(shopper::Refusal::Required) => ApiError::unauthorized(
                "user_token_required",
                "user_id needs the shopper's user_token (query parameter or X-Manirec-User-Token header)",
            ),
            _ => ApiError::unauthorized(
                "user_token_invalid",
                "the user_token is malformed, expired, or not for this user_id",
            ),
        })
    }

    /// The counters `/metrics` shows.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// How the jobs tell serving that what it serves changed. Weak: the state
/// owns the jobs, not the other way round.
struct Reloader {
    state: std::sync::Weak<Inner>,
}

impl Observer for Reloader {
    fn serving_changed(&self) -> Pending<'_> {
        Box::pin(async move {
            if let Some(inner) = self.state.upgrade() {
                if let Err(e) = (AppState { inner }).refresh_model().await {
                    tracing::warn!(error = %e, "could not reload serving after a job");
                }
            }
        })
    }

    fn synced(&self, events: u64) {
        if let Some(inner) = self.state.upgrade() {
            inner.metrics.synced(events);
        }
    }
}

/// The router, for `serve` and for tests.
pub fn app(state: AppState) -> Router {
    routes::router(state)
}

/// Serves on `listener` until `shutdown` resolves, then finishes in-flight requests.
///
/// HTTP/1.1 only, with a header read timeout (axum's own `serve` sets none, so
/// a client sending half a request line could hold a connection for ever); the
/// client's address goes into each request for the rate limit.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    if let Err(e) = state.refresh_model().await {
        tracing::warn!(error = %e, "no model loaded; recommendations answer 503 until one is promoted");
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let jobs = state.jobs().clone();
    let scheduler = tokio::spawn(async move {
        jobs.run_scheduler(async move {
            let _ = stopped.await;
        })
        .await
    });
    let background = tokio::spawn(background(state.clone()));
    let router = app(state.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(state.config().limits.header_read_timeout());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let result = loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(
            move |request: axum::http::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                request
            },
        );
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    };
    drop(listener);
    // In-flight requests finish; a connection idle in keep-alive closes at once.
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after shutdown; closing them");
    }
    // Its background tasks go with it; then the last log entries are written.
    let _ = stop.send(());
    let _ = scheduler.await;
    background.abort();
    let _ = background.await;
    if let Err(e) = state.flush_log().await {
        tracing::warn!(error = %e, "the last recommendation log entries were not written");
    }
    result
}

/// What runs beside the router: the recommendation log's writer and the
/// serving reloader (a promotion made elsewhere is noticed within
/// `reload_interval`, 30 s by default, without a restart).
async fn background(state: AppState) {
    let flush = serving::flush_forever(state.clone(), Duration::from_millis(250));
    let reload = async {
        let mut every = tokio::time::interval(state.config().reload_interval);
        loop {
            every.tick().await;
            if let Err(e) = state.refresh_model().await {
                tracing::warn!(error = %e, "could not load the active model");
            }
        }
    };
    tokio::join!(flush, reload);
}
