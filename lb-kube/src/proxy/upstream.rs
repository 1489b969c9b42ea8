//! The connection pools to the backends, one per backend protocol
//! (`backend-protocol`: HTTP/1.1, HTTPS, gRPC over h2c, gRPC over TLS),
//! and cookie affinity's endpoint tokens.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lb_route::BackendProtocol;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::forward::Body;
use super::serve::Options;

/// What sending a request upstream gives.
pub(crate) type Sent =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>> + Send>>;

/// The keep-alive connection pools to the backends.
pub(crate) struct Upstream {
    /// Plain HTTP/1.1 for requests without a body or an upgrade.
    pub(crate) http1: Arc<super::http1::Pool>,
    /// hyper's clients with the global connect timeout.
    clients: Clients,
    connect_timeout: Duration,
    /// With the connect timeouts routes ask for (`proxy-connect-timeout`),
    /// made when first asked for; at most [`OTHER_TIMEOUTS`] of them.
    other: std::sync::Mutex<std::collections::HashMap<Duration, Arc<Clients>>>,
    tls: rustls::ClientConfig,
}

/// How many connect timeouts besides the global one get clients of their
/// own (each its own pools); routes asking for yet another get the global.
const OTHER_TIMEOUTS: usize = 16;

/// One client per backend protocol, all with one connect timeout.
struct Clients {
    http1_any: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
    https: Client<HttpsConnector<HttpConnector>, Body>,
    h2s: Client<HttpsConnector<HttpConnector>, Body>,
}

impl Clients {
    fn new(connect_timeout: Duration, tls: &rustls::ClientConfig) -> Self {
        let mut plain = HttpConnector::new();
        plain.set_nodelay(true);
        plain.set_connect_timeout(Some(connect_timeout));
        let mut tls_tcp = plain.clone();
        tls_tcp.enforce_http(false);
        // The connector offers by ALPN what it speaks: one protocol each.
        let connector = |h2: bool| {
            let b = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_only();
            match h2 {
                true => b.enable_http2().wrap_connector(tls_tcp.clone()),
                false => b.enable_http1().wrap_connector(tls_tcp.clone()),
            }
        };
        let pool = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(60)).pool_max_idle_per_host(256);
            b
        };
        Self {
            http1_any: pool().build(plain.clone()),
            h2c: pool().http2_only(true).build(plain),
            https: pool().build(connector(false)),
            h2s: pool().http2_only(true).build(connector(true)),
        }
    }

    fn send(&self, protocol: BackendProtocol, req: Request<Body>) -> Sent {
        match protocol {
            BackendProtocol::Https => Box::pin(self.https.request(req)),
            BackendProtocol::Grpc => Box::pin(self.h2c.request(req)),
            BackendProtocol::Grpcs => Box::pin(self.h2s.request(req)),
            BackendProtocol::Http => Box::pin(self.http1_any.request(req)),
        }
    }
}

impl Upstream {
    pub(crate) fn new(options: &Options) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
            .with_no_client_auth();
        let connect_timeout = options.limits.connect_timeout;
        Ok(Self {
            http1: super::http1::Pool::new(connect_timeout),
            clients: Clients::new(connect_timeout, &tls),
            connect_timeout,
            other: std::sync::Mutex::default(),
            tls,
        })
    }

    /// The scheme a backend of `protocol` is addressed with.
    pub(crate) fn scheme(protocol: BackendProtocol) -> &'static str {
        match protocol {
            BackendProtocol::Https | BackendProtocol::Grpcs => "https",
            _ => "http",
        }
    }

    /// Sends `req` (its URI already names the endpoint) over the pool of
    /// `protocol`, connecting within `connect_timeout` (none: the global
    /// one).
    pub(crate) fn send(
        &self,
        protocol: BackendProtocol,
        req: Request<Body>,
        connect_timeout: Option<Duration>,
    ) -> Sent {
        let Some(timeout) = connect_timeout.filter(|t| *t != self.connect_timeout) else {
            return self.clients.send(protocol, req);
        };
        let clients = {
            let mut other = self.other.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match other.get(&timeout) {
                Some(c) => Some(c.clone()),
                None if other.len() < OTHER_TIMEOUTS => {
                    let c = Arc::new(Clients::new(timeout, &self.tls));
                    other.insert(timeout, c.clone());
                    Some(c)
                }
                None => None,
            }
        };
        match clients {
            Some(c) => c.send(protocol, req),
            None => self.clients.send(protocol, req),
        }
    }
}

/// Backends' certificates are not verified (ingress-nginx does not unless
/// `proxy-ssl-verify` is on): the connection is encrypted, the backend is
/// the endpoint Kubernetes named. Signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The affinity cookie's value for an endpoint: FNV-1a of its address, so
/// every proxy replica (and every restart) names it alike.
pub(crate) fn token(addr: SocketAddr) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
