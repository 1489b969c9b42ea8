//! One request: routed by the table, answered by the proxy itself
//! (redirects, denials, CORS preflights, 4xx) or forwarded to an endpoint
//! of the backend Service over a keep-alive connection pool.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use lb_route::Decision;

use super::http1;
use super::serve::{Limits, Served};
use super::upstream::{self, Upstream};

/// A body of either side, boxed.
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every request on one listener shares.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) served: Arc<ArcSwap<Served>>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) trusted: Arc<Vec<ipnet::IpNet>>,
    /// The listener's port (`X-Forwarded-Port`).
    pub(crate) port: u16,
    /// Whether the listener speaks TLS.
    pub(crate) https: bool,
    /// Whether answers carry `Strict-Transport-Security`.
    pub(crate) hsts: bool,
    /// The connection's place under the caps: a tunnel holds it too, so
    /// upgraded connections count as long as they live.
    pub(crate) slot: Option<Arc<Slot>>,
    /// The connection's peer address as a header value (set per
    /// connection: most requests forward it as is).
    pub(crate) peer_ip: Option<HeaderValue>,
    pub(crate) metrics: super::metrics::Metrics,
}

/// Open connections, per client address and in all.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
}

/// One admitted connection; dropping it frees its place.
pub(crate) struct Slot {
    conns: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    /// Connections held now (upgraded ones included).
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// A place for a connection from `ip`, unless a cap is reached.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Option<Slot> {
        let admitted = {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // The total first: a refused address leaves no entry behind.
            if self.total.load(Ordering::Relaxed) >= limits.connections {
                false
            } else {
                let n = per_ip.entry(ip).or_default();
                if *n >= limits.connections_per_ip {
                    false
                } else {
                    *n += 1;
                    self.total.fetch_add(1, Ordering::Relaxed);
                    true
                }
            }
        };
        if !admitted {
            // Said outside the lock (a flood must not serialize on stderr).
            tracing::debug!(client = %ip, "connection refused: over the connection caps");
            return None;
        }
        Some(Slot {
            conns: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self
            .conns
            .per_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.conns.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a forward needs once the request is taken apart: borrowed from
/// the route table the request holds (nothing is copied per request).
struct Target<'a> {
    ingress: &'a lb_route::IngressRef,
    service: &'a str,
    port: u16,
    upstream_path: std::borrow::Cow<'a, str>,
    upstream_host: &'a str,
    x_forwarded_prefix: Option<&'a str>,
    body_limit: u64,
    read_timeout: Duration,
    /// `proxy-send-timeout`: the longest time the backend may leave the
    /// request body untaken (nginx's proxy_send_timeout, between two
    /// writes).
    send_timeout: Duration,
    /// `proxy-connect-timeout` (none: the global one).
    connect_timeout: Option<Duration>,
    cors: Vec<(&'static str, String)>,
    protocol: lb_route::BackendProtocol,
    /// `load-balance`.
    balance: lb_route::LoadBalance,
    /// Cookie affinity, and the cookie the client sent (its value).
    affinity: Option<&'a lb_route::Affinity>,
    pinned: Option<String>,
    /// The rule path that matched (the affinity cookie's default path).
    matched: Option<&'a str>,
    /// Whether the request came over HTTPS (see [`seen_as_https`]): the
    /// cookie's default `Secure`, `X-Scheme`, the auth-url's scheme.
    https: bool,
    /// `auth-url` and friends.
    external_auth: Option<&'a lb_route::ExternalAuth>,
    /// The host the request was routed by (for `auth-url`).
    host: &'a str,
    /// `auth-type: basic`: the Secret (in the Ingress's namespace) and realm.
    basic_auth: Option<&'a lb_route::BasicAuth>,
}

impl Target<'_> {
    /// The Ingress's (and so the Service's) namespace.
    fn namespace(&self) -> &str {
        &self.ingress.namespace
    }
}

/// Answers one request.
pub(crate) async fn handle(ctx: &Context, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let served = ctx.served.load_full();
    let (mut parts, body) = req.into_parts();
    // There only when hyper saw an upgrade request.
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let parts = parts;
    let method = &parts.method;
    let client = client_address(ctx, peer.ip(), &parts.headers);
    let request_id = match parts.headers.get("x-request-id").filter(|v| valid_request_id(v)) {
        Some(v) => v.clone(),
        None => new_request_id(),
    };
    let mut access = Access {
        ctx,
        client,
        method,
        path: parts.uri.path_and_query().map_or("", |p| p.as_str()),
        request_id: &request_id,
        started,
        names: None,
        answered: None,
    };
    // A request that asks to leave HTTP/1 (an upgrade, CONNECT): unless the
    // backend agrees (101), the connection closes after the answer, so no
    // byte after it is ever read as a request the framing guard let pass
    // unchecked.
    let leaving = method == Method::CONNECT || asks_upgrade(&parts);
    let routed_or_refused = if method == Method::CONNECT || method == Method::TRACE {
        // TRACE would echo what the proxy adds (nginx answers 405 too).
        Routed::Answer(own(StatusCode::METHOD_NOT_ALLOWED, "the method is not proxied"), None)
    } else if !method.as_str().bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        // `get` is not `GET` (methods are case-sensitive): a backend must
        // not be left to guess. nginx refuses the same.
        Routed::Answer(close(own(StatusCode::BAD_REQUEST, "bad request: not a method")), None)
    } else {
        route(
            ctx,
            &served,
            client,
            seen_as_https(ctx, peer.ip(), &parts.headers),
            &parts,
        )
    };
    let (response, upstream) = match routed_or_refused {
        Routed::Answer(answer, by) => {
            access.names = by.map(|i| (i, None));
            (answer, None)
        }
        Routed::To(target) => {
            // Only the access log and the metrics want the names.
            let routed = (target.ingress, target.service);
            access.names = Some((routed.0, Some(routed.1)));
            let (response, upstream, failure) = forward(
                ctx,
                &served,
                peer,
                client,
                &request_id,
                target,
                (&parts, body, on_upgrade),
            )
            .await;
            if let Some(kind) = failure {
                ctx.metrics
                    .upstream_errors
                    .get_or_create(&super::metrics::UpstreamLabels {
                        service: Qualified(&routed.0.namespace, routed.1).to_string(),
                        kind,
                    })
                    .inc();
            }
            (response, upstream)
        }
    };
    let mut response = response;
    if leaving && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response = close(response);
    }
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("lb"));
    if ctx.hsts {
        // A backend's own policy stands.
        response
            .headers_mut()
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert(HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
    let took = started.elapsed();
    ctx.metrics.duration.observe(took.as_secs_f64());
    access.answered = Some((response.status().as_u16(), upstream, took));
    response
}

/// A request's access-log line and count, made when it is dropped: with
/// its answer, or — when its client went away first (hyper drops the
/// request's future then) — as 499, nginx's "client closed request", so
/// that no request leaves no trace.
struct Access<'a> {
    ctx: &'a Context,
    client: IpAddr,
    method: &'a Method,
    path: &'a str,
    request_id: &'a HeaderValue,
    started: Instant,
    /// The Ingress (and Service) once routed: a request abandoned while
    /// forwarded is logged with them.
    names: RoutedNames<'a>,
    /// Status, upstream, time to the answer's head.
    answered: Option<(u16, Option<SocketAddr>, Duration)>,
}

/// The Ingress that decided a request, and the Service it routed it to
/// (none when the Ingress answered itself: an allowlist's 403, say).
type RoutedNames<'a> = Option<(&'a lb_route::IngressRef, Option<&'a str>)>;

impl Drop for Access<'_> {
    fn drop(&mut self) {
        let (status, upstream, took) = self
            .answered
            .take()
            .unwrap_or_else(|| (499, None, self.started.elapsed()));
        let names = self.names;
        tracing::info!(
            target: "lb_proxy::access",
            client = %self.client,
            method = %self.method,
            path = self.path,
            status,
            ingress = %Maybe(names.map(|(i, _)| i)),
            service = %Maybe(names.and_then(|(i, s)| Some(Qualified(&i.namespace, s?)))),
            upstream = %Maybe(upstream),
            request_id = self.request_id.to_str().unwrap_or_default(),
            duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        );
        self.ctx.metrics.count_request(names, status);
    }
}

/// An optional value, displayed as nothing when absent.
struct Maybe<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for Maybe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => Ok(()),
        }
    }
}

/// `namespace/name`, formatted only when shown.
struct Qualified<'a>(&'a str, &'a str);

impl std::fmt::Display for Qualified<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

/// Where a request goes.
enum Routed<'a> {
    /// To a backend.
    To(Target<'a>),
    /// Nowhere: the proxy answers (for the Ingress that decided so, if
    /// one did).
    Answer(Response<Body>, Option<&'a lb_route::IngressRef>),
}

/// Decides where `req` goes: a [`Target`] to forward to, or the proxy's
/// own answer.
fn route<'a>(
    ctx: &Context,
    served: &'a Served,
    client: IpAddr,
    https: bool,
    req: &'a http::request::Parts,
) -> Routed<'a> {
    // Framing (a length beside a transfer coding and the like) was
    // checked on the bytes, before the parser: see `guard`.
    // An HTTP/1.1 request must name its host (RFC 9112 §3.2).
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(header::HOST) && req.uri.authority().is_none()
    {
        return Routed::Answer(close(own(StatusCode::BAD_REQUEST, "bad request: no Host header")), None);
    }
    let uri = &req.uri;
    // Asterisk-form is OPTIONS's alone and asks about the server itself;
    // authority-form is CONNECT's (refused before): RFC 9112 §3.2.
    if uri.path_and_query().is_some_and(|p| p.as_str() == "*") {
        if req.method != Method::OPTIONS {
            return Routed::Answer(own(StatusCode::BAD_REQUEST, "bad request: * is for OPTIONS"), None);
        }
        let mut r = own(StatusCode::NO_CONTENT, "");
        r.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return Routed::Answer(r, None);
    }
    if uri.path_and_query().is_none() {
        return Routed::Answer(close(own(StatusCode::BAD_REQUEST, "bad request: not a path")), None);
    }
    let host = match super::host_header(&req.headers) {
        Err(why) => return Routed::Answer(own(StatusCode::BAD_REQUEST, &format!("bad request: {why}")), None),
        // An HTTP/1 absolute-form target names the host: Host is then
        // ignored (RFC 9112 §3.2.2). HTTP/2 carries :authority, and Host
        // (when a client sends both) as before.
        Ok(h) => match req.version < http::Version::HTTP_2 {
            true => uri.authority().map(|a| a.as_str()).or(h),
            // Both, and not the same: which one was meant is not ours to
            // guess (RFC 9113 §8.3.1 has them agree).
            false => match (h, uri.authority()) {
                (Some(h), Some(a)) if !h.eq_ignore_ascii_case(a.as_str()) => {
                    return Routed::Answer(
                        own(StatusCode::BAD_REQUEST, "bad request: :authority and Host differ"),
                        None,
                    );
                }
                // An http(s) URI has a host (RFC 9110 §4.2.1): a request
                // naming none is malformed (RFC 9113 §8.3.1), as an HTTP/1.1
                // one without Host.
                (None, None) => {
                    return Routed::Answer(own(StatusCode::BAD_REQUEST, "bad request: no :authority or Host"), None);
                }
                (h, a) => h.or_else(|| a.map(|a| a.as_str())),
            },
        },
    };
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let ask = lb_route::Request::new(&req.method, host, target)
        .with_https(https)
        .with_client(client)
        .with_headers(&req.headers)
        .with_sample(random() as u32);
    match served.table.lookup(&ask) {
        Decision::Forward(f) => {
            let origin = req.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
            let cors = f.response_headers(origin);
            let pinned = f
                .options
                .affinity
                .as_ref()
                .and_then(|a| cookie(&req.headers, &a.cookie_name));
            Routed::To(Target {
                protocol: f.options.backend_protocol,
                balance: f.options.load_balance,
                external_auth: f.options.external_auth.as_deref(),
                host: host.unwrap_or_default(),
                basic_auth: f.options.basic_auth.as_ref(),
                affinity: f.options.affinity.as_deref(),
                pinned,
                matched: f.matched.map(|(p, _)| p),
                https,
                ingress: f.ingress,
                service: f.service,
                port: f.port,
                upstream_path: f.upstream_path,
                upstream_host: f.upstream_host,
                x_forwarded_prefix: f.x_forwarded_prefix,
                body_limit: f.options.proxy_body_size.unwrap_or(ctx.limits.default_body),
                read_timeout: f.options.read_timeout.unwrap_or(ctx.limits.read_timeout),
                // (nginx's default is the read timeout's: 60 s.)
                send_timeout: f.options.send_timeout.unwrap_or(ctx.limits.read_timeout),
                connect_timeout: f.options.connect_timeout,
                cors,
            })
        }
        Decision::Redirect { status, location } => {
            let mut r = own(status, "");
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Routed::Answer(r, None)
        }
        Decision::Preflight { headers } => {
            let mut r = own(StatusCode::NO_CONTENT, "");
            for (k, v) in headers {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    r.headers_mut().insert(HeaderName::from_static(k), v);
                }
            }
            Routed::Answer(r, None)
        }
        other => {
            let status = other.status();
            let (why, by) = match &other {
                Decision::Deny { reason, ingress, .. } => (reason.clone(), *ingress),
                Decision::BadRequest(e) => (format!("bad request: {e}"), None),
                _ => (status.canonical_reason().unwrap_or_default().to_owned(), None),
            };
            tracing::debug!(status = status.as_u16(), why = %why, "answered by the proxy");
            Routed::Answer(own(status, status.canonical_reason().unwrap_or_default()), by)
        }
    }
}

/// Sends the request to an endpoint of the target's Service; a connect
/// failure tries the next endpoint when the request has no body (nothing
/// was sent, whatever the method). Returns the response and the endpoint
/// used.
async fn forward(
    ctx: &Context,
    served: &Served,
    peer: SocketAddr,
    client: IpAddr,
    request_id: &HeaderValue,
    target: Target<'_>,
    (parts, body, on_upgrade): (&http::request::Parts, Incoming, Option<hyper::upgrade::OnUpgrade>),
) -> (Response<Body>, Option<SocketAddr>, Option<&'static str>) {
    // Basic authentication first: nothing else is said to a client
    // without the password.
    if let Some(basic) = target.basic_auth
        && let Err(answer) = authenticate(served, target.namespace(), basic, &parts.headers).await
    {
        return (answer, None, None);
    }
    let Some(backends) = served.endpoints.get(target.namespace(), target.service, target.port) else {
        tracing::warn!(service = %Qualified(target.namespace(), target.service), port = target.port, "no ready endpoint");
        return (
            own(StatusCode::SERVICE_UNAVAILABLE, "no endpoint is ready"),
            None,
            Some("no_endpoint"),
        );
    };
    // External authorization next: nothing reaches the backend unless the
    // auth service says 2xx.
    let mut granted = Vec::new();
    if let Some(auth) = target.external_auth {
        match authorize(
            ctx,
            auth,
            (target.host, served.table.path_policy(), target.https),
            parts,
            client,
            request_id,
        )
        .await
        {
            Ok(headers) => granted = headers,
            Err(answer) => return (answer, None, None),
        }
    }
    let length = content_length(&parts.headers);
    // `proxy-body-size: 0` is no limit, as in nginx.
    let limit = target.body_limit;
    if limit != 0 && length.is_some_and(|n| n > limit) {
        return (
            close(own(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")),
            None,
            None,
        );
    }
    // Exact for HTTP/1 (no length, no coding) and HTTP/2 (END_STREAM on
    // the headers; HTTP/2 bodies carry no Transfer-Encoding).
    let bodiless = {
        use hyper::body::Body as _;
        body.is_end_stream()
    };
    let idempotent = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    // An upgrade request with a body is forwarded as a plain request.
    let upgrade = upgrade_of(parts).filter(|_| bodiless);
    let client_upgrade = on_upgrade.filter(|_| upgrade.is_some());
    let outgoing = Outgoing::new(ctx, parts, peer, client, request_id, &target, upgrade.as_ref(), granted);
    let mut body = Some(match (bodiless, limit) {
        (true, _) => Empty::new().map_err(|e| match e {}).boxed(),
        (false, 0) => body.map_err(|e| Box::new(e) as BoxError).boxed(),
        (false, n) => Limited::new(body, usize::try_from(n).unwrap_or(usize::MAX)).boxed(),
    });
    // A connect failure is retried (on the next endpoint) for any request
    // without a body: nothing was sent (nginx retries those too).
    let tries = if bodiless { backends.addrs().len().min(3) } else { 1 };
    // Cookie affinity: the endpoint the cookie names, while it exists.
    let pinned_at = target
        .pinned
        .as_deref()
        .and_then(|t| backends.addrs().iter().position(|a| upstream::token(*a) == t));
    let start = pinned_at.unwrap_or_else(|| backends.start(target.balance, random(), super::endpoints::now()));
    let ewma = target.balance == lb_route::LoadBalance::Ewma;
    // Plain HTTP/1 without a body or an upgrade (most requests) goes over
    // the in-task client; the rest over hyper's.
    // (A target the table made is origin-form of visible ASCII; hyper's
    // client checks it again, so anything else goes there and fails.)
    let direct = target.protocol == lb_route::BackendProtocol::Http
        && bodiless
        && upgrade.is_none()
        && target.upstream_path.bytes().all(|b| b.is_ascii_graphic());
    for n in 0..tries {
        let Some(addr) = backends.at(start, n) else { break };
        // `ewma` counts what is in flight and how long answers take.
        let busy = if ewma {
            backends.busy(start, n, super::endpoints::now())
        } else {
            None
        };
        let sent = if direct {
            ctx.upstream
                .http1
                .send(
                    addr,
                    &parts.method,
                    |head| outgoing.write_head(&parts.method, &target.upstream_path, head),
                    idempotent,
                    target.read_timeout,
                    target.connect_timeout,
                )
                .await
                .map_err(Failed::from)
        } else {
            let uri = format!("{}://{addr}{}", Upstream::scheme(target.protocol), target.upstream_path);
            let mut up = Request::builder().method(parts.method.clone()).uri(uri);
            if let Some(h) = up.headers_mut() {
                *h = outgoing.to_map();
            }
            // Only a request without a body is tried again: its next try
            // sends an empty one too.
            let this_body = body
                .take()
                .unwrap_or_else(|| Empty::new().map_err(|e| match e {}).boxed());
            // The read timeout runs from when the request is sent whole:
            // a long upload is the client's time (its silences are bounded
            // by the connection's), not the backend's.
            let (sent, sent_whole) = match bodiless {
                true => (None, this_body),
                false => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let taken = Arc::new(AtomicU64::new(super::endpoints::now()));
                    let body = Sent {
                        inner: this_body,
                        done: Some(tx),
                        taken: taken.clone(),
                    };
                    (Some((rx, taken)), body.boxed())
                }
            };
            let Ok(up) = up.body(sent_whole) else {
                return (own(StatusCode::BAD_REQUEST, "bad request"), None, None);
            };
            let read_timeout = async {
                if let Some((sent, taken)) = sent {
                    // Until the request is sent whole (an error ending the
                    // upload ends it too), the backend must keep taking it.
                    tokio::select! {
                        _ = sent => {}
                        () = quiet_for(&taken, target.send_timeout) => return Failed::SendTimeout,
                    }
                }
                tokio::time::sleep(target.read_timeout).await;
                Failed::Timeout
            };
            let answered = tokio::select! {
                r = ctx.upstream.send(target.protocol, up, target.connect_timeout) => Ok(r),
                timeout = read_timeout => Err(timeout),
            };
            match answered {
                Err(timeout) => Err(timeout),
                Ok(Ok(r)) => Ok(r.map(|b| {
                    Idle {
                        inner: b,
                        timeout: target.read_timeout,
                        timer: None,
                        moved: false,
                    }
                    .boxed()
                })),
                Ok(Err(e)) => Err(Failed::of_client(&e)),
            }
        };
        if let Some(busy) = busy {
            match &sent {
                Ok(_) => busy.done(false, super::endpoints::now()),
                Err(
                    Failed::Timeout
                    | Failed::SendTimeout
                    | Failed::Connect(_)
                    | Failed::ConnectTimeout(_)
                    | Failed::Backend(_),
                ) => {
                    busy.done(true, super::endpoints::now());
                }
                // The client's fault: nothing learnt about the endpoint.
                Err(_) => busy.forget(),
            }
        }
        match sent {
            Err(Failed::SendTimeout) => {
                tracing::warn!(upstream = %addr, after = ?target.send_timeout, "backend did not take the request in time");
                return (
                    close(own(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the backend did not take the request in time",
                    )),
                    Some(addr),
                    Some("timeout"),
                );
            }
            Err(Failed::Timeout) => {
                tracing::warn!(upstream = %addr, after = ?target.read_timeout, "backend did not answer in time");
                return (
                    own(StatusCode::GATEWAY_TIMEOUT, "the backend did not answer in time"),
                    Some(addr),
                    Some("timeout"),
                );
            }
            Err(Failed::Connect(e) | Failed::ConnectTimeout(e)) if n + 1 < tries => {
                tracing::warn!(upstream = %addr, error = %e, "connecting to the backend failed; trying the next endpoint");
                // Counted though the request may still be answered: a
                // dead endpoint shows in the metrics, not only in the log.
                ctx.metrics
                    .upstream_errors
                    .get_or_create(&super::metrics::UpstreamLabels {
                        service: Qualified(target.namespace(), target.service).to_string(),
                        kind: "connect",
                    })
                    .inc();
            }
            Err(Failed::TooLarge) => {
                return (
                    close(own(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")),
                    Some(addr),
                    None,
                );
            }
            Err(Failed::ClientTimeout) => {
                tracing::debug!(upstream = %addr, "the client stopped sending its request body");
                return (
                    close(own(StatusCode::REQUEST_TIMEOUT, "request body timeout")),
                    Some(addr),
                    None,
                );
            }
            // The client's body broke (malformed chunks, cut short): the
            // client's fault, not the backend's.
            Err(Failed::ClientBody(e)) => {
                tracing::debug!(upstream = %addr, error = %e, "the client's request body failed");
                return (
                    close(own(StatusCode::BAD_REQUEST, "bad request body")),
                    Some(addr),
                    None,
                );
            }
            Err(Failed::ConnectTimeout(e)) => {
                tracing::warn!(upstream = %addr, error = %e, "the backend failed");
                return (
                    own(StatusCode::GATEWAY_TIMEOUT, "connecting to the backend timed out"),
                    Some(addr),
                    Some("timeout"),
                );
            }
            Err(Failed::Connect(e)) => {
                tracing::warn!(upstream = %addr, error = %e, "the backend failed");
                return (
                    own(StatusCode::BAD_GATEWAY, "the backend failed"),
                    Some(addr),
                    Some("connect"),
                );
            }
            Err(Failed::Backend(e)) => {
                tracing::warn!(upstream = %addr, error = %e, "the backend failed");
                return (
                    own(StatusCode::BAD_GATEWAY, "the backend failed"),
                    Some(addr),
                    Some("failed"),
                );
            }
            Ok(mut response) => {
                let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
                if upgraded && let (Some(client_side), Some(kind)) = (client_upgrade, upgrade.as_ref()) {
                    tunnel(
                        client_side,
                        hyper::upgrade::on(&mut response),
                        addr,
                        ctx.slot.clone(),
                        target.read_timeout,
                    );
                    let (mut parts, _) = response.into_parts();
                    // The protocol the backend chose, else the one asked.
                    let chosen = parts.headers.get(header::UPGRADE).unwrap_or(kind).clone();
                    strip_hop_by_hop(&mut parts.headers);
                    parts
                        .headers
                        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    parts.headers.insert(header::UPGRADE, chosen);
                    return (
                        Response::from_parts(parts, Empty::new().map_err(|e| match e {}).boxed()),
                        Some(addr),
                        None,
                    );
                }
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                // A new or moved pin: the cookie says where this client goes.
                if let Some(a) = target.affinity
                    && (pinned_at.is_none() || (n > 0 && a.change_on_failure))
                    && let Ok(v) = HeaderValue::from_str(&set_cookie(a, &target, addr))
                {
                    parts.headers.append(header::SET_COOKIE, v);
                }
                for (k, v) in &target.cors {
                    if let Ok(v) = HeaderValue::from_str(v) {
                        parts.headers.insert(HeaderName::from_static(k), v);
                    }
                }
                // The answer depends on the Origin: caches must know.
                if !target.cors.is_empty() {
                    parts.headers.append(header::VARY, HeaderValue::from_static("Origin"));
                }
                return (Response::from_parts(parts, body), Some(addr), None);
            }
        }
    }
    (
        own(StatusCode::BAD_GATEWAY, "no endpoint could be reached"),
        None,
        Some("connect"),
    )
}

/// Checks a request's basic credentials against the Ingress's htpasswd
/// Secret: 401 with the realm without valid ones; 503 when the Secret is
/// missing or has no usable user (closed, never open). A bcrypt check runs
/// off the serving threads, once per credentials while the Secret stays.
async fn authenticate(
    served: &Served,
    namespace: &str,
    basic: &lb_route::BasicAuth,
    headers: &HeaderMap,
) -> Result<(), Response<Body>> {
    let Some(file) = served
        .auth
        .get(namespace, &basic.secret, basic.map)
        .filter(|f| !f.is_empty())
    else {
        tracing::warn!(secret = %format!("{namespace}/{}", basic.secret), "auth-secret missing or without a usable user: refused");
        return Err(own(StatusCode::SERVICE_UNAVAILABLE, "authentication is not available"));
    };
    let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
    let ok = match given {
        None => false,
        Some(given) if file.known(&given) => true,
        Some(given) if file.slow(&given) => {
            // A few at a time, whatever comes: guessing must not take the
            // threads everything else needs.
            static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
            let Ok(permit) = CHECKS.try_acquire() else {
                return Err(own(StatusCode::SERVICE_UNAVAILABLE, "too many password checks at once"));
            };
            let file = file.clone();
            let ok = tokio::task::spawn_blocking(move || file.verify(&given))
                .await
                .unwrap_or(false);
            drop(permit);
            ok
        }
        Some(given) => file.verify(&given),
    };
    if ok {
        return Ok(());
    }
    let mut r = own(StatusCode::UNAUTHORIZED, "authorization required");
    let realm = basic.realm.replace(['"', '\\'], "");
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    Err(r)
}

/// Asks the `auth-url` service about a request (a GET with the client's
/// headers and `X-Original-URL`/`-Method`, as ingress-nginx sends): 2xx
/// allows, with the `auth-response-headers` to pass upstream; 401 answers
/// 401, or redirects to `auth-signin` with `rd=` the original URL; 403
/// answers 403; anything else (an error, a timeout) 500.
async fn authorize(
    ctx: &Context,
    auth: &lb_route::ExternalAuth,
    (host, policy, https): (&str, &lb_route::PathPolicy, bool),
    parts: &http::request::Parts,
    client: IpAddr,
    request_id: &HeaderValue,
) -> Result<Vec<(HeaderName, HeaderValue)>, Response<Body>> {
    let scheme = if https { "https" } else { "http" };
    // The auth service judges the request as routed and forwarded (the
    // host it was routed by, the canonical path), not another spelling.
    let raw = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = lb_route::Target::parse(raw, policy).map_or(std::borrow::Cow::Borrowed(raw), |t| t.path_and_query());
    let original = format!("{scheme}://{host}{path}");
    let mut req = Request::builder().method(Method::GET).uri(&auth.url);
    if let Some(h) = req.headers_mut() {
        let mut copy = parts.headers.clone();
        strip_hop_by_hop(&mut copy);
        copy.remove(header::CONTENT_LENGTH);
        copy.remove(header::HOST);
        if let Some(v) = joined_cookies(parts) {
            copy.insert(header::COOKIE, v);
        }
        *h = copy;
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        set("x-original-url", &original);
        set("x-original-method", parts.method.as_str());
        set("x-auth-request-redirect", &path);
        set("x-real-ip", &client.to_string());
        set("x-forwarded-proto", scheme);
        set("x-forwarded-host", host);
        h.insert(HeaderName::from_static("x-request-id"), request_id.clone());
    }
    let failed = || own(StatusCode::INTERNAL_SERVER_ERROR, "authorization failed");
    let Ok(req) = req.body(Empty::new().map_err(|e| match e {}).boxed()) else {
        tracing::warn!(url = %auth.url, "auth-url is not a URL");
        return Err(failed());
    };
    let protocol = match req.uri().scheme_str() {
        Some("https") => lb_route::BackendProtocol::Https,
        _ => lb_route::BackendProtocol::Http,
    };
    let answer = match tokio::time::timeout(ctx.limits.read_timeout, ctx.upstream.send(protocol, req, None)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(url = %auth.url, error = %e, "auth-url failed");
            return Err(failed());
        }
        Err(_) => {
            tracing::warn!(url = %auth.url, "auth-url did not answer in time");
            return Err(failed());
        }
    };
    let status = answer.status();
    if status.is_success() {
        // Framing and hop-by-hop headers are not the auth service's to set.
        let forbidden = [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::HOST,
            header::CONNECTION,
            header::UPGRADE,
            header::TE,
        ];
        let wanted = auth
            .response_headers
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .filter(|n| !forbidden.contains(n));
        return Ok(wanted
            .flat_map(|n| {
                let values: Vec<HeaderValue> = answer.headers().get_all(&n).iter().cloned().collect();
                values.into_iter().map(move |v| (n.clone(), v))
            })
            .collect());
    }
    Err(match (status, &auth.signin) {
        (StatusCode::UNAUTHORIZED, Some(signin)) => {
            let sep = if signin.contains('?') { '&' } else { '?' };
            let location = format!("{signin}{sep}rd={}", percent_encode(&original));
            let mut r = own(StatusCode::FOUND, "");
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        (StatusCode::UNAUTHORIZED, None) => {
            let mut r = own(StatusCode::UNAUTHORIZED, "authorization required");
            if let Some(v) = answer.headers().get(header::WWW_AUTHENTICATE) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v.clone());
            }
            r
        }
        (StatusCode::FORBIDDEN, _) => own(StatusCode::FORBIDDEN, "forbidden"),
        _ => {
            tracing::warn!(url = %auth.url, status = status.as_u16(), "auth-url answered neither 2xx, 401 nor 403");
            failed()
        }
    })
}

/// `s` with everything but unreserved characters percent-encoded (a URL
/// as a query value).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of the cookie `name` the client sent, if any.
fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

/// The `Set-Cookie` that pins a client to `addr`, with the Ingress's
/// session-cookie options (ingress-nginx's defaults otherwise: the matched
/// path, HttpOnly, Secure over TLS).
fn set_cookie(a: &lb_route::Affinity, target: &Target<'_>, addr: SocketAddr) -> String {
    let path = a.path.as_deref().or(target.matched).unwrap_or("/");
    let mut c = format!("{}={}; Path={path}", a.cookie_name, upstream::token(addr));
    if let Some(d) = &a.domain {
        c.push_str(&format!("; Domain={d}"));
    }
    if let Some(age) = a.max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if let Some(at) = a
        .expires
        .and_then(|secs| std::time::SystemTime::now().checked_add(Duration::from_secs(secs.min(400 * 86_400))))
    {
        // Browsers cap cookie lifetimes at 400 days anyway.
        c.push_str(&format!("; Expires={}", httpdate(at)));
    }
    if a.secure.unwrap_or(target.https) {
        c.push_str("; Secure");
    }
    if let Some(s) = &a.samesite {
        c.push_str(&format!("; SameSite={s}"));
    }
    c.push_str("; HttpOnly");
    c
}

/// An HTTP date (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let ts = k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0)).unwrap_or_default();
    ts.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Joins the client's and the backend's upgraded connections (WebSocket
/// and the like), once the backend has agreed with a 101. A tunnel where
/// nothing moves either way for `idle` (the route's `proxy-read-timeout`,
/// as nginx bounds WebSockets) is closed: peers that vanished without a
/// FIN do not hold their places for ever.
fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    addr: SocketAddr,
    slot: Option<Arc<Slot>>,
    idle: Duration,
) {
    tokio::spawn(async move {
        // Held until the tunnel ends: it counts under the caps, and the
        // drain at shutdown waits for it.
        let _slot = slot;
        let (Ok(client), Ok(backend)) = (client.await, backend.await) else {
            tracing::debug!(upstream = %addr, "an upgrade did not complete");
            return;
        };
        let moved = Arc::new(AtomicU64::new(super::endpoints::now()));
        let mut c = Moving {
            io: TokioIo::new(client),
            moved: moved.clone(),
        };
        let mut b = Moving {
            io: TokioIo::new(backend),
            moved: moved.clone(),
        };
        tokio::select! {
            ended = tokio::io::copy_bidirectional(&mut c, &mut b) => if let Err(e) = ended {
                tracing::debug!(upstream = %addr, error = %e, "upgraded connection ended");
            },
            () = quiet_for(&moved, idle) => {
                tracing::debug!(upstream = %addr, after = ?idle, "upgraded connection idle; closed");
            }
        }
    });
}

/// An upgraded connection that stamps `moved` (on the balancer's clock)
/// whenever bytes are read from it.
struct Moving<T> {
    io: T,
    moved: Arc<AtomicU64>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Moving<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved.store(super::endpoints::now(), Ordering::Relaxed);
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Moving<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Why a request got no response from the backend.
enum Failed {
    /// No answer within the read timeout.
    Timeout,
    /// The request body left untaken for the send timeout.
    SendTimeout,
    /// No connection (refused, unreachable).
    Connect(String),
    /// No connection within the connect timeout.
    ConnectTimeout(String),
    /// The client's request body went over its limit.
    TooLarge,
    /// The client's request body failed (malformed, cut short).
    ClientBody(String),
    /// The client stopped sending its request body.
    ClientTimeout,
    /// The backend failed once connected.
    Backend(String),
}

impl Failed {
    /// What hyper's client error says.
    fn of_client(e: &hyper_util::client::legacy::Error) -> Self {
        if too_large(e) {
            Self::TooLarge
        } else if client_body_failed(e) && timed_out(e) {
            Self::ClientTimeout
        } else if client_body_failed(e) {
            Self::ClientBody(e.to_string())
        } else if e.is_connect() && timed_out(e) {
            Self::ConnectTimeout(e.to_string())
        } else if e.is_connect() {
            Self::Connect(e.to_string())
        } else {
            Self::Backend(e.to_string())
        }
    }
}

impl From<http1::Error> for Failed {
    fn from(e: http1::Error) -> Self {
        match e {
            http1::Error::Connect(_) => Self::Connect(e.to_string()),
            http1::Error::ConnectTimeout => Self::ConnectTimeout(e.to_string()),
            http1::Error::Timeout => Self::Timeout,
            _ => Self::Backend(e.to_string()),
        }
    }
}

/// Whether an error's cause is an I/O timeout (a connect that timed out).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether a client error comes from the request body the proxy streamed
/// up (hyper's "user body" error: the client's side failed, not the
/// backend's answer).
fn client_body_failed(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_user) {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether a client error is the request body going over its limit.
fn too_large(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The headers a request carries upstream: the client's, less hop-by-hop
/// ones and those the proxy sets itself, then the proxy's (forwarding
/// headers; the client's are kept only when it is trusted).
struct Outgoing<'a> {
    client: &'a HeaderMap,
    /// What the client's `Connection` header names (hop-by-hop too).
    named: Vec<HeaderName>,
    /// Client headers that never pass.
    dropped: Vec<HeaderName>,
    /// The proxy's headers, in order, `Host` first; the client's of these
    /// names do not pass.
    set: Vec<(HeaderName, HeaderValue)>,
}

/// HTTP/2 sends each cookie as a field of its own; an HTTP/1 server reads
/// one `Cookie` line (RFC 9113 §8.2.3: joined with "; "). The joined line
/// when there are several.
fn joined_cookies(parts: &http::request::Parts) -> Option<HeaderValue> {
    let h = &parts.headers;
    if parts.version != http::Version::HTTP_2 || h.get_all(header::COOKIE).iter().nth(1).is_none() {
        return None;
    }
    let joined = h
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    HeaderValue::from_maybe_shared(Bytes::from(joined)).ok()
}

impl<'a> Outgoing<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &Context,
        parts: &'a http::request::Parts,
        peer: SocketAddr,
        client: IpAddr,
        request_id: &HeaderValue,
        target: &Target<'_>,
        upgrade: Option<&HeaderValue>,
        granted: Vec<(HeaderName, HeaderValue)>,
    ) -> Self {
        let h = &parts.headers;
        let trusted = is_trusted(ctx, peer.ip());
        let mut set = Vec::with_capacity(13 + granted.len());
        if let Some(v) = joined_cookies(parts) {
            set.push((header::COOKIE, v));
        }
        // Mostly the client's own Host: shared, not copied.
        let same = h
            .get(header::HOST)
            .filter(|v| v.as_bytes() == target.upstream_host.as_bytes())
            .cloned();
        match same.map_or_else(|| HeaderValue::from_str(target.upstream_host), Ok) {
            Ok(v) => set.push((header::HOST, v)),
            // (The table makes hosts of header-safe bytes.)
            Err(_) => set.push((header::HOST, HeaderValue::from_static(""))),
        }
        let shared = |s: String| HeaderValue::from_maybe_shared(Bytes::from(s)).ok();
        let peer_ip = || ctx.peer_ip.clone().or_else(|| shared(peer.ip().to_string()));
        // Every line of it, in order (as `client_address` reads it).
        let prior: Vec<&str> = match trusted {
            true => h
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect(),
            false => Vec::new(),
        };
        let xff = match prior.is_empty() {
            false => shared(format!("{}, {}", prior.join(", "), peer.ip())),
            true => peer_ip(),
        };
        let real_ip = match client == peer.ip() {
            true => peer_ip(),
            false => shared(client.to_string()),
        };
        // A name the proxy owns never passes from the client, even when
        // no value of the proxy's could be made.
        let mut dropped = Vec::new();
        let mut named_value = |name: &'static str, v: Option<HeaderValue>| match v {
            Some(v) => set.push((HeaderName::from_static(name), v)),
            None => dropped.push(HeaderName::from_static(name)),
        };
        named_value("x-forwarded-for", xff);
        named_value("x-real-ip", real_ip);
        let scheme = HeaderValue::from_static(if target.https { "https" } else { "http" });
        let named = connection_named(h);
        let keep =
            |name: &'static str| trusted && h.contains_key(name) && !named.contains(&HeaderName::from_static(name));
        if !keep("x-forwarded-proto") {
            named_value("x-forwarded-proto", Some(scheme.clone()));
        }
        if !keep("x-forwarded-host") {
            // The host the request was routed by (see `route`).
            let authority = || {
                parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            };
            let host = match parts.version < http::Version::HTTP_2 {
                true => authority().or_else(|| h.get(header::HOST).cloned()),
                false => h.get(header::HOST).cloned().or_else(authority),
            };
            named_value("x-forwarded-host", host);
        }
        if !keep("x-forwarded-port") {
            named_value("x-forwarded-port", Some(HeaderValue::from(ctx.port)));
        }
        named_value("x-scheme", Some(scheme));
        named_value("x-request-id", Some(request_id.clone()));
        named_value(
            "x-forwarded-prefix",
            target.x_forwarded_prefix.and_then(|p| HeaderValue::from_str(p).ok()),
        );
        if let Some(kind) = upgrade {
            set.push((header::CONNECTION, HeaderValue::from_static("upgrade")));
            set.push((header::UPGRADE, kind.clone()));
        }
        // gRPC servers ask for it (nginx's grpc module always sends it).
        if matches!(
            target.protocol,
            lb_route::BackendProtocol::Grpc | lb_route::BackendProtocol::Grpcs
        ) {
            set.push((header::TE, HeaderValue::from_static("trailers")));
        }
        // What only a proxy in front may say, and httpoxy's `Proxy` (a
        // CGI backend would take it for its HTTP_PROXY) from anyone; URL
        // overrides some frameworks route by, never from a client.
        if !trusted {
            dropped.extend(["forwarded", "x-forwarded-scheme"].map(HeaderName::from_static));
        }
        dropped.extend(["proxy", "x-original-url", "x-rewrite-url"].map(HeaderName::from_static));
        // The password checked here is not the backend's to read (nginx's
        // `proxy_set_header Authorization ""` with basic auth).
        if target.basic_auth.is_some() {
            dropped.push(header::AUTHORIZATION);
        }
        if let Some(auth) = target.external_auth {
            // What the auth service vouches for is its word alone: neither
            // the client's header of the same name nor the proxy's passes.
            let vouched: Vec<HeaderName> = auth
                .response_headers
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
                .collect();
            set.retain(|(n, _)| *n == header::HOST || !vouched.contains(n));
            dropped.extend(vouched);
        }
        set.extend(granted);
        Self {
            client: h,
            named,
            dropped,
            set,
        }
    }

    /// Whether the client's header `name` passes.
    fn passes(&self, name: &HeaderName) -> bool {
        // `X_Original_URL` is `X-Original-URL` to CGI-style backends: names
        // with underscores are dropped, as nginx does by default.
        !name.as_str().contains('_')
            && !is_hop_by_hop(name)
            && !self.named.contains(name)
            && !self.dropped.contains(name)
            && !self.set.iter().any(|(n, _)| n == name)
    }

    /// As a header map (for hyper's client).
    fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.client.len() + self.set.len());
        for (name, value) in self.client {
            if self.passes(name) {
                map.append(name.clone(), value.clone());
            }
        }
        for (name, value) in &self.set {
            map.append(name.clone(), value.clone());
        }
        map
    }

    /// As an HTTP/1.1 request head for `method` and `target` (origin form).
    fn write_head(&self, method: &Method, target: &str, head: &mut Vec<u8>) {
        head.extend_from_slice(method.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        let mut line = |name: &HeaderName, value: &HeaderValue| {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        };
        for (name, value) in &self.set {
            line(name, value);
        }
        for (name, value) in self.client {
            if self.passes(name) {
                line(name, value);
            }
        }
        head.extend_from_slice(b"\r\n");
    }
}

/// Whether a header concerns one connection, not the message, whatever
/// the `Connection` header says: RFC 9110 §7.6.1's fields, and those
/// RFC 2616 §13.5.1 listed that a proxy consumes (`Trailer`,
/// `Proxy-Authenticate`, `Proxy-Authorization`), as nginx drops them.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name == "keep-alive"
        || name == "proxy-connection"
}

/// The header names a `Connection` header lists, each once, at most
/// [`MAX_CONNECTION_NAMES`] (a longer list would only make work).
fn connection_named(h: &HeaderMap) -> Vec<HeaderName> {
    let mut named: Vec<HeaderName> = Vec::new();
    let listed = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok());
    for n in listed {
        if named.len() >= MAX_CONNECTION_NAMES {
            break;
        }
        if !named.contains(&n) {
            named.push(n);
        }
    }
    named
}

/// Header names a `Connection` header may make hop-by-hop.
const MAX_CONNECTION_NAMES: usize = 16;

/// Removes the headers that concern one connection, and those the
/// `Connection` header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    for n in connection_named(h) {
        h.remove(n);
    }
    let hop: Vec<HeaderName> = h.keys().filter(|n| is_hop_by_hop(n)).cloned().collect();
    for n in hop {
        h.remove(n);
    }
}

/// Whether a request asks to upgrade (`Connection: upgrade` and an
/// `Upgrade` header), to whatever protocol. Only HTTP/1.1 can: an HTTP/1.0
/// `Upgrade` is ignored (RFC 9110 §7.8).
fn asks_upgrade(parts: &http::request::Parts) -> bool {
    let h = &parts.headers;
    parts.version == http::Version::HTTP_11
        && h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` with
/// an `Upgrade` header), over HTTP/1.1; never `h2c`.
fn upgrade_of(parts: &http::request::Parts) -> Option<HeaderValue> {
    if !asks_upgrade(parts) {
        return None;
    }
    let h = &parts.headers;
    // `h2c` would hand the backend a connection the proxy no longer sees
    // requests on (routing, auth and allowlists bypassed): not tunnelled.
    if h.get(header::UPGRADE).is_some_and(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"))
    }) {
        return None;
    }
    h.get(header::UPGRADE).cloned()
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Whether the request came over HTTPS: the connection's, or — from a
/// trusted peer (a load balancer that ends TLS) — what the first entry of
/// its `X-Forwarded-Proto` says, as ingress-nginx does with
/// use-forwarded-headers (so that ssl-redirect does not loop).
fn seen_as_https(ctx: &Context, peer: IpAddr, h: &HeaderMap) -> bool {
    let forwarded = h
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match forwarded {
        Some(proto) if is_trusted(ctx, peer) => proto.eq_ignore_ascii_case("https"),
        _ => ctx.https,
    }
}

fn is_trusted(ctx: &Context, ip: IpAddr) -> bool {
    ctx.trusted.iter().any(|n| n.contains(&ip))
}

/// The client: the peer, or — from a trusted peer — the first address of
/// `X-Forwarded-For`.
fn client_address(ctx: &Context, peer: IpAddr, h: &HeaderMap) -> IpAddr {
    if !is_trusted(ctx, peer) {
        return peer;
    }
    // From the right, the first address that is not one of the trusted
    // proxies (nginx's real_ip_recursive): what a client writes on the
    // left cannot pose as it.
    let list: Vec<&str> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for a in list.iter().rev() {
        let Ok(ip) = a.trim().parse::<IpAddr>() else { break };
        client = ip.to_canonical();
        if !is_trusted(ctx, ip) {
            break;
        }
    }
    client
}

/// A client's `X-Request-ID` is kept when it is short and plain.
fn valid_request_id(v: &HeaderValue) -> bool {
    v.len() <= 128
        && v.as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// 32 hex digits, as ingress-nginx's `$req_id`.
fn new_request_id() -> HeaderValue {
    let mut id = [0u8; 32];
    for (i, half) in [random(), random()].into_iter().enumerate() {
        for (j, d) in id[i * 16..i * 16 + 16].iter_mut().enumerate() {
            *d = b"0123456789abcdef"[((half >> (60 - 4 * j)) & 0xf) as usize];
        }
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A fast per-thread generator (xorshift64*), seeded from the standard
/// library's random keys: for canary samples and request IDs, not secrets.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher as _, Hasher as _};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x6c62);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A request body that says when it has been sent whole (or given up).
struct Sent {
    inner: Body,
    done: Option<tokio::sync::oneshot::Sender<()>>,
    /// When hyper last took a frame (on the balancer's clock), or
    /// [`WAITING`] while it waits for the client's next one: hyper asks for
    /// a frame only when it has written the last.
    taken: Arc<AtomicU64>,
}

/// [`Sent::taken`] while the client owes the next frame (its silences are
/// bounded by the connection's own timeout, not the backend's).
const WAITING: u64 = u64::MAX;

/// Resolves once `stamp` (a time on the balancer's clock, or [`WAITING`]:
/// not now) is `bound` old: a request body left untaken that long (the
/// backend stopped reading it), a tunnel where nothing moved.
async fn quiet_for(stamp: &AtomicU64, bound: Duration) {
    loop {
        let last = stamp.load(Ordering::Relaxed);
        let idle = match last {
            WAITING => Duration::ZERO,
            t => Duration::from_nanos(super::endpoints::now().saturating_sub(t)),
        };
        if idle >= bound {
            return;
        }
        // Looked at again a quarter of the bound later at most.
        tokio::time::sleep((bound - idle).min(bound / 4).max(Duration::from_millis(10))).await;
    }
}

impl hyper::body::Body for Sent {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        let taken = match polled {
            std::task::Poll::Pending => WAITING,
            std::task::Poll::Ready(_) => super::endpoints::now(),
        };
        self.taken.store(taken, Ordering::Relaxed);
        // (A body of known length may not be polled past its last frame.)
        let whole = match &polled {
            std::task::Poll::Ready(None | Some(Err(_))) => true,
            std::task::Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            std::task::Poll::Pending => false,
        };
        if whole {
            self.done.take().map(|done| done.send(()));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A backend's response body with its route's read timeout between two
/// frames (`proxy-read-timeout` is the idle time between two reads, as in
/// nginx): a backend gone silent mid-response ends it with an error. The
/// timer is made only when a frame is not at hand, and moved, not made
/// again, after the next.
struct Idle {
    inner: Incoming,
    timeout: Duration,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since the timer was set.
    moved: bool,
}

impl hyper::body::Body for Idle {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.moved = true;
                Poll::Ready(frame.map(|f| f.map_err(|e| Box::new(e) as BoxError)))
            }
            Poll::Pending => {
                let timeout = this.timeout.min(super::guard::YEAR);
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if std::mem::take(&mut this.moved) {
                    timer.as_mut().reset(tokio::time::Instant::now() + timeout);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err("the backend went silent mid-response".into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// An answer of the proxy's own.
fn own(status: StatusCode, text: &str) -> Response<Body> {
    let body = if text.is_empty() {
        String::new()
    } else {
        format!("{text}\n")
    };
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    if !text.is_empty() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    r
}

/// The same, closing the connection after it (the request's framing
/// cannot be trusted to find the next one).
fn close(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
