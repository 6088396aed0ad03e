//! A run of conflux from a validated [`Config`]: set up the template set, the
//! resources and the backend, then either apply everything once (`--onetime`) or hand
//! over to the daemon. The result is a [`Report`] or a [`RunError`]; `main` turns
//! them into exit codes (0 all applied, 1 some resource failed, 2 configuration).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backend::Backend;
use crate::config::{BackendConfig, Config, Mode};
use crate::mirror::Snapshot;
use crate::pipeline::{self, Outcome};
use crate::resource::{self, Resource};
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
    #[error("{0}")]
    Setup(String),
}

/// The resources of a confdir with their template set: what one pass applies.
pub struct ResourceSet {
    pub resources: Vec<Resource>,
    pub templates: Arc<Templates>,
    /// Resource files that could not be used (already logged).
    pub broken: usize,
}

impl ResourceSet {
    /// Loads `conf.d` and `templates` of the confdir. Broken resource files are logged
    /// and skipped; a missing confdir, `conf.d` or templates dir is an error.
    pub fn load(config: &Config) -> Result<ResourceSet, RunError> {
        let confdir = &config.confdir;
        require_dir(confdir, "confdir")?;
        require_dir(&config.conf_d(), "resource directory")?;
        require_dir(&config.templates_dir(), "templates directory")?;
        let templates = Templates::load(&config.templates_dir()).map_err(|e| RunError::Setup(e.to_string()))?;
        let layout = resource::Layout { confdir, prefix: &config.prefix };
        let (resources, errors) = resource::load_all(&layout).map_err(|e| RunError::Setup(e.to_string()))?;
        for e in &errors {
            error!(file = %e.file.display(), cause = %e.message, "resource skipped");
        }
        if resources.is_empty() && errors.is_empty() {
            warn!(dir = %config.conf_d().display(), "no resources found");
        }
        Ok(ResourceSet { resources, templates: Arc::new(templates), broken: errors.len() })
    }

    /// Every selector of every resource, merged into the fewest ranges.
    pub fn selectors(&self) -> Vec<String> {
        crate::keys::merge(self.resources.iter().flat_map(|r| r.selectors.iter().cloned()))
    }
}

fn require_dir(path: &Path, what: &str) -> Result<(), RunError> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(RunError::Setup(format!("{what} {} does not exist or is not a directory", path.display())))
    }
}

/// Builds the configured backend (connecting to etcd).
pub async fn connect_backend(config: &Config) -> Result<Arc<dyn Backend>, crate::backend::BackendError> {
    use crate::backend::{env::EnvBackend, etcd, file::FileBackend};
    Ok(match &config.backend {
        BackendConfig::File { paths, filter } => Arc::new(FileBackend::new(paths.clone(), filter.clone())),
        BackendConfig::Env => Arc::new(EnvBackend::new()),
        BackendConfig::Etcd(e) => Arc::new(etcd::EtcdBackend::connect(etcd::EtcdOptions::from_config(e)).await?),
    })
}

pub fn pipeline_options(config: &Config) -> pipeline::Options {
    pipeline::Options {
        noop: config.noop,
        sync_only: config.sync_only,
        keep_stage_file: config.keep_stage_file,
    }
}

/// Runs until done (`--onetime`) or until `shutdown` is cancelled (the daemon modes).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Report, RunError> {
    let set = ResourceSet::load(&config)?;
    match config.mode {
        Mode::Onetime => onetime(&config, set).await,
        Mode::Watch | Mode::Interval(_) => crate::daemon_glue::run(config, set, shutdown).await,
    }
}

async fn onetime(config: &Config, set: ResourceSet) -> Result<Report, RunError> {
    let backend = match connect_backend(config).await {
        Ok(b) => b,
        Err(e) => return Ok(all_failed(&set, &e.to_string())),
    };
    let snapshot = match backend.snapshot(&set.selectors()).await {
        Ok(s) => s,
        Err(e) => return Ok(all_failed(&set, &e.to_string())),
    };
    info!(backend = backend.name(), revision = snapshot.revision, keys = snapshot.kvs.len(), "snapshot read");
    let options = pipeline_options(config);
    let outcomes = tokio::task::spawn_blocking(move || apply_all(&set, &snapshot, &options))
        .await
        .map_err(|e| RunError::Setup(format!("apply task failed: {e}")))?;
    Ok(outcomes)
}

fn all_failed(set: &ResourceSet, cause: &str) -> Report {
    error!(cause, "cannot read keys; no resource applied");
    Report { applied: 0, failed: set.resources.len() + set.broken }
}

/// Applies every resource against one snapshot, several at a time (fsync dominates a
/// first run, and the disk takes concurrent fsyncs better than a queue of them). Noop
/// diffs go to stdout in resource order.
pub fn apply_all(set: &ResourceSet, snapshot: &Snapshot, options: &pipeline::Options) -> Report {
    let results: Vec<_> = parallel_map(&set.resources, |r| {
        let store = snapshot.store(&r.prefix, &r.selectors);
        pipeline::apply(r, &set.templates, &store, options)
    });
    let mut report = Report { applied: 0, failed: set.broken };
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
    let slots: Vec<std::sync::Mutex<&mut Option<R>>> = results.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    **slots[i].lock().expect("no worker panics while holding a slot") = Some(r);
                }
            });
        }
    });
    drop(slots);
    results.into_iter().map(|r| r.expect("every index was taken by a worker")).collect()
}
