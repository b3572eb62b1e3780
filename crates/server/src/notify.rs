//! Retrain notices: a JSON POST to `MANIREC_NOTIFY_URL`, retried with back-off,
//! in the background. A failing notifier is logged and never blocks ingestion.

use std::time::Duration;

use serde_json::Value;

/// Attempts per notice.
const ATTEMPTS: u32 = 4;

/// Logs the notice and, when a URL is configured, POSTs it in the background.
pub fn spawn(url: Option<String>, notice: Value) -> Option<tokio::task::JoinHandle<bool>> {
    tracing::info!(notice = %notice, "retrain notice");
    let url = url?;
    Some(tokio::spawn(async move { send(&url, &notice).await }))
}

/// POSTs `notice` to `url`, retrying on failure; true when it was delivered.
pub async fn send(url: &str, notice: &Value) -> bool {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the notification client");
            return false;
        }
    };
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        match client.post(url).json(notice).send().await {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => tracing::warn!(attempt, status = %r.status(), "notification refused"),
            // The URL may carry a token (chat webhooks do): never in the log.
            Err(e) => tracing::warn!(attempt, error = %e.without_url(), "notification failed"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    tracing::error!(
        host = redacted(url),
        "notification gave up after {ATTEMPTS} attempts"
    );
    false
}

/// The host of a URL, which is all a log line needs (the path and query of a
/// chat webhook are its credential).
pub(crate) fn redacted(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "<unparsable url>".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_host_of_a_notify_url_is_logged() {
        assert_eq!(
            super::redacted("https://hooks.slack.com/services/T00/B00/secret-part"),
            "hooks.slack.com"
        );
        assert_eq!(super::redacted("not a url"), "<unparsable url>");
    }
}
