//! The edge's limits: what keeps one client (or a fault) from stalling the
//! service. Timeouts bound how long a connection may hold a slot, the
//! concurrency cap bounds how many requests run at once (the rest get 503 at
//! once instead of queueing without end), and a per-client token bucket bounds
//! how fast one address may call the public routes (429).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::{ApiError, AppState};

/// `[limits]` in manirec.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Seconds a connection may take to send a request's headers (at most 10):
    /// a client that sends half a request line and waits is closed after it.
    pub header_read_timeout_secs: u64,
    /// Seconds a whole request may take, body and answer included (408 after).
    pub request_timeout_secs: u64,
    /// Requests served at once; beyond it, 503 at once.
    pub max_concurrent_requests: usize,
    /// Sustained requests per second one client may make to the public routes
    /// (`/v1/*`, `/sdk.js`); 0 turns the rate limit off.
    pub rate_per_second: f64,
    /// Requests one client may make in a burst above the sustained rate.
    pub rate_burst: u32,
    /// Take the client's address from the last `X-Forwarded-For` entry (set it
    /// only behind a proxy that appends it; otherwise anyone can pick theirs).
    pub trust_forwarded_for: bool,
    /// Answers outside an A/B experiment written to the recommendation log per
    /// second at most, with a burst of as many: a busy shop's log would
    /// otherwise cost its answers their p99 (docs/bench-serve.md). The rest are
    /// counted (`manirec_answers_unlogged_total`), not logged; 0 logs none of
    /// them. Answers inside an experiment, which attribution reads, are always
    /// logged.
    pub answers_logged_per_second: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            max_concurrent_requests: 512,
            rate_per_second: 20.0,
            rate_burst: 100,
            trust_forwarded_for: false,
            answers_logged_per_second: 200.0,
        }
    }
}

impl Limits {
    /// What is wrong with these limits, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10).contains(&self.header_read_timeout_secs) {
            return Err("limits.header_read_timeout_secs must be 1 to 10".into());
        }
        if self.request_timeout_secs == 0 {
            return Err("limits.request_timeout_secs must be at least 1".into());
        }
        if self.max_concurrent_requests == 0 {
            return Err("limits.max_concurrent_requests must be at least 1".into());
        }
        if !self.rate_per_second.is_finite() || self.rate_per_second < 0.0 {
            return Err("limits.rate_per_second must be 0 (off) or more".into());
        }
        if self.rate_per_second > 0.0 && self.rate_burst == 0 {
            return Err("limits.rate_burst must be at least 1".into());
        }
        if !self.answers_logged_per_second.is_finite() || self.answers_logged_per_second < 0.0 {
            return Err(
                "limits.answers_logged_per_second must be 0 (only experiments' answers) or more"
                    .into(),
            );
        }
        Ok(())
    }

    /// The header read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs.clamp(1, 10))
    }

    /// The whole-request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }
}

/// Buckets kept before the idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

/// A token bucket per client address.
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        RateLimiter {
            rate: limits.rate_per_second,
            burst: f64::from(limits.rate_burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `client`; when none is left, how long until one is.
    fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS {
            // Full buckets carry no state worth keeping.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        let refilled =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Ok(())
        } else {
            *tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / self.rate))
        }
    }
}

/// The address a request is counted against.
fn client(request: &Request, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .next_back();
        if forwarded.is_some() {
            return forwarded;
        }
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Middleware of the public routes: 429 when the client is over its rate.
pub(crate) async fn rate_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limits = &state.config().limits;
    if let Some(ip) = client(&request, limits.trust_forwarded_for) {
        if let Err(wait) = state.rate_limiter().take(ip, Instant::now()) {
            state.metrics().refused("rate_limited");
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let mut answer = ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "rate_limited",
                message: format!("too many requests from this address; retry in {seconds} s"),
            }
            .into_response();
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            return answer;
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(&Limits {
            rate_per_second: 2.0,
            rate_burst: 3,
            ..Limits::default()
        });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take(a, t0).is_ok());
        }
        let wait = limiter.take(a, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        // Another client has its own bucket.
        assert!(limiter.take(b, t0).is_ok());
        // Half a second later, one token is back (2/s), and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.take(a, t1).is_ok());
        assert!(limiter.take(a, t1).is_err());
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let limiter = RateLimiter::new(&Limits {
            rate_per_second: 0.0,
            ..Limits::default()
        });
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 0..10_000 {
            assert!(limiter.take(ip, Instant::now()).is_ok());
        }
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        let bad = Limits {
            header_read_timeout_secs: 30,
            ..Limits::default()
        };
        assert!(bad.validate().is_err());
        assert!(Limits::default().validate().is_ok());
    }
}
