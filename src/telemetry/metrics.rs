//! The Prometheus metrics of a run, registered once and updated by
//! [`super::Telemetry`] from outcomes and the loop's events; rendered in the text
//! exposition format by the `prometheus` crate (with its process collector for the
//! `process_*` series).
//!
//! Why the `prometheus` crate (TiKV's) rather than `prometheus-client`: both are
//! well kept, and only this one ships the standard process collector (CPU, memory,
//! file descriptors, start time), which would otherwise be hand-written over /proc.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric family conflux exports.
pub struct Metrics {
    registry: Registry,
    pub apply_total: IntCounterVec,
    pub apply_duration: HistogramVec,
    pub apply_failures: IntCounterVec,
    pub reloads_total: IntCounterVec,
    pub resource_revision: IntGaugeVec,
    pub resource_degraded: IntGaugeVec,
    pub resource_last_success: GaugeVec,
    pub backend_revision: IntGauge,
    pub backend_connected: IntGauge,
    pub watch_reconnects: IntCounter,
    pub resyncs: IntCounter,
    pub confdir_reloads: IntCounterVec,
    pub start_time: Gauge,
}

/// Seconds, from a fast compare-only pass to a slow check or reload.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("a valid metric definition");
            register(&registry, c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric definition");
            register(&registry, g)
        };
        let apply_duration = HistogramVec::new(
            HistogramOpts::new(
                "conflux_apply_duration_seconds",
                "How long an apply of a resource took, all its steps together.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["resource"],
        )
        .expect("a valid metric definition");
        let resource_last_success = GaugeVec::new(
            Opts::new(
                "conflux_resource_last_success_timestamp_seconds",
                "When the resource's last successful pass ended (Unix time).",
            ),
            &["resource"],
        )
        .expect("a valid metric definition");
        let scalar = |name: &str, help: &str| {
            register(
                &registry,
                IntGauge::new(name, help).expect("a valid metric definition"),
            )
        };
        let total = |name: &str, help: &str| {
            register(
                &registry,
                IntCounter::new(name, help).expect("a valid metric definition"),
            )
        };
        let metrics = Metrics {
            apply_total: counter(
                "conflux_apply_total",
                "Applies of a resource by result: unchanged, updated, would_update (noop), failed.",
                &["resource", "result"],
            ),
            apply_duration: register(&registry, apply_duration),
            apply_failures: counter(
                "conflux_apply_failures_total",
                "Failed applies by the step that failed: render, compare, stage, check, swap, reload.",
                &["resource", "step"],
            ),
            reloads_total: counter(
                "conflux_reloads_total",
                "Reload commands run, by result: ok, failed.",
                &["resource", "result"],
            ),
            resource_revision: gauge(
                "conflux_resource_revision",
                "The backend revision of the resource's last successful apply.",
                &["resource"],
            ),
            resource_degraded: gauge(
                "conflux_resource_degraded",
                "1 while the resource's last apply failed or a reload is owed.",
                &["resource"],
            ),
            resource_last_success: register(&registry, resource_last_success),
            backend_revision: scalar(
                "conflux_backend_revision",
                "The backend revision the mirror holds.",
            ),
            backend_connected: scalar(
                "conflux_backend_connected",
                "1 while the backend is reachable (its watch is live).",
            ),
            watch_reconnects: total(
                "conflux_watch_reconnects_total",
                "Times the watch broke and was resumed.",
            ),
            resyncs: total(
                "conflux_resyncs_total",
                "Full re-reads of the key space (after a compaction or a reset).",
            ),
            confdir_reloads: counter(
                "conflux_confdir_reloads_total",
                "Reloads of the confdir (SIGHUP or a change on disk) by result: ok, refused.",
                &["result"],
            ),
            start_time: register(
                &registry,
                Gauge::new(
                    "conflux_start_time_seconds",
                    "When this process started (Unix time).",
                )
                .expect("a valid metric definition"),
            ),
            registry,
        };
        // Not on every platform: the collector is Linux only, which is where we run.
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            let _ = metrics.registry.register(Box::new(process));
        }
        metrics
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::warn!(cause = %e, "cannot encode the metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Drops the series of a resource that left the set.
    pub fn forget(&self, resource: &str) {
        for vec in [&self.resource_revision, &self.resource_degraded] {
            let _ = vec.remove_label_values(&[resource]);
        }
        let _ = self.resource_last_success.remove_label_values(&[resource]);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}
