//! A run of conflux from a validated [`Config`]: open the state directory, load the
//! confdir, connect the backend, and hand everything to the one loop
//! ([`crate::daemon`]) with the real [`Pipeline`] behind the scheduler, whatever the
//! mode. The result is a [`Report`] or a [`RunError`]; `main` turns them into exit
//! codes (0 all applied, 1 some resource failed, 2 configuration).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backend::{Backend, BackendError};
use crate::confdir::{Confdir, ConfdirError};
use crate::config::{BackendConfig, Config, ConfigError, Mode, SrvDiscovery};
use crate::daemon::{self, DaemonError, Report};
use crate::pipeline::{self, Pipeline};
use crate::retry::{self, Backoff};
use crate::scheduler::{DEFAULT_CONCURRENCY, ResourceSet, Settings};
use crate::state::{self, StateDir, StateError};

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
    let broken = set.errors.len();
    let resources = set.resources.len();
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
    };
    let scheduled = scheduled_set(&config, set, state);
    let load = loader(config.clone(), reconfigure);
    let result = daemon::run(backend, scheduled, load, reload_requests, options, shutdown).await;
    match (result, config.mode) {
        (Ok(mut report), Mode::Onetime) => {
            report.failed += broken;
            Ok(report)
        }
        // A daemon stopped by a signal exits 0, whatever its resources' last passes:
        // it did what it was asked until then.
        (Ok(_), _) => Ok(Report::default()),
        // A one-shot run whose read failed applied nothing: exit 1, try again later.
        (Err(DaemonError::Backend(e)), Mode::Onetime) => Ok(all_failed(&e)),
        (Err(DaemonError::Backend(e)), _) => Err(e.into()),
    }
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
            let endpoints = match &e.srv {
                Some(srv) => srv_endpoints(srv).await?,
                None => e.nodes.clone(),
            };
            Arc::new(etcd::EtcdBackend::connect(etcd_options(e, endpoints)).await?)
        }
    })
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
        message: format!("cannot get nodes from SRV record {}: {message}", srv.record),
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

fn etcd_options(
    e: &crate::config::EtcdConfig,
    endpoints: Vec<String>,
) -> crate::backend::etcd::EtcdOptions {
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

pub fn pipeline_options(config: &Config) -> pipeline::Options {
    pipeline::Options {
        noop: config.noop,
        sync_only: config.sync_only,
        keep_stage_file: config.keep_stage_file,
    }
}

/// The scheduler's view of a confdir: its resources and the pipeline that applies them.
fn scheduled_set(config: &Config, set: Confdir, state: StateDir) -> ResourceSet {
    ResourceSet {
        resources: set.resources,
        applier: Arc::new(Pipeline::new(
            set.templates,
            state,
            pipeline_options(config),
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
fn loader(running: Config, reconfigure: ConfigSource) -> daemon::Loader {
    Box::new(move || {
        let load = || -> Result<ResourceSet, ReloadError> {
            let config = reconfigure().map_err(RunError::from)?;
            if config.backend != running.backend {
                warn!("backend settings changed: they take effect when conflux restarts");
            }
            let state = StateDir::open(&config.state_dir, !config.noop).map_err(RunError::from)?;
            let set = Confdir::load(&config).map_err(RunError::from)?;
            set.log_problems(&config.conf_d());
            let templates = set.template_errors().count();
            if !set.errors.is_empty() || templates > 0 {
                return Err(ReloadError::Broken {
                    resources: set.errors.len(),
                    templates,
                });
            }
            if !config.noop {
                state::migrate_markers(&state, &set.resources);
            }
            Ok(scheduled_set(&config, set, state))
        };
        load().map_err(Into::into)
    })
}
