//! Stop signals, one way for every command: SIGINT/SIGTERM/SIGHUP (Ctrl-C
//! on Windows) caught from the moment a command installs them. SIGHUP (the
//! terminal closed, or a service manager's "reload") is a clean stop too,
//! unless it is ignored (`nohup`): then it stays ignored.

use tokio_util::sync::CancellationToken;

/// SIGINT and SIGTERM, caught from the moment this is made: a stop signal
/// that arrives during start-up is a clean stop, not the default kill.
pub struct StopSignals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
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
                hup: if hangup_ignored() {
                    None
                } else {
                    signal(SignalKind::hangup()).ok()
                },
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Resolves on the next Ctrl-C, SIGTERM or SIGHUP.
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
                _ = recv(&mut self.hup) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Was this process started with SIGHUP ignored (`nohup`)?
#[cfg(unix)]
fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one
    // into `old`, which is a plain C struct we own.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP.
pub async fn shutdown_signal() {
    StopSignals::install().next().await
}

/// First SIGINT/SIGTERM/SIGHUP: stop cleanly. Second: exit now (the journal is
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
