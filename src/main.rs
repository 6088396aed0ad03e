//! The `conflux` binary: parse, validate, run, and map the result to an exit code.
//! Signals are turned into a cancellation token (SIGTERM, SIGINT) and reload
//! requests (SIGHUP) here and nowhere else. Without a subcommand it runs the daemon
//! (or `--onetime`); `conflux register` runs [`conflux::register`], `conflux lint`
//! [`conflux::lint`].

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

use conflux::cli::{Cli, LintArgs, RegisterArgs, Subcommand};
use conflux::config::{Config, LogFormat};
use conflux::{lint, register, run};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const EXIT_FAILED: u8 = 1;
const EXIT_CONFIG: u8 = 2;
/// `--noop --detailed-exitcode`: changes are pending.
const EXIT_PENDING: u8 = 3;

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn main() -> ExitCode {
    // Written when main returns, so after the shutdown a signal asked for.
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let mut cli = match conflux::cli::parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match cli.command.take() {
        None => daemon(cli),
        Some(Subcommand::Register(args)) => registration(&cli, &args),
        Some(Subcommand::Lint(args)) => lint(&cli, &args),
    }
}

fn daemon(cli: Cli) -> ExitCode {
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conflux: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(config.log_level, config.log_format);
    if !config.ignored.is_empty() {
        tracing::warn!(
            settings = %config.ignored.join(", "),
            "confd settings accepted and ignored (backends conflux does not have, client_insecure)"
        );
    }
    let detailed = config.detailed_exitcode;
    let hup = "SIGHUP: reloading the configuration and conf.d";
    let stop = "stopping: no new applies; waiting for the one under way";
    with_signals(hup, stop, |reloads, shutdown| async move {
        let reconfigure: run::ConfigSource = Box::new(move || Config::load(&cli));
        match run::run(config, reconfigure, reloads, shutdown).await {
            Ok(report) if detailed && report.failed == 0 && report.pending > 0 => {
                ExitCode::from(EXIT_PENDING)
            }
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

/// `conflux register`: exits 0 when stopped by a signal (the lease revoked).
fn registration(cli: &Cli, args: &RegisterArgs) -> ExitCode {
    let setup = match register::load(cli, args) {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("conflux register: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    init_logging(setup.config.log_level, setup.config.log_format);
    let hup = "SIGHUP ignored: conflux register has nothing to reload (restart it to change the registration)";
    let stop = "stopping: revoking the lease";
    with_signals(hup, stop, |_reloads, shutdown| async move {
        match register::run(setup, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(cause = %e, "conflux register stopped");
                ExitCode::from(e.exit_code())
            }
        }
    })
}

/// `conflux lint`: the findings on stdout, one per line; exit 1 when the confdir fails
/// (an error, or any finding with `--strict`). Logs stay on stderr, warnings only.
fn lint(cli: &Cli, args: &LintArgs) -> ExitCode {
    init_logging(tracing::Level::WARN, LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("conflux: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let report = runtime.block_on(lint::run(cli, args));
    let json = args.format == "json";
    let written = lint::finding::write(&mut std::io::stdout().lock(), &report.findings, json);
    if let Err(e) = written {
        eprintln!("conflux lint: cannot write the findings: {e}");
        return ExitCode::from(EXIT_FAILED);
    }
    if report.failed(args.strict) {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Builds the runtime, installs the signal handlers (logging `hup` and `stop` when
/// those arrive) and runs `body` with the reload requests and the shutdown token.
fn with_signals<F, Fut>(hup: &'static str, stop: &'static str, body: F) -> ExitCode
where
    F: FnOnce(mpsc::Receiver<()>, CancellationToken) -> Fut,
    Fut: Future<Output = ExitCode>,
{
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
        match signals(shutdown.clone(), hup, stop) {
            Ok(reloads) => body(reloads, shutdown).await,
            Err(e) => {
                tracing::error!(cause = %e, "cannot install signal handlers");
                ExitCode::from(EXIT_FAILED)
            }
        }
    })
}

/// SIGTERM and SIGINT cancel `shutdown`; SIGHUP sends a reload request (a daemon reads
/// the configuration and conf.d again; nobody listens in `conflux register`).
fn signals(
    shutdown: CancellationToken,
    hup_message: &'static str,
    stop_message: &'static str,
) -> std::io::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => stop(&shutdown, "SIGTERM", stop_message),
                _ = int.recv() => stop(&shutdown, "SIGINT", stop_message),
                _ = hup.recv() => {
                    tracing::info!("{hup_message}");
                    // A reload already queued covers this one too.
                    let _ = tx.try_send(());
                }
            }
        }
    });
    Ok(rx)
}

fn stop(shutdown: &CancellationToken, signal: &str, message: &str) {
    if shutdown.is_cancelled() {
        tracing::warn!(
            signal,
            "already stopping: waiting for what is under way to finish"
        );
    } else {
        tracing::info!(signal, "{message}");
        shutdown.cancel();
    }
}

/// Logs on stderr (stdout is for what scripts read): text for people, or one JSON
/// object per line (timestamp, level, message, the event's fields and those of the
/// span it happened in, such as the resource and revision of an apply).
fn init_logging(level: tracing::Level, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
