//! The HTTP endpoint every binary serves with `--metrics-listen`:
//! Prometheus metrics at `/metrics`, liveness at `/healthz`, readiness at
//! `/readyz`.
//!
//! Bounded by construction: at most [`MAX_CONNECTIONS`] connections at once
//! (more wait in the kernel's backlog), [`IO_TIMEOUT`] to send a request
//! head and [`CONNECTION_TIMEOUT`] for a whole connection, and an accept
//! error (out of file descriptors, say) pauses the loop instead of ending it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Time allowed to send a request head.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole connection.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// What the endpoint serves: a metrics registry, and whether the binary is
/// ready (its first view of the cluster is in force).
#[derive(Debug)]
pub struct Telemetry {
    registry: std::sync::Mutex<Registry>,
    ready: AtomicBool,
}

impl Telemetry {
    /// Serves `registry`; not ready until [`Telemetry::set_ready`].
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Self {
            registry: std::sync::Mutex::new(registry),
            ready: AtomicBool::new(false),
        })
    }

    /// Says whether `/readyz` answers 200.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The metrics in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            // Writing to a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String, kind: &'static str| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
            r
        };
        const PLAIN: &str = "text/plain; charset=utf-8";
        if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into(), PLAIN);
        }
        match req.uri().path() {
            "/metrics" => text(
                StatusCode::OK,
                self.render(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            "/healthz" => text(StatusCode::OK, "ok\n".into(), PLAIN),
            "/readyz" if self.is_ready() => text(StatusCode::OK, "ready\n".into(), PLAIN),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into(), PLAIN),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /metrics, /healthz or /readyz\n".into(),
                PLAIN,
            ),
        }
    }
}

/// Binds the endpoint's address: done at start-up, so an address that
/// cannot be bound stops the binary with an error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Binds `addr` (an address that cannot be bound is the error) and serves
/// `telemetry` there for as long as the process runs.
pub async fn start(addr: SocketAddr, telemetry: Arc<Telemetry>) -> std::io::Result<()> {
    let listener = bind(addr).await?;
    tokio::spawn(serve(listener, telemetry, std::future::pending()));
    Ok(())
}

/// Serves `telemetry` on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>, shutdown: impl std::future::Future<Output = ()>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics, /healthz and /readyz listening");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    let mut last_error: Option<String> = None;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                let e = e.to_string();
                if last_error.as_deref() != Some(&e) {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed; retrying");
                    last_error = Some(e);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        last_error = None;
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let resp = telemetry.answer(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(IO_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}
