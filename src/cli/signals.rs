//! Stop signals, one way for every command: SIGINT/SIGTERM (Ctrl-C on
//! Windows) caught from the moment a command installs them.

use tokio_util::sync::CancellationToken;

/// SIGINT and SIGTERM, caught from the moment this is made: a stop signal
/// that arrives during start-up is a clean stop, not the default kill.
pub struct StopSignals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Installs the handlers now (inside a Tokio runtime).
    pub fn install() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Resolves on the next Ctrl-C or SIGTERM.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.int) => {},
                _ = recv(&mut self.term) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    StopSignals::install().next().await
}

/// First SIGINT/SIGTERM: stop cleanly. Second: exit now (the journal is
/// crash-safe, so nothing is corrupted).
pub async fn stop_on_signals(mut signals: StopSignals, token: CancellationToken) {
    signals.next().await;
    tracing::info!(
        "stopping: in-flight uploads are checkpointed and resume on the next start (signal again to quit at once)"
    );
    token.cancel();
    signals.next().await;
    eprintln!("quitting at once");
    std::process::exit(130);
}
