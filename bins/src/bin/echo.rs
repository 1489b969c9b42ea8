//! lb-echo: a small HTTP backend for tests, benches and the quickstart. It
//! answers every request with JSON describing what it received (method,
//! target, headers, body size) and who answered (service and pod names
//! from flags). `/status/CODE` answers with that status, `/delay/MS` after
//! that many milliseconds (`--delay-ms` delays every answer: a slow pod),
//! `/bytes/N` with N bytes. A request to
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
    /// Serve TLS with this PEM certificate (and --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Answer every request this many milliseconds late (a slow pod).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,
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
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => match tls_acceptor(cert, key) {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("error: --tls-cert/--tls-key: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
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
        let who = std::sync::Arc::new(Who {
            service: cli.service,
            pod: cli.pod,
            tls: tls.is_some(),
            delay: std::time::Duration::from_millis(cli.delay_ms),
        });
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
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| echo(who.clone(), peer, req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    None => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                    Some(tls) => match tls.accept(stream).await {
                        Ok(s) => builder.serve_connection_with_upgrades(TokioIo::new(s), service).await,
                        Err(_) => return,
                    },
                };
            });
        }
    })
}

/// A TLS acceptor for the certificate and key files (ALPN h2, http/1.1).
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(cert)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).map_err(|e| e.to_string())?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// Who answers, and how.
struct Who {
    service: String,
    pod: String,
    tls: bool,
    /// `--delay-ms`.
    delay: std::time::Duration,
}

async fn echo(
    who: std::sync::Arc<Who>,
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
    // `/bytes/N`: N bytes of body (at most 64 MiB), for large answers.
    if let Some(n) = target.strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; n.min(64 << 20)]))));
    }
    if !who.delay.is_zero() {
        tokio::time::sleep(who.delay).await;
    }
    // `/delay/MS`: a slow backend (at most a minute).
    if let Some(ms) = target.strip_prefix("/delay/").and_then(|m| m.parse::<u64>().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    let status = target
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| hyper::StatusCode::from_u16(c).ok())
        .unwrap_or(hyper::StatusCode::OK);
    let answer = serde_json::json!({
        "service": who.service,
        "pod": who.pod,
        "method": parts.method.as_str(),
        "target": target,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body.len(),
        "peer": peer.to_string(),
        "tls": who.tls,
    });
    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
