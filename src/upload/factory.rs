//! Settings → [`Uploader`]: the one way every command (`run`, `upload`,
//! `verify`, `demo`) builds its uploader.

use std::sync::Arc;

use super::{RetryPolicy, Uploader, reconcile};
use crate::api::{ApiError, Client};
use crate::config::Settings;
use crate::limiter::Limiter;
use crate::secrets::ApiKey;
use crate::workspace::Workspace;

impl Uploader {
    /// Settings → (uploader, where its key came from): the key looked up
    /// (its warnings logged), then the uploader built. What every command
    /// that sends does.
    pub fn connect(settings: &Settings) -> Result<(Uploader, crate::secrets::KeySource), String> {
        let (key, source) = crate::secrets::lookup_logged(&settings.api).map_err(|e| e.to_string())?;
        let uploader = Uploader::from_settings(settings, key).map_err(|e| e.to_string())?;
        Ok((uploader, source))
    }

    /// An uploader for `settings`' endpoint and limits, authenticating with `key`.
    pub fn from_settings(settings: &Settings, key: ApiKey) -> Result<Uploader, ApiError> {
        let client = Client::new(settings.api.endpoint.clone(), key, settings.api.request_timeout)?;
        Ok(Uploader {
            workspace: Arc::new(Workspace::new(client.clone())),
            direct_upload_max: settings.agent.direct_upload_max,
            reconcile: reconcile::Window::default(),
            client,
            budget: Arc::new(super::adapt::Budget::new(
                settings.agent.concurrent_parts,
                settings.agent.max_concurrent_parts,
            )),
            // Always one, unlimited or not: a schedule may set a rate later.
            limiter: Some(Arc::new(Limiter::new(settings.agent.bandwidth_limit))),
            url_ttl: settings.api.url_ttl,
            retry: retry_policy(),
            stall_timeout: settings.api.request_timeout,
            throttle: Arc::new(super::throttle::Throttle::new(settings.api.retry_after_max)),
        })
    }
}

/// Retries of one request. `AUTORENDER_SYNC_TEST_RETRIES=N` lowers the count
/// so tests of a long outage do not wait out a minute of backoff per file.
fn retry_policy() -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    if let Some(n) = std::env::var("AUTORENDER_SYNC_TEST_RETRIES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        policy.max_retries = n;
    }
    policy
}
