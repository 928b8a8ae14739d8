//! Stop signals, one way for every command: SIGINT/SIGTERM/SIGHUP (Ctrl-C
//! on Windows) caught from the moment a command installs them. SIGHUP is
//! ignored if it was at start (`nohup`). Otherwise, for most commands it is
//! a clean stop; a running agent (`run`) takes it as "reload the config"
//! (as daemons do), except when it means its terminal closed: then it stops.

use tokio_util::sync::CancellationToken;

/// SIGINT and SIGTERM, caught from the moment this is made: a stop signal
/// that arrives during start-up is a clean stop, not the default kill.
pub struct StopSignals {
    /// A controlling terminal was there at start.
    #[cfg(unix)]
    had_terminal: bool,
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
                had_terminal: terminal_alive(),
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
                hup: if crate::sys::hangup_ignored() {
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
        self.next_kind().await;
    }

    /// The next signal: a stop, or a hangup that did not come from the
    /// controlling terminal closing (a "reload" for a daemon).
    pub async fn next_kind(&mut self) -> Caught {
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
                _ = recv(&mut self.int) => Caught::Stop,
                _ = recv(&mut self.term) => Caught::Stop,
                _ = recv(&mut self.hup) => {
                    if self.had_terminal && !terminal_alive() {
                        Caught::Stop
                    } else {
                        Caught::Hangup
                    }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Caught::Stop
        }
    }
}

/// What [`StopSignals::next_kind`] caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caught {
    Stop,
    /// SIGHUP (Unix only).
    #[cfg_attr(not(unix), allow(dead_code))]
    Hangup,
}

/// Can this process still open its controlling terminal? (After the
/// terminal is closed, or with none, it cannot.)
#[cfg(unix)]
fn terminal_alive() -> bool {
    std::fs::OpenOptions::new().read(true).open("/dev/tty").is_ok()
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP.
pub async fn shutdown_signal() {
    StopSignals::install().next().await
}

/// First SIGINT/SIGTERM/SIGHUP: stop cleanly. Second: exit now (the journal is
/// crash-safe, so nothing is corrupted). With `hangups`, a SIGHUP that is not
/// the terminal closing is passed on there (a reload) instead.
pub async fn stop_on_signals(
    mut signals: StopSignals,
    token: CancellationToken,
    hangups: Option<tokio::sync::mpsc::Sender<()>>,
) {
    while let (Caught::Hangup, Some(tx)) = (signals.next_kind().await, &hangups) {
        let _ = tx.try_send(());
    }
    tracing::info!(
        "stopping: in-flight uploads are checkpointed and resume on the next start (signal again to quit at once)"
    );
    token.cancel();
    signals.next().await;
    eprintln!("quitting at once");
    std::process::exit(130);
}
