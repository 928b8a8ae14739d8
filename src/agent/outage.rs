//! Uploads held back for everyone: the key check at start-up, and the
//! re-check that ends a key-rejected or service-unreachable pause.

use super::*;
use crate::control::Event;

impl Agent {
    /// A rejected key is reported at start-up, not days later when the
    /// first file is ready: `--once` stops at once (exit 3), `run` pauses
    /// uploads and re-checks. One cheap request per start, whatever the
    /// number of files. No answer (no network at boot) is not a reason to
    /// stop: the first upload, once the service answers, tells.
    pub(super) async fn check_key_at_start(&mut self) -> Result<(), AgentError> {
        match self.transfer.check_key().await {
            Ok(()) => tracing::debug!("the API key is accepted"),
            Err(e @ ApiError::Auth { .. }) if self.opts.once => return Err(AgentError::Auth(e.to_string())),
            Err(e @ ApiError::Auth { .. }) => {
                tracing::error!(
                    "{e}; all uploads are paused and the key is re-checked every {}s. Fix the key (then restart, or wait)",
                    AUTH_RECHECK.as_secs()
                );
                self.gate
                    .pause_service(Pause::Auth, self.clock.now() + AUTH_RECHECK);
                let mut ev = Event::new("auth_rejected", self.clock.wall_ms());
                ev.error = Some(e.to_string());
                self.emit(ev).await?;
            }
            Err(e) => tracing::info!("could not check the API key yet ({e}); the first upload will tell"),
        }
        Ok(())
    }

    /// One cheap authenticated call decides whether a pause ends.
    pub(super) async fn recheck_service(&mut self) {
        let Some(reason) = self.gate.take_service_pause() else {
            return;
        };
        match self.transfer.check_key().await {
            Ok(()) => {
                // A new run of failures starts from here.
                self.gate.succeeded();
                match reason {
                    Pause::Auth => tracing::info!("the API key is accepted again; resuming uploads"),
                    Pause::Unreachable { since_ms } => tracing::info!(
                        "the service answers again after {}s; resuming uploads",
                        (self.clock.wall_ms() - since_ms) / 1000
                    ),
                }
                self.dispatch.look_again();
            }
            Err(e @ ApiError::Auth { .. }) => {
                if reason != Pause::Auth {
                    tracing::error!("{e}; all uploads are paused until the key is accepted");
                }
                self.gate
                    .pause_service(Pause::Auth, self.clock.now() + AUTH_RECHECK);
            }
            Err(e) => {
                tracing::debug!("the service is still not answering ({e})");
                let again = if reason == Pause::Auth {
                    AUTH_RECHECK
                } else {
                    OUTAGE_RECHECK
                };
                self.gate.pause_service(reason, self.clock.now() + again);
            }
        }
    }
}

impl Agent {
    /// Is a transient failure of one upload the service being down for
    /// everyone? A failed connection is; otherwise the service is asked
    /// with one cheap request, and a run of failures counts too.
    pub(super) async fn service_down(&mut self, e: &ApiError) -> bool {
        if matches!(e, ApiError::Unreachable(_)) {
            return true;
        }
        let (streak, down) = self.gate.failed();
        if down {
            tracing::debug!("{streak} uploads in a row failed; taking the service as down");
            return true;
        }
        match self.transfer.check_key().await {
            Ok(()) => false,
            Err(check) => {
                tracing::debug!("after a failed upload ({e}), the service's check failed too: {check}");
                check.is_transient()
            }
        }
    }
}
