//! TLS: the certificates of `kubernetes.io/tls` Secrets, picked per
//! handshake by SNI through the route table (exact host, then wildcard,
//! then the default certificate), with rustls.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use lb_route::SecretRef;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::serve::Served;
use crate::objects::{Object, ObjectRef};
use crate::source::{Problem, Snapshot};

/// The Secret type TLS certificates come in.
const TLS_SECRET: &str = "kubernetes.io/tls";

/// The certificates of every TLS Secret that reads well.
#[derive(Debug, Default)]
pub struct Certificates {
    by_secret: HashMap<SecretRef, Arc<CertifiedKey>>,
}

impl Certificates {
    /// Whether the certificate of `secret` is usable.
    pub fn has(&self, secret: &SecretRef) -> bool {
        self.by_secret.contains_key(secret)
    }

    /// Reads every `kubernetes.io/tls` Secret of `view`; one that does not
    /// read (no certificate, no key, a key that does not match) is
    /// reported and left out, so only the hosts naming it go without.
    /// A Secret that read well in `previous` and does not now keeps its
    /// last good certificate (said so in its problem).
    pub fn build(view: &Snapshot, provider: &CryptoProvider, previous: Option<&Certificates>) -> (Self, Vec<Problem>) {
        let mut by_secret = HashMap::new();
        let mut problems = Vec::new();
        for (origin, o) in &view.objects {
            let Object::Secret(secret) = o else { continue };
            if secret.type_.as_deref() != Some(TLS_SECRET) {
                continue;
            }
            let r = crate::objects::object_ref(o);
            // `data` as the API server keeps it; `stringData` as a manifest
            // may still hold it (file mode).
            let field = |name: &str| {
                let data = secret.data.as_ref().and_then(|d| d.get(name)).map(|b| b.0.as_slice());
                data.or_else(|| {
                    secret
                        .string_data
                        .as_ref()
                        .and_then(|d| d.get(name))
                        .map(String::as_bytes)
                })
            };
            let kept = previous.and_then(|p| p.by_secret.get(&secret_ref(&r))).cloned();
            let problem = |field: &str, message: String| Problem {
                origin: origin.clone(),
                ..Problem::error(
                    Some(r.clone()),
                    Some(format!("data[{field}]")),
                    match kept {
                        Some(_) => format!("{message}; keeping its last good certificate"),
                        None => format!("{message}; its hosts get the default certificate"),
                    },
                )
            };
            let keep = |by_secret: &mut HashMap<SecretRef, Arc<CertifiedKey>>| {
                if let Some(k) = &kept {
                    by_secret.insert(secret_ref(&r), k.clone());
                }
            };
            let certs: Vec<CertificateDer<'static>> = match field("tls.crt") {
                Some(pem) => CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect(),
                None => Vec::new(),
            };
            if certs.is_empty() {
                problems.push(problem("tls.crt", "no PEM certificate".into()));
                keep(&mut by_secret);
                continue;
            }
            let Some(Ok(key)) = field("tls.key").map(PrivateKeyDer::from_pem_slice) else {
                problems.push(problem("tls.key", "no PEM private key".into()));
                keep(&mut by_secret);
                continue;
            };
            match CertifiedKey::from_der(certs, key, provider) {
                Ok(ck) => {
                    by_secret.insert(secret_ref(&r), Arc::new(ck));
                }
                Err(e) => {
                    // A certificate that does not decode is the
                    // certificate's fault; a mismatch, the key's.
                    let (field, what) = match &e {
                        rustls::Error::InvalidCertificate(_) => ("tls.crt", "the certificate does not decode"),
                        _ => ("tls.key", "the key does not go with the certificate"),
                    };
                    problems.push(problem(field, format!("{what} ({e})")));
                    keep(&mut by_secret);
                }
            }
        }
        (Self { by_secret }, problems)
    }

    /// The certificate of `secret`, if it read well.
    pub fn get(&self, secret: &SecretRef) -> Option<&Arc<CertifiedKey>> {
        self.by_secret.get(secret)
    }

    /// How many certificates read well.
    pub fn len(&self) -> usize {
        self.by_secret.len()
    }

    /// Whether none did.
    pub fn is_empty(&self) -> bool {
        self.by_secret.is_empty()
    }
}

fn secret_ref(r: &ObjectRef) -> SecretRef {
    SecretRef {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    }
}

/// Picks a handshake's certificate from the table in force.
#[derive(Debug)]
pub(crate) struct Resolver {
    pub(crate) served: Arc<ArcSwap<Served>>,
    pub(crate) default: Option<SecretRef>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let served = self.served.load();
        let chosen = served
            .table
            .certificate(hello.server_name())
            .and_then(|s| served.certs.get(s));
        tracing::debug!(
            sni = ?hello.server_name(),
            secret = ?served.table.certificate(hello.server_name()),
            found = chosen.is_some(),
            "certificate for a handshake"
        );
        // A Secret that did not read: the default certificate, as
        // ingress-nginx serves its own then.
        chosen
            .or_else(|| self.default.as_ref().and_then(|d| served.certs.get(d)))
            .cloned()
    }
}

/// The rustls configuration of the HTTPS listeners: TLS 1.2 and 1.3,
/// certificates by SNI, HTTP/2 and HTTP/1.1 by ALPN.
pub(crate) fn server_config(
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
