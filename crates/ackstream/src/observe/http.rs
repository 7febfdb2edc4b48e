//! The app's HTTP endpoint (`App::http`), on axum: `/metrics` (Prometheus's text format),
//! `/health/live` (the process serves), `/health/ready` (see [`Monitor::readiness`]) and the
//! status page `/`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::metrics::Metrics;
use super::{Monitor, Stop, page};

#[derive(Clone)]
struct Served {
    monitor: Monitor,
    metrics: Arc<Metrics>,
}

/// Serves the endpoint on `listener` until `stop` fires.
pub(crate) async fn serve(listener: TcpListener, monitor: Monitor, stop: Stop) {
    let served = Served {
        monitor,
        metrics: Arc::new(Metrics::new()),
    };
    let app = Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(served);
    let shutdown = async move { stop.wait().await };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "the app's HTTP endpoint stopped");
    }
}

async fn metrics(State(s): State<Served>) -> Response {
    let text = s.metrics.render(&s.monitor);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(s): State<Served>) -> Response {
    s.monitor.sample();
    let readiness = s.monitor.readiness();
    if readiness.ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let mut body = String::from("not ready\n");
        for reason in &readiness.reasons {
            body.push_str(reason);
            body.push('\n');
        }
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn status_page(State(s): State<Served>) -> Html<String> {
    s.monitor.sample();
    Html(page::render(&s.monitor))
}
