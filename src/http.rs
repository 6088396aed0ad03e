//! The operator's HTTP endpoint (`--metrics-addr`, off by default): `/metrics` in the
//! Prometheus text format, `/health` (200 while the loop turns), `/ready` (200 once the
//! backend is connected and every resource has applied since start; 503 with what is
//! missing otherwise) and `/status` (JSON). Every answer is read from
//! [`Telemetry`]; nothing here decides anything.
//!
//! Served with `axum` (on the tokio and hyper already in the tree) rather than a
//! hand-written HTTP parser.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Telemetry;

/// The endpoint could not be opened: a configuration error (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on --metrics-addr {addr}: {source}")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` now (so that a bad address fails the start), and returns the server
/// to run until `shutdown`.
pub async fn bind(
    addr: &str,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + use<>), BindError> {
    let fail = |source| BindError {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/status", get(status))
        .with_state(telemetry);
    let serve = async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(cause = %e, "the metrics endpoint stopped");
        }
    };
    Ok((local, serve))
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        t.metrics.render(),
    )
        .into_response()
}

async fn health(State(t): State<Arc<Telemetry>>) -> Response {
    if t.alive() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the main loop has not turned recently\n",
        )
            .into_response()
    }
}

async fn ready(State(t): State<Arc<Telemetry>>) -> Response {
    match t.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(missing) => {
            let mut body = missing.join("\n");
            body.push('\n');
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}

async fn status(State(t): State<Arc<Telemetry>>) -> Response {
    match serde_json::to_string_pretty(&t.snapshot()) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
