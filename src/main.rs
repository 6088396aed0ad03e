//! The `conflux` binary: parse, validate, run, and map the result to an exit code.
//! Signals are turned into a cancellation token (SIGTERM, SIGINT) and reload
//! requests (SIGHUP) here and nowhere else.

use std::io::IsTerminal;
use std::process::ExitCode;

use conflux::config::Config;
use conflux::run;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    // Written when main returns, so after the shutdown a signal asked for.
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = match conflux::cli::parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conflux: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("conflux: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let reloads = match signals(shutdown.clone()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(cause = %e, "cannot install signal handlers");
                return ExitCode::from(EXIT_FAILED);
            }
        };
        let reconfigure: run::ConfigSource = Box::new(move || Config::load(&cli));
        match run::run(config, reconfigure, reloads, shutdown).await {
            Ok(report) if report.failed == 0 => ExitCode::SUCCESS,
            Ok(report) => {
                tracing::error!(
                    failed = report.failed,
                    applied = report.applied,
                    "some resources failed"
                );
                ExitCode::from(EXIT_FAILED)
            }
            Err(e) => {
                tracing::error!(cause = %e, "cannot run");
                ExitCode::from(EXIT_CONFIG)
            }
        }
    })
}

/// SIGTERM and SIGINT cancel `shutdown` (the daemon lets an apply under way finish);
/// SIGHUP asks for the configuration and conf.d to be read again.
fn signals(shutdown: CancellationToken) -> std::io::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => stop(&shutdown, "SIGTERM"),
                _ = int.recv() => stop(&shutdown, "SIGINT"),
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration and conf.d");
                    // A reload already queued covers this one too.
                    let _ = tx.try_send(());
                }
            }
        }
    });
    Ok(rx)
}

fn stop(shutdown: &CancellationToken, signal: &str) {
    if shutdown.is_cancelled() {
        tracing::warn!(
            signal,
            "already stopping: waiting for the apply under way to finish"
        );
    } else {
        tracing::info!(
            signal,
            "stopping: no new applies; waiting for the one under way"
        );
        shutdown.cancel();
    }
}

fn init_logging(level: tracing::Level) {
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
