//! A run of conflux from a validated [`Config`]: open the state directory, load the
//! confdir, connect the backend, and hand everything to the one loop
//! ([`crate::daemon`]) with the real [`Pipeline`] behind the scheduler, whatever the
//! mode. The result is a [`Report`] or a [`RunError`]; `main` turns them into exit
//! codes (0 all applied, 1 some resource failed, 2 configuration).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backend::{Backend, BackendError};
use crate::confdir::{Confdir, ConfdirError};
use crate::config::{BackendConfig, Config, ConfigError, EtcdConfig, Mode, SrvDiscovery};
use crate::daemon::{self, ConfdirPaths, DaemonError, Report};
use crate::pipeline::{self, InPlace, Pipeline, overlay};
use crate::resource::Resource;
use crate::retry::{self, Backoff};
use crate::scheduler::{DEFAULT_CONCURRENCY, ResourceSet, Settings};
use crate::state::{self, StateDir, StateError};
use crate::systemd::Systemd;
use crate::telemetry::Telemetry;

/// Nothing could be attempted: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Confdir(#[from] ConfdirError),
    #[error(transparent)]
    State(#[from] StateError),
    /// The backend refuses the settings (credentials, TLS), or failed for good.
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Http(#[from] crate::http::BindError),
}

/// Reads the configuration again (config file, environment, flags), for SIGHUP.
pub type ConfigSource = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Runs until done (`--onetime`) or until `shutdown` is cancelled (the daemon modes,
/// where each message on `reload_requests` re-reads the configuration and conf.d).
pub async fn run(
    config: Config,
    reconfigure: ConfigSource,
    reload_requests: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) -> Result<Report, RunError> {
    // noop writes nothing, not even conflux's own state.
    let state = StateDir::open(&config.state_dir, !config.noop)?;
    let set = Confdir::load(&config)?;
    set.log_problems(&config.conf_d());
    if !config.noop {
        state::migrate_markers(&state, &set.resources);
    }
    let probe = Probe::default();
    let in_place = in_place(&config, &state, &set.resources, &probe);
    // Before anything else: a swap a stopped process left half done is completed or
    // undone, so that every pass starts from one whole set.
    Pipeline::new(
        Arc::clone(&set.templates),
        state.clone(),
        pipeline_options(&config, in_place),
    )
    .recover(&set.resources);
    let broken = set.errors.len();
    let resources = set.resources.len();
    let (telemetry, systemd, beat_every) = operations(&config);
    let http = serve_http(&config, &telemetry, &shutdown).await?;
    let all_failed = |cause: &BackendError| {
        error!(cause = %cause, "cannot read keys; no resource applied");
        Report {
            failed: resources + broken,
            ..Report::default()
        }
    };
    let backend = match connect(&config, &shutdown).await {
        Ok(Some(backend)) => backend,
        Ok(None) => return Ok(Report::default()),
        Err(e) if e.is_transient() => return Ok(all_failed(&e)),
        Err(e) => return Err(e.into()),
    };
    let options = daemon::Options {
        mode: config.mode,
        settings: Settings {
            wait: config.wait,
            concurrency: DEFAULT_CONCURRENCY,
            retries: true,
        },
        telemetry,
        systemd,
        beat_every,
        confdir: config.watch_confdir.then(|| ConfdirPaths {
            conf_d: config.conf_d(),
            templates: config.templates_dir(),
            config_file: Some(config.config_file.clone()),
        }),
        stall_file: std::env::var_os(STALL_FILE_ENV).map(PathBuf::from),
    };
    let scheduled = scheduled_set(&config, set, state, in_place);
    let load = loader(config.clone(), reconfigure, probe);
    let result = daemon::run(
        backend,
        scheduled,
        load,
        reload_requests,
        options,
        shutdown.clone(),
    )
    .await;
    if let Some(http) = http {
        http.cancel.cancel();
        let _ = http.task.await;
    }
    match (result, config.mode) {
        (Ok(mut report), Mode::Onetime) => {
            report.failed += broken;
            Ok(report)
        }
        // A daemon stopped by a signal exits 0, whatever its resources' last passes:
        // it did what it was asked until then.
        (Ok(_), _) => Ok(Report::default()),
        // A one-shot run whose read failed applied nothing: exit 1 when the backend is
        // away (try again later), 2 when it refuses for good (a data file that does
        // not parse, a user without permission): retrying would not help.
        (Err(DaemonError::Backend(e)), Mode::Onetime) if e.is_transient() => Ok(all_failed(&e)),
        (Err(DaemonError::Backend(e)), _) => Err(e.into()),
    }
}

/// The environment variable that names the test hook's stall file (see
/// [`daemon::Options::stall_file`]). Not a setting: only tests use it.
const STALL_FILE_ENV: &str = "CONFLUX_TEST_STALL_FILE";

/// The telemetry every consumer reads, systemd's socket, and how often the loop must
/// beat for them (`None` when nothing listens: then it never wakes up for nothing).
fn operations(config: &Config) -> (Arc<Telemetry>, Systemd, Option<Duration>) {
    let systemd = Systemd::from_env();
    let daemon = config.mode != Mode::Onetime;
    let beat_every = match (
        daemon && config.metrics_addr.is_some(),
        systemd.watchdog_every(),
    ) {
        (_, Some(watchdog)) if daemon => Some(watchdog.min(BEAT)),
        (true, None) => Some(BEAT),
        _ => None,
    };
    let telemetry = Arc::new(if daemon && config.metrics_addr.is_some() {
        Telemetry::new(beat_every)
    } else {
        Telemetry::without_metrics(beat_every)
    });
    let (name, endpoints) = match &config.backend {
        BackendConfig::Etcd(e) => ("etcdv3", e.nodes.clone()),
        BackendConfig::File { paths, .. } => (
            "file",
            paths.iter().map(|p| p.display().to_string()).collect(),
        ),
        BackendConfig::Env => ("env", Vec::new()),
    };
    telemetry.backend(name, endpoints);
    telemetry.confdir(config.confdir.clone());
    (telemetry, systemd, beat_every)
}

/// How often the loop beats when something listens.
const BEAT: Duration = Duration::from_secs(1);

/// The HTTP endpoint's task and its stop switch.
struct Http {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Opens `--metrics-addr` (daemon modes only), before the backend is reached, so that
/// `/health` and `/ready` answer while conflux waits for it.
async fn serve_http(
    config: &Config,
    telemetry: &Arc<Telemetry>,
    shutdown: &CancellationToken,
) -> Result<Option<Http>, RunError> {
    let Some(addr) = config.metrics_addr.clone() else {
        return Ok(None);
    };
    if config.mode == Mode::Onetime {
        warn!(addr = %addr, "--metrics-addr is ignored by --onetime runs");
        return Ok(None);
    }
    // Its own token: the endpoint stays up while the loop drains after a shutdown.
    let cancel = CancellationToken::new();
    let (local, serve) = crate::http::bind(&addr, Arc::clone(telemetry), cancel.clone()).await?;
    tracing::info!(addr = %local, "serving /metrics, /health, /ready and /status");
    let _ = shutdown;
    Ok(Some(Http {
        cancel,
        task: tokio::spawn(serve),
    }))
}

/// Connects to the backend. A daemon may start before etcd: it retries while the
/// backend is away (`None` when shut down first). A one-shot run does not wait: the
/// error comes back, and the caller fails the run (exit 1) for a backend that is away,
/// or stops (exit 2) for one that refuses the settings (credentials, TLS files with
/// http://).
async fn connect(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<dyn Backend>>, BackendError> {
    let mut backoff = Backoff::new(retry::BACKEND);
    loop {
        match connect_backend(config).await {
            Ok(b) => return Ok(Some(b)),
            Err(e) if e.is_transient() && config.mode != Mode::Onetime => {
                let delay = backoff.next_delay();
                warn!(cause = %e, retry_in = ?delay, "cannot connect to the backend");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Builds the configured backend (connecting to etcd).
pub async fn connect_backend(config: &Config) -> Result<Arc<dyn Backend>, BackendError> {
    use crate::backend::{env::EnvBackend, etcd, file::FileBackend};
    Ok(match &config.backend {
        BackendConfig::File { paths, filter } => {
            Arc::new(FileBackend::new(paths.clone(), filter.clone()))
        }
        BackendConfig::Env => Arc::new(EnvBackend::new()),
        BackendConfig::Etcd(e) => {
            let endpoints = etcd_endpoints(e).await?;
            Arc::new(etcd::EtcdBackend::connect(etcd_options(e, endpoints)).await?)
        }
    })
}

/// The etcd endpoints to connect to: `--node`s, or those of the DNS SRV record when
/// one is configured (confd's `-srv-domain`/`-srv-record`), for the daemon and for
/// `conflux register` alike.
pub async fn etcd_endpoints(e: &EtcdConfig) -> Result<Vec<String>, BackendError> {
    match &e.srv {
        Some(srv) => srv_endpoints(srv).await,
        None => Ok(e.nodes.clone()),
    }
}

/// The etcd endpoints in the SRV record, looked up at every connection as confd
/// looks them up at start. A failed lookup is transient: DNS may come back, and a
/// daemon retries as it does for an etcd that is away.
async fn srv_endpoints(srv: &SrvDiscovery) -> Result<Vec<String>, BackendError> {
    let record = srv.record.clone();
    let lookup = tokio::task::spawn_blocking(move || {
        crate::template::lookup_srv_record(&record, SRV_TIMEOUT)
    })
    .await;
    let fail = |message: String| BackendError::Transient {
        backend: "etcdv3",
        message: format!("cannot get nodes from SRV record {}: {message}", srv.record).into(),
    };
    let targets = match lookup {
        Ok(Ok(targets)) => targets,
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Err(e) => return Err(fail(e.to_string())),
    };
    if targets.is_empty() {
        return Err(fail("no records".into()));
    }
    let endpoints = srv.endpoints(&targets);
    info!(record = %srv.record, ?endpoints, "etcd endpoints from DNS SRV");
    Ok(endpoints)
}

/// How long the SRV lookup of the endpoints may take.
const SRV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The etcd client settings of a validated etcd configuration (also `conflux
/// register`'s, so that both reach etcd the same way).
pub fn etcd_options(e: &EtcdConfig, endpoints: Vec<String>) -> crate::backend::etcd::EtcdOptions {
    crate::backend::etcd::EtcdOptions {
        endpoints,
        username: e.username.clone(),
        password: e.password.clone(),
        ca_file: e.client_ca_keys.clone(),
        cert_file: e.client_cert.clone(),
        key_file: e.client_key.clone(),
        ..Default::default()
    }
}

pub fn pipeline_options(config: &Config, in_place: InPlace) -> pipeline::Options {
    pipeline::Options {
        noop: config.noop,
        sync_only: config.sync_only,
        keep_stage_file: config.keep_stage_file,
        in_place,
    }
}

/// The answer of the overlay probe, once it has run: it runs at most once per process
/// (at start, or at the first SIGHUP that brings a unit with a check), and is said once.
type Probe = Arc<std::sync::OnceLock<InPlace>>;

/// How units are checked in place: an overlay in a private mount namespace where it can
/// be mounted (root, or a user namespace that allows it) and `CONFLUX_CHECK_OVERLAY` is
/// not `off`; else swap, check, restore. Only a set with a unit that has a check asks.
fn in_place(config: &Config, state: &StateDir, resources: &[Resource], probe: &Probe) -> InPlace {
    let needed = !config.noop
        && !config.sync_only
        && resources.iter().any(|r| r.is_unit() && r.check.is_some());
    if !needed {
        return probe.get().copied().unwrap_or_default();
    }
    *probe.get_or_init(|| probe_overlay(state))
}

fn probe_overlay(state: &StateDir) -> InPlace {
    if std::env::var(overlay::DISABLE_ENV).is_ok_and(|v| v == "off") {
        warn!(
            "{}=off: units are checked by swap, check, restore (the new files are live, not reloaded, while check_cmd runs)",
            overlay::DISABLE_ENV
        );
        return InPlace::SwapFirst;
    }
    match overlay::probe(&state.path().join("overlay-probe")) {
        Ok(()) => {
            info!(
                "units are checked in place over an overlay of their new files (private mount namespace)"
            );
            InPlace::Overlay
        }
        Err(cause) => {
            warn!(%cause, "cannot mount an overlay: units are checked by swap, check, restore (the new files are live, not reloaded, while check_cmd runs)");
            InPlace::SwapFirst
        }
    }
}

/// The scheduler's view of a confdir: its resources and the pipeline that applies them.
fn scheduled_set(config: &Config, set: Confdir, state: StateDir, in_place: InPlace) -> ResourceSet {
    ResourceSet {
        resources: set.resources,
        applier: Arc::new(Pipeline::new(
            set.templates,
            state,
            pipeline_options(config, in_place),
        )),
    }
}

/// A new resource set refused on SIGHUP.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Unusable(#[from] RunError),
    #[error("{resources} broken resource file(s) and {templates} broken template(s)")]
    Broken { resources: usize, templates: usize },
}

/// SIGHUP: the configuration and conf.d again. A set with a broken resource file or
/// template is refused as a whole, so a half-edited confdir never replaces a working one.
fn loader(running: Config, reconfigure: ConfigSource, probe: Probe) -> daemon::Loader {
    Box::new(move || {
        let load = || -> Result<ResourceSet, ReloadError> {
            let config = reconfigure().map_err(RunError::from)?;
            if config.backend != running.backend {
                warn!("backend settings changed: they take effect when conflux restarts");
            }
            let state = StateDir::open(&config.state_dir, !config.noop).map_err(RunError::from)?;
            let set = Confdir::load(&config).map_err(RunError::from)?;
            set.log_problems(&config.conf_d());
            // A broken template that no resource renders (a README, a draft) does not
            // hold the reload back: it was warned about.
            let templates = set.broken_templates_in_use().len();
            if !set.errors.is_empty() || templates > 0 {
                return Err(ReloadError::Broken {
                    resources: set.errors.len(),
                    templates,
                });
            }
            if !config.noop {
                state::migrate_markers(&state, &set.resources);
            }
            let in_place = in_place(&config, &state, &set.resources, &probe);
            Ok(scheduled_set(&config, set, state, in_place))
        };
        load().map_err(Into::into)
    })
}
