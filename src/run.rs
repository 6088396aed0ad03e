//! A run of conflux from a validated [`Config`]: set up the template set, the
//! resources and the backend, then either apply everything once (`--onetime`) or hand
//! over to the daemon, with the real pipeline behind the scheduler's [`Applier`]. The
//! result is a [`Report`] or a [`RunError`]; `main` turns them into exit codes (0 all
//! applied, 1 some resource failed, 2 configuration).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backend::{Backend, BackendError};
use crate::confdir::{Confdir, ConfdirError};
use crate::config::{BackendConfig, Config, ConfigError, Mode};
use crate::daemon;
use crate::kv::Snapshot;
use crate::pipeline::{self, ApplyError, Outcome};
use crate::resource::Resource;
use crate::retry::{self, Backoff};
use crate::scheduler::{Applier, ApplyResult};
use crate::template::Templates;

/// What a run did, for the exit code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Resources applied (updated or already up to date).
    pub applied: usize,
    /// Resources that failed, including resource files that could not be loaded.
    pub failed: usize,
}

/// Nothing could be attempted: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Confdir(#[from] ConfdirError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("apply task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Builds the configured backend (connecting to etcd).
pub async fn connect_backend(config: &Config) -> Result<Arc<dyn Backend>, BackendError> {
    use crate::backend::{env::EnvBackend, etcd, file::FileBackend};
    Ok(match &config.backend {
        BackendConfig::File { paths, filter } => {
            Arc::new(FileBackend::new(paths.clone(), filter.clone()))
        }
        BackendConfig::Env => Arc::new(EnvBackend::new()),
        BackendConfig::Etcd(e) => Arc::new(etcd::EtcdBackend::connect(etcd_options(e)).await?),
    })
}

fn etcd_options(e: &crate::config::EtcdConfig) -> crate::backend::etcd::EtcdOptions {
    crate::backend::etcd::EtcdOptions {
        endpoints: e.nodes.clone(),
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
    let set = Confdir::load(&config)?;
    set.log_problems(&config.conf_d());
    match config.mode {
        Mode::Onetime => onetime(&config, set).await,
        Mode::Watch | Mode::Interval(_) => {
            run_daemon(config, set, reconfigure, reload_requests, shutdown).await
        }
    }
}

async fn run_daemon(
    config: Config,
    set: Confdir,
    reconfigure: ConfigSource,
    reload_requests: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) -> Result<Report, RunError> {
    let Some(backend) = connect_with_retry(&config, &shutdown).await? else {
        return Ok(Report::default());
    };
    let mode = match config.mode {
        Mode::Interval(every) => daemon::Mode::Interval(every),
        _ => daemon::Mode::Watch,
    };
    let mut options = daemon::Options::new(mode);
    options.wait = config.wait;
    let scheduled = scheduled_set(&config, set);
    let load = loader(config, reconfigure);
    daemon::run(backend, scheduled, load, reload_requests, options, shutdown)
        .await
        .map_err(|daemon::DaemonError::Backend(e)| RunError::Backend(e))?;
    Ok(Report::default())
}

/// Connects to the backend, retrying while it is away (a daemon may start before etcd);
/// `None` when shut down first.
async fn connect_with_retry(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<dyn Backend>>, RunError> {
    let mut backoff = Backoff::new(retry::BACKEND);
    loop {
        let delay = backoff.next_delay();
        match connect_backend(config).await {
            Ok(b) => return Ok(Some(b)),
            Err(e) if e.is_transient() => {
                warn!(cause = %e, retry_in = ?delay, "cannot connect to the backend")
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The daemon's view of a confdir: its resources and the pipeline that applies them.
fn scheduled_set(config: &Config, set: Confdir) -> crate::scheduler::ResourceSet {
    crate::scheduler::ResourceSet {
        resources: set.resources,
        applier: Arc::new(PipelineApplier {
            templates: set.templates,
            options: pipeline_options(config),
        }),
    }
}

/// SIGHUP: the configuration and conf.d again. A set with a broken resource file or
/// template is refused as a whole, so a half-edited confdir never replaces a working one.
fn loader(running: Config, reconfigure: ConfigSource) -> daemon::Loader {
    Box::new(move || {
        let config = reconfigure().map_err(|e| e.to_string())?;
        if config.backend != running.backend {
            warn!("backend settings changed: they take effect when conflux restarts");
        }
        let set = Confdir::load(&config).map_err(|e| e.to_string())?;
        set.log_problems(&config.conf_d());
        let broken_templates = set.templates.errors().count();
        if !set.errors.is_empty() || broken_templates > 0 {
            return Err(format!(
                "{} broken resource file(s) and {broken_templates} broken template(s)",
                set.errors.len()
            ));
        }
        Ok(scheduled_set(&config, set))
    })
}

/// The real [`Applier`]: one pipeline pass against the snapshot.
struct PipelineApplier {
    templates: Arc<Templates>,
    options: pipeline::Options,
}

impl Applier for PipelineApplier {
    fn apply(&self, resource: &Resource, snapshot: &Arc<Snapshot>) -> ApplyResult {
        let store = crate::store::Store::cut(snapshot, &resource.prefix, &resource.selectors);
        match pipeline::apply(resource, &self.templates, &store, &self.options) {
            Ok(Outcome::Updated { .. } | Outcome::Reloaded { .. }) => {
                ApplyResult::Ok { changed: true }
            }
            Ok(Outcome::WouldUpdate { diff }) => {
                use std::io::Write;
                let _ = std::io::stdout().lock().write_all(diff.as_bytes());
                ApplyResult::Ok { changed: false }
            }
            Ok(Outcome::Unchanged) => ApplyResult::Ok { changed: false },
            Err(e @ ApplyError::Reload { .. }) => ApplyResult::Failed {
                reload_owed: true,
                message: e.to_string(),
            },
            Err(e) => ApplyResult::Failed {
                reload_owed: false,
                message: e.to_string(),
            },
        }
    }

    fn reload(&self, resource: &Resource) -> Result<(), String> {
        pipeline::reload(resource)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

async fn onetime(config: &Config, set: Confdir) -> Result<Report, RunError> {
    // A backend that is away fails this run (exit 1: try again later); one that refuses
    // the settings (credentials, TLS files with http://) is a configuration error (2).
    let backend = match connect_backend(config).await {
        Ok(b) => b,
        Err(e) if e.is_transient() => return Ok(all_failed(&set, &e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let snapshot = match backend.snapshot(&set.selectors()).await {
        Ok(s) => s,
        Err(e) => return Ok(all_failed(&set, &e.to_string())),
    };
    info!(
        backend = backend.name(),
        revision = snapshot.revision,
        keys = snapshot.kvs.len(),
        "snapshot read"
    );
    let options = pipeline_options(config);
    let outcomes =
        tokio::task::spawn_blocking(move || apply_all(&set, &snapshot, &options)).await?;
    Ok(outcomes)
}

fn all_failed(set: &Confdir, cause: &str) -> Report {
    error!(cause, "cannot read keys; no resource applied");
    Report {
        applied: 0,
        failed: set.resources.len() + set.errors.len(),
    }
}

/// Applies every resource against one snapshot, several at a time (fsync dominates a
/// first run, and the disk takes concurrent fsyncs better than a queue of them). Noop
/// diffs go to stdout in resource order.
pub fn apply_all(set: &Confdir, snapshot: &Snapshot, options: &pipeline::Options) -> Report {
    let results: Vec<_> = parallel_map(&set.resources, |r| {
        let store = crate::store::Store::cut(snapshot, &r.prefix, &r.selectors);
        pipeline::apply(r, &set.templates, &store, options)
    });
    let mut report = Report {
        applied: 0,
        failed: set.errors.len(),
    };
    let mut stdout = std::io::stdout().lock();
    for (resource, result) in set.resources.iter().zip(results) {
        match result {
            Ok(Outcome::WouldUpdate { diff }) => {
                use std::io::Write;
                let _ = stdout.write_all(diff.as_bytes());
                report.applied += 1;
            }
            Ok(_) => report.applied += 1,
            Err(e) => {
                error!(resource = %resource.name, cause = %e, "apply failed");
                report.failed += 1;
            }
        }
    }
    report
}

/// `f` over `items` on a few threads, results in the order of `items`.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = items.len().clamp(1, 8);
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = Vec::new();
    results.resize_with(items.len(), || None);
    let slots: Vec<std::sync::Mutex<&mut Option<R>>> =
        results.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    **slots[i]
                        .lock()
                        .expect("no worker panics while holding a slot") = Some(r);
                }
            });
        }
    });
    drop(slots);
    results
        .into_iter()
        .map(|r| r.expect("every index was taken by a worker"))
        .collect()
}
