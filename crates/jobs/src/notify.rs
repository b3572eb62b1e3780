//! Retrain notices: a JSON POST to `MANIREC_NOTIFY_URL`, retried with back-off,
//! in the background. A failing notifier is logged and never blocks ingestion.
//! Every notice carries a one-line `text` beside its fields: Slack's and
//! Discord's incoming webhooks (`content` for Discord) refuse a body without
//! one, and other receivers read the structured fields.

use std::time::Duration;

use serde_json::Value;

/// Attempts per notice.
const ATTEMPTS: u32 = 4;

/// Logs the notice and, when a URL is configured, POSTs it in the background.
pub fn spawn(url: Option<String>, mut notice: Value) -> Option<tokio::task::JoinHandle<bool>> {
    with_text(&mut notice);
    tracing::info!(notice = %notice, "retrain notice");
    let url = url?;
    Some(tokio::spawn(async move { send(&url, &notice).await }))
}

/// Adds `text` (and Discord's `content`) when the notice has none: a line a
/// person reads in a chat channel.
pub fn with_text(notice: &mut Value) {
    let Some(o) = notice.as_object_mut() else {
        return;
    };
    if !o.contains_key("text") {
        let text = match o.get("event").and_then(Value::as_str) {
            Some("retrain_triggered") => {
                let reasons: Vec<&str> = o
                    .get("reasons")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let key = o
                    .get("export")
                    .and_then(|e| e.get("key"))
                    .and_then(Value::as_str)
                    .unwrap_or("no file");
                format!(
                    "manirec: a retrain is due ({}); new interactions exported to {key}",
                    if reasons.is_empty() {
                        "asked".to_owned()
                    } else {
                        reasons.join("; ")
                    }
                )
            }
            Some("retrain_run") => {
                let run = o.get("run");
                let field = |k: &str| {
                    run.and_then(|r| r.get(k))
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_owned()
                };
                format!(
                    "manirec: retrain run {}: {}",
                    field("status"),
                    field("outcome")
                )
            }
            Some(other) => format!("manirec: {other}"),
            None => "manirec notice".to_owned(),
        };
        o.insert("text".into(), Value::String(text.clone()));
        o.entry("content").or_insert(Value::String(text));
    }
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
