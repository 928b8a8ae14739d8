//! Delivering notifications: each `[[notify]]` receiver gets the events it
//! asked for from the journal's outbox (at least once, oldest first, with
//! backoff while it is down, across restarts), and `agent.healthcheck_url`
//! gets a ping after uploads (at most once a minute; `<url>/fail` after a
//! failure). A task of its own: a slow or dead receiver never holds an
//! upload back. URLs are secrets: logs show their host only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Live;
use crate::config::{NotifyFormat, Settings, redact_url};
use crate::journal::{Journal, OutboxRow};

/// The settings in force: the agent publishes each config it switches to;
/// notifications and the control plane read the newest.
pub type Current = tokio::sync::watch::Receiver<Arc<Settings>>;

/// At most this many deliveries per round.
const BATCH: usize = 64;

/// Pings no more often than this.
const PING_EVERY: Duration = Duration::from_secs(60);

/// The wait before delivery attempt `attempts + 1`: 5 s doubling to 10 min.
pub fn backoff(attempts: u32, now_ms: i64) -> Duration {
    let base = 5u64.saturating_mul(1u64 << attempts.min(7)).min(600);
    Duration::from_secs(base) + Duration::from_millis((now_ms.unsigned_abs() % 1000) * base / 8)
}

/// The request body a receiver gets for a stored event.
pub fn body(format: NotifyFormat, event: &str) -> String {
    match format {
        NotifyFormat::Json => event.to_string(),
        NotifyFormat::Slack => {
            let v: Value = serde_json::from_str(event).unwrap_or(Value::Null);
            json!({ "text": crate::text::slack(&super::events::text(&v)) }).to_string()
        }
    }
}

/// Runs until `stop`: delivers what is due, sleeps until the next is due
/// (or something new arrives), and pings the healthcheck.
pub async fn run(journal: Journal, current: Current, live: Arc<Live>, stop: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("autorender-sync/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("notifications are off: cannot build an HTTP client ({e})");
            return;
        }
    };
    let mut last_ping: Option<Instant> = None;
    loop {
        let settings = current.borrow().clone();
        if let Err(e) = deliver_due(&journal, &settings, &client).await {
            tracing::warn!("notifications: {e}");
        }
        let ping_at = ping(&client, &settings, &live, &mut last_ping).await;
        let next_ms = journal.outbox_next().await.ok().flatten();
        let mut wake = Instant::now() + Duration::from_secs(300);
        if let Some(t) = next_ms {
            let left = (t - crate::clock::system_ms()).max(0) as u64;
            wake = wake.min(Instant::now() + Duration::from_millis(left));
        }
        if let Some(t) = ping_at {
            wake = wake.min(t);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = live.outbox.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Delivers the due notifications; a receiver that fails is not asked
/// again this round (its later events wait with it, in order).
pub async fn deliver_due(
    journal: &Journal,
    settings: &Settings,
    client: &reqwest::Client,
) -> Result<usize, crate::journal::JournalError> {
    let now = crate::clock::system_ms();
    let rows = journal.outbox_due(now, BATCH).await?;
    let mut down: std::collections::HashSet<i64> = std::collections::HashSet::new();
    let mut delivered = 0;
    for row in rows {
        let Some(target) = settings.notify.get(row.target.max(0) as usize) else {
            // Its [[notify]] entry was removed from the config.
            journal.outbox_delivered(row.id).await?;
            continue;
        };
        if down.contains(&row.target) {
            let wait = backoff(row.attempts, now);
            journal
                .outbox_retry(
                    row.id,
                    now + wait.as_millis() as i64,
                    "its receiver is down".into(),
                )
                .await?;
            continue;
        }
        match post(client, &target.url, body(target.format, &row.body)).await {
            Ok(()) => {
                journal.outbox_delivered(row.id).await?;
                delivered += 1;
            }
            Err(why) => {
                down.insert(row.target);
                failed(journal, &row, &target.url, why, now).await?;
            }
        }
    }
    Ok(delivered)
}

async fn failed(
    journal: &Journal,
    row: &OutboxRow,
    url: &url::Url,
    why: String,
    now: i64,
) -> Result<(), crate::journal::JournalError> {
    let wait = backoff(row.attempts, now);
    let line = format!(
        "notification {} to {} not delivered ({why}); trying again in {}s",
        row.event,
        redact_url(url),
        wait.as_secs()
    );
    if row.attempts == 0 {
        tracing::warn!("{line}");
    } else {
        tracing::debug!("{line}");
    }
    journal
        .outbox_retry(row.id, now + wait.as_millis() as i64, why)
        .await
}

async fn post(client: &reqwest::Client, url: &url::Url, body: String) -> Result<(), String> {
    let answer = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| without_url(&e))?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", answer.status().as_u16()))
    }
}

/// reqwest's error text names the URL; a webhook URL is a secret.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Pings the healthcheck if one is owed and a minute has passed since the
/// last; returns when to try again if one is owed but not yet due.
async fn ping(
    client: &reqwest::Client,
    settings: &Settings,
    live: &Live,
    last: &mut Option<Instant>,
) -> Option<Instant> {
    use std::sync::atomic::Ordering;
    let url = settings.agent.healthcheck_url.as_ref()?;
    let owed = live.ping.load(Ordering::Relaxed);
    if owed == 0 {
        return None;
    }
    if let Some(at) = *last
        && at.elapsed() < PING_EVERY
    {
        return Some(at + PING_EVERY);
    }
    let target = if owed == 2 {
        let mut u = url.clone();
        let path = format!("{}/fail", u.path().trim_end_matches('/'));
        u.set_path(&path);
        u
    } else {
        url.clone()
    };
    *last = Some(Instant::now());
    match client.get(target).send().await {
        Ok(a) if a.status().is_success() => {
            // Only what was owed when the ping went out is paid.
            let _ = live
                .ping
                .compare_exchange(owed, 0, Ordering::Relaxed, Ordering::Relaxed);
            None
        }
        Ok(a) => {
            tracing::warn!(
                "healthcheck {} answered HTTP {}",
                redact_url(url),
                a.status().as_u16()
            );
            Some(Instant::now() + PING_EVERY)
        }
        Err(e) => {
            tracing::warn!(
                "healthcheck {} not reached ({})",
                redact_url(url),
                without_url(&e)
            );
            Some(Instant::now() + PING_EVERY)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_ten_minutes() {
        assert_eq!(backoff(0, 0), Duration::from_secs(5));
        assert_eq!(backoff(1, 0), Duration::from_secs(10));
        assert!(backoff(30, 999) <= Duration::from_secs(600 + 75));
        assert!(backoff(30, 0) >= Duration::from_secs(600));
    }

    #[test]
    fn slack_gets_a_line_of_text() {
        let e = super::super::Event::new("failed", 0).path(std::path::Path::new("/d/a.mov"));
        let mut e = serde_json::to_value(&e).unwrap();
        e["error"] = "refused by the service (400): bad".into();
        let b: Value = serde_json::from_str(&body(NotifyFormat::Slack, &e.to_string())).unwrap();
        let text = b["text"].as_str().unwrap();
        assert!(
            text.contains("upload failed: /d/a.mov: refused by the service"),
            "{text}"
        );
        assert_eq!(body(NotifyFormat::Json, "{\"a\":1}"), "{\"a\":1}");
        // A name or an error cannot mention, link or format in Slack.
        let e = super::super::Event::new("failed", 0)
            .path(std::path::Path::new("/d/<!channel> & <http://x|y>\u{1b}[2J.mov"));
        let b: Value = serde_json::from_str(&body(
            NotifyFormat::Slack,
            &serde_json::to_value(&e).unwrap().to_string(),
        ))
        .unwrap();
        let text = b["text"].as_str().unwrap();
        assert!(
            text.contains("&lt;!channel&gt; &amp; &lt;http://x|y&gt;\\u{1b}[2J.mov"),
            "{text}"
        );
        assert!(!text.contains('<') && !text.contains('\u{1b}'), "{text}");
    }
}
