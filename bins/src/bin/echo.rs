//! lb-echo: a small HTTP backend for tests, benches and the quickstart. It
//! answers every request with JSON describing what it received (method,
//! target, headers, body size) and who answered (service and pod names
//! from flags). `/status/CODE` answers with that status. A request to
//! upgrade to the protocol `lb-echo` (`Connection: upgrade`) gets a 101 and
//! then every byte sent back (a stand-in for WebSocket in tests).

use std::collections::BTreeMap;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_bins::{LogFormat, init_logging};

/// Answers every request with JSON describing it.
#[derive(Parser, Debug)]
#[command(name = "lb-echo", version)]
struct Cli {
    /// Listen on ADDR.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The Service name to report.
    #[arg(long, default_value = "echo")]
    service: String,
    /// The Pod name to report.
    #[arg(long, default_value = "echo-0")]
    pod: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(cli.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: --listen {}: {e}", cli.listen);
                return ExitCode::from(2);
            }
        };
        tracing::info!(addr = %cli.listen, service = %cli.service, pod = %cli.pod, "echoing");
        let who = std::sync::Arc::new((cli.service, cli.pod));
        let shutdown = lb_bins::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return ExitCode::SUCCESS,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => continue,
                },
            };
            let who = who.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| echo(who.clone(), peer, req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn echo(
    who: std::sync::Arc<(String, String)>,
    peer: std::net::SocketAddr,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let upgrade = req
        .headers()
        .get(hyper::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"lb-echo"));
    if upgrade {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
        response.headers_mut().insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("lb-echo"),
        );
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("upgrade"),
        );
        return Ok(response);
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let status = target
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| hyper::StatusCode::from_u16(c).ok())
        .unwrap_or(hyper::StatusCode::OK);
    let answer = serde_json::json!({
        "service": who.0,
        "pod": who.1,
        "method": parts.method.as_str(),
        "target": target,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body.len(),
        "peer": peer.to_string(),
    });
    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
