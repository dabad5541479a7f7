//! How the long-running plugin processes (`kstash kms-plugin`, `kstash
//! csi-provider`) run: logging, umask 077 (no socket or file of theirs is
//! born readable by others), a multi-threaded runtime, and SIGTERM or
//! SIGINT as the signal to stop.

use std::future::Future;

use anyhow::Context;

/// Start logging, set umask 077, and run `serve` on a new runtime to its
/// end (it waits for [`stop_signal`] itself, then shuts down).
pub(super) fn run_plugin<F>(serve: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    crate::server::init_logging(crate::config::DEFAULT_LOG);
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve)
}

/// Wait for SIGTERM or SIGINT, then log that the process stops.
pub(super) async fn stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping");
    Ok(())
}
