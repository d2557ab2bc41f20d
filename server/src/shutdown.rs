//! Process signals. Kubernetes stops a pod with SIGTERM; a terminal sends
//! SIGINT. Either starts a graceful drain (see [`crate::run`]). SIGHUP
//! reloads the rules ([`crate::rules::reload`]).

use std::future::Future;

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed when
/// this is called, not when the future is first polled, so a signal that
/// arrives while the server is still starting is not lost (nor fatal). It
/// also installs tokio's SIGHUP handler at once, so that a SIGHUP sent before
/// the rules reloader listens does not kill the process.
pub fn signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        let _ = signal(SignalKind::hangup());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received, draining"),
                        _ = int.recv() => tracing::info!("SIGINT received, draining"),
                    }
                }
                _ => {
                    // Without signal handlers, fall back to Ctrl-C only.
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
