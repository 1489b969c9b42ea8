//! Plain HTTP/1.1 to backends, driven by the task that serves the client:
//! no connection task and no channel between the two, so a request costs
//! no wake-up but the socket's. It carries requests without a body and
//! without an upgrade (most of the traffic); the others take hyper's client
//! in [`super::upstream`].
//!
//! Idle connections wait in a pool per endpoint (most recently used first)
//! and are closed after [`IDLE`]. A response whose body is already in the
//! read buffer (small answers) gives its connection back before the client
//! is even answered.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Frame;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::forward::{Body, BoxError};
use super::framing::{Dechunked, Dechunker};

/// How long a connection may wait in the pool.
pub(crate) const IDLE: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 256;
/// The largest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// Header lines a response head may carry.
const MAX_HEADERS: usize = 128;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No connection to the endpoint (refused, unreachable).
    #[error("connecting: {0}")]
    Connect(io::Error),
    /// The connection attempt outlasted the connect timeout.
    #[error("connecting timed out")]
    ConnectTimeout,
    /// The connection failed once the request was on its way.
    #[error("{0}")]
    Io(io::Error),
    /// No response head within the read timeout.
    #[error("the backend did not answer in time")]
    Timeout,
    /// The backend closed the connection before answering.
    #[error("the backend closed the connection without answering")]
    Closed,
    /// The backend's answer is not HTTP/1 as RFC 9112 frames it.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// An open connection to an endpoint, with what was read past the last
/// response.
struct Conn {
    io: TcpStream,
    buf: BytesMut,
    idle_since: Instant,
    /// Whether it came from the pool (a fresh one is not retried).
    reused: bool,
    /// Bounds the wait for an answer. Set when the connection opens and
    /// moved on only when it fires: a request sets a deadline, not a timer.
    timer: Pin<Box<tokio::time::Sleep>>,
}

/// The idle connections, per endpoint.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<SocketAddr, VecDeque<Conn>>>,
    connect_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::default(),
            connect_timeout,
        })
    }

    /// Sends a bodiless `method` request, whose head `write_head` writes,
    /// to `addr`, and reads the response head. A pooled connection the backend
    /// closed meanwhile is replaced by a new one, for requests that may be
    /// sent twice (`idempotent`).
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        method: &Method,
        write_head: impl FnOnce(&mut Vec<u8>),
        idempotent: bool,
        timeout: Duration,
        connect_timeout: Option<Duration>,
    ) -> Result<Response<Body>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let connect_timeout = connect_timeout.unwrap_or(self.connect_timeout);
        let mut head = Vec::with_capacity(512);
        write_head(&mut head);
        let conn = self.checkout(addr, connect_timeout).await?;
        match self.exchange(conn, addr, method, &head, (deadline, timeout)).await {
            Err((true, Error::Io(_) | Error::Closed)) if idempotent => {
                // The backend may have restarted: its other pooled
                // connections are likely dead too.
                self.forget(addr);
                let conn = self.connect(addr, connect_timeout).await?;
                self.exchange(conn, addr, method, &head, (deadline, timeout))
                    .await
                    .map_err(|(_, e)| e)
            }
            Err((true, e @ (Error::Io(_) | Error::Closed))) => {
                self.forget(addr);
                Err(e)
            }
            r => r.map_err(|(_, e)| e),
        }
    }

    /// Closes the idle connections to `addr`.
    fn forget(&self, addr: SocketAddr) {
        let gone = self.idle.lock().unwrap_or_else(PoisonError::into_inner).remove(&addr);
        drop(gone);
    }

    /// Writes the head, reads the response: the error says whether the
    /// connection came from the pool.
    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        addr: SocketAddr,
        method: &Method,
        head: &[u8],
        (deadline, timeout): (tokio::time::Instant, Duration),
    ) -> Result<Response<Body>, (bool, Error)> {
        let reused = conn.reused;
        let Conn { io, buf, timer, .. } = &mut conn;
        let asked = async {
            io.write_all(head).await.map_err(Error::Io)?;
            read_head(io, buf, method).await
        };
        let (response, framing) = match within(timer, deadline, asked).await {
            Some(r) => r.map_err(|e| (reused, e))?,
            None => return Err((false, Error::Timeout)),
        };
        Ok(self.respond(conn, addr, response, framing, timeout))
    }

    /// The response with its body: the rest of the buffer, then the
    /// connection's bytes. A body already read in full is handed over whole
    /// and the connection goes back to the pool at once.
    fn respond(
        self: &Arc<Self>,
        mut conn: Conn,
        addr: SocketAddr,
        head: Head,
        framing: Framing,
        read_timeout: Duration,
    ) -> Response<Body> {
        let mut response = Response::new(Body::default());
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        let body = match framing.length {
            Length::Exact(n) if (conn.buf.len() as u64) >= n => {
                let whole = conn.buf.split_to(usize::try_from(n).unwrap_or(usize::MAX)).freeze();
                if framing.reusable && conn.buf.is_empty() {
                    self.checkin(addr, conn);
                }
                match whole.is_empty() {
                    true => Body::default(),
                    false => http_body_util::Full::new(whole).map_err(|e| match e {}).boxed(),
                }
            }
            length => UpstreamBody {
                conn: Some(conn),
                state: match length {
                    Length::Exact(n) => State::Exact(n),
                    Length::Chunked => State::Chunked(Dechunker::default()),
                    Length::UntilClose => State::UntilClose,
                },
                reusable: framing.reusable,
                pool: self.clone(),
                addr,
                read_timeout,
                deadline: tokio::time::Instant::now() + read_timeout,
            }
            .boxed(),
        };
        *response.body_mut() = body;
        response
    }

    /// An idle connection to `addr`, or a new one.
    async fn checkout(&self, addr: SocketAddr, connect_timeout: Duration) -> Result<Conn, Error> {
        loop {
            let conn = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.get_mut(&addr).and_then(VecDeque::pop_back)
            };
            let Some(mut conn) = conn else { break };
            let idle_for = conn.idle_since.elapsed();
            if idle_for >= IDLE {
                continue;
            }
            // Closed by the backend while it waited, or sent bytes no
            // request asked for (a late body after HEAD, a 408): not
            // usable. Free unless the socket became readable meanwhile
            // (the last read left it drained).
            let mut probe = [0u8; 1];
            match conn.io.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                _ => continue,
            }
            conn.reused = true;
            return Ok(conn);
        }
        self.connect(addr, connect_timeout).await
    }

    async fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<Conn, Error> {
        let io = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(Error::Connect(e)),
            Err(_) => return Err(Error::ConnectTimeout),
        };
        let _ = io.set_nodelay(true);
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            idle_since: Instant::now(),
            timer: Box::pin(tokio::time::sleep(IDLE)),
            reused: false,
        })
    }

    /// A connection whose response was read to its end waits for the next
    /// request.
    fn checkin(&self, addr: SocketAddr, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let oldest = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let list = idle.entry(addr).or_default();
            list.push_back(conn);
            (list.len() > MAX_IDLE).then(|| list.pop_front()).flatten()
        };
        // Closed outside the lock.
        drop(oldest);
    }

    /// Closes connections idle past [`IDLE`], and forgets endpoints with
    /// none left (call now and then).
    pub(crate) fn sweep(&self) {
        let mut expired = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.retain(|_, list| {
                while list.front().is_some_and(|c| c.idle_since.elapsed() >= IDLE) {
                    expired.extend(list.pop_front());
                }
                !list.is_empty()
            });
        }
        // Closed outside the lock.
        drop(expired);
    }
}

/// `fut`, unless `deadline` passes first (`None`), on `timer` (see
/// [`poll_deadline`]).
async fn within<F: std::future::Future>(
    timer: &mut Pin<Box<tokio::time::Sleep>>,
    deadline: tokio::time::Instant,
    fut: F,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        poll_deadline(timer, deadline, cx).map(|()| None)
    })
    .await
}

/// Ready once `deadline` has passed, on `timer`: the timer is moved only
/// when it would fire after the deadline, or fires before it (deadlines
/// mostly lie past the last one's: no timer work).
fn poll_deadline(
    timer: &mut Pin<Box<tokio::time::Sleep>>,
    deadline: tokio::time::Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    while timer.as_mut().poll(cx).is_ready() {
        if tokio::time::Instant::now() >= deadline {
            return Poll::Ready(());
        }
        timer.as_mut().reset(deadline);
    }
    Poll::Pending
}

/// A response's status line and headers.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
}

/// How the body is delimited, and whether the connection carries another
/// request after it.
struct Framing {
    length: Length,
    reusable: bool,
}

enum Length {
    Exact(u64),
    Chunked,
    UntilClose,
}

/// Reads the final (non-1xx) response head and works out the body's
/// framing (RFC 9112 §6.3).
async fn read_head(io: &mut TcpStream, buf: &mut BytesMut, method: &Method) -> Result<(Head, Framing), Error> {
    loop {
        let parsed = {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut r = httparse::Response::new(&mut slots);
            match r.parse(buf) {
                Ok(httparse::Status::Complete(n)) => Some(head_of(&r, method).map(|h| (n, h))),
                Ok(httparse::Status::Partial) => None,
                Err(httparse::Error::TooManyHeaders) => return Err(Error::Malformed("too many headers")),
                Err(_) => return Err(Error::Malformed("not an HTTP/1 response head")),
            }
        };
        match parsed {
            Some(Ok((n, (head, framing)))) => {
                buf.advance(n);
                // A 101 switches protocols, which nothing on this path
                // asked for: what follows is not this answer.
                if head.status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(Error::Malformed("101 Switching Protocols unasked"));
                }
                // 1xx (100 Continue, 103 Early Hints): the answer follows.
                if head.status.is_informational() {
                    continue;
                }
                return Ok((head, framing));
            }
            Some(Err(e)) => return Err(e),
            None => {
                if buf.len() >= MAX_HEAD {
                    return Err(Error::Malformed("response head too large"));
                }
                buf.reserve(4096);
                match io.read_buf(buf).await {
                    Ok(0) if buf.is_empty() => return Err(Error::Closed),
                    Ok(0) => return Err(Error::Malformed("response head cut short")),
                    Ok(_) => {}
                    Err(e) => return Err(Error::Io(e)),
                }
            }
        }
    }
}

fn head_of(r: &httparse::Response<'_, '_>, method: &Method) -> Result<(Head, Framing), Error> {
    let status = r
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(Error::Malformed("bad status code"))?;
    let mut headers = HeaderMap::with_capacity(r.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut coded = false;
    let mut close = r.version == Some(0);
    for h in r.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Error::Malformed("bad header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| Error::Malformed("bad header value"))?;
        if name == header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Error::Malformed("bad Content-Length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(Error::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            coded = true;
            // Only the last coding decides whether the body is chunked.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            let tokens = h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
            for t in tokens {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && r.version == Some(0) {
                    close = false;
                }
            }
        }
        headers.append(name, value);
    }
    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // A length beside a coding: decoded by the coding, but the connection
    // is not trusted with another request (RFC 9112 §6.3 item 3). Nor is
    // one whose answer has no body by rule (HEAD, 204, 304) but announces
    // one: a backend that sends it anyway, late, would answer the next
    // request with it.
    let suspect = (coded && length.is_some())
        || (bodiless && !status.is_informational() && (coded || length.is_some_and(|n| n > 0)));
    let length = match (bodiless, coded, chunked, length) {
        (true, ..) => Length::Exact(0),
        // A coding decides over any length (RFC 9112 §6.3 item 3).
        (_, true, true, _) => Length::Chunked,
        (_, true, false, _) => Length::UntilClose,
        (_, false, _, Some(n)) => Length::Exact(n),
        (_, false, _, None) => Length::UntilClose,
    };
    // A coding in HTTP/1.0 is faulty framing (RFC 9112 §6.1).
    if coded && r.version == Some(0) {
        return Err(Error::Malformed("Transfer-Encoding in an HTTP/1.0 response"));
    }
    if coded {
        headers.remove(header::CONTENT_LENGTH);
    }
    let reusable = !close && !suspect && !matches!(length, Length::UntilClose);
    Ok((Head { status, headers }, Framing { length, reusable }))
}

/// A response body read from the backend's connection as the client takes
/// it; at its end the connection goes back to the pool.
struct UpstreamBody {
    conn: Option<Conn>,
    state: State,
    reusable: bool,
    pool: Arc<Pool>,
    addr: SocketAddr,
    /// The longest silence between two reads of the body (nginx's
    /// proxy_read_timeout), and when the current one runs out.
    read_timeout: Duration,
    deadline: tokio::time::Instant,
}

enum State {
    /// Bytes left.
    Exact(u64),
    Chunked(Dechunker),
    UntilClose,
    Done,
}

impl UpstreamBody {
    /// The body is read to its end: the connection may serve again.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buf.is_empty()
        {
            self.pool.checkin(self.addr, conn);
        }
    }

    /// Reads more of the connection into the buffer: `false` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        conn.buf.reserve(16 * 1024);
        loop {
            match conn.io.try_read_buf(&mut conn.buf) {
                Ok(0) => return Poll::Ready(Ok(false)),
                Ok(_) => {
                    self.deadline = tokio::time::Instant::now() + self.read_timeout;
                    return Poll::Ready(Ok(true));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if conn.io.poll_read_ready(cx)?.is_ready() {
                        continue;
                    }
                    // Bounded between two reads, on the connection's timer.
                    ready!(poll_deadline(&mut conn.timer, self.deadline, cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the backend stopped sending its answer",
                    )));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// A body that broke off: said, with the backend, and the connection
    /// dropped.
    fn failed(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let e = e.into();
        tracing::warn!(upstream = %self.addr, error = %e, "the backend's answer broke off");
        self.conn = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Exact(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Exact(n) => {
                    if let Some(conn) = this.conn.as_mut()
                        && !conn.buf.is_empty()
                    {
                        let take = usize::try_from(n).unwrap_or(usize::MAX).min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        this.state = State::Exact(n - take as u64);
                        if n == take as u64 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_fill(cx)) {
                        Ok(true) => {}
                        Ok(false) => {
                            return this.failed("the backend closed the connection mid-body");
                        }
                        Err(e) => return this.failed(e),
                    }
                }
                State::UntilClose => {
                    if let Some(conn) = this.conn.as_mut()
                        && !conn.buf.is_empty()
                    {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_fill(cx)) {
                        Ok(true) => {}
                        Ok(false) => {
                            this.state = State::Done;
                            this.conn = None;
                            return Poll::Ready(None);
                        }
                        Err(e) => return this.failed(e),
                    }
                }
                State::Chunked(ref mut dechunker) => {
                    let decoded = match this.conn.as_mut() {
                        Some(conn) => dechunker.decode(&mut conn.buf),
                        None => Ok(Dechunked::More),
                    };
                    match decoded {
                        Ok(Dechunked::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(Dechunked::End) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(Dechunked::More) => {}
                        Err(e) => return this.failed(e),
                    }
                    match ready!(this.poll_fill(cx)) {
                        Ok(true) => {}
                        Ok(false) => {
                            return this.failed("the backend closed the connection mid-body");
                        }
                        Err(e) => return this.failed(e),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Exact(0))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.state {
            State::Exact(n) => hyper::body::SizeHint::with_exact(n),
            State::Done => hyper::body::SizeHint::with_exact(0),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    /// A backend that answers every request head on a connection with the
    /// next answer of `answers` (shared by all connections), closing when
    /// an answer ends in `CLOSE`. Counts the connections it accepted.
    async fn backend(answers: Vec<&'static str>) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        tokio::spawn(async move {
            while let Ok((mut io, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(n) = io.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let answer = answers
                                .lock()
                                .unwrap()
                                .pop_front()
                                .unwrap_or("HTTP/1.1 500 No\r\nContent-Length: 0\r\n\r\n");
                            let (text, close) = match answer.strip_suffix("CLOSE") {
                                Some(t) => (t, true),
                                None => (answer, false),
                            };
                            // `DELAY` splits an answer in two writes, 20 ms apart.
                            for (i, part) in text.split("DELAY").enumerate() {
                                if i > 0 {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                if io.write_all(part.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            if close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn head(method: &Method) -> impl FnOnce(&mut Vec<u8>) {
        let line = format!("{method} /x HTTP/1.1\r\nHost: shop.example\r\n\r\n");
        move |head: &mut Vec<u8>| head.extend_from_slice(line.as_bytes())
    }

    async fn get(
        pool: &Arc<Pool>,
        addr: SocketAddr,
        method: Method,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), Error> {
        let idempotent = method != Method::POST;
        let r = pool
            .send(addr, &method, head(&method), idempotent, Duration::from_secs(5), None)
            .await?;
        let (parts, body) = r.into_parts();
        let body = body.collect().await.map_err(|_| Error::Closed)?.to_bytes().to_vec();
        Ok((parts.status, parts.headers, body))
    }

    #[tokio::test]
    async fn bodies_are_framed_by_length_chunks_or_close_and_connections_reused() {
        let (addr, accepted) = backend(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\nuntil the endCLOSE",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nzCLOSE",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n1\r\nq\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast",
        ])
        .await;
        let pool = Pool::new(Duration::from_secs(1));
        let (s, _, b) = get(&pool, addr, Method::GET).await.unwrap();
        assert_eq!((s, b.as_slice()), (StatusCode::OK, &b"ok"[..]));
        let (s, h, b) = get(&pool, addr, Method::GET).await.unwrap();
        assert_eq!((s, b.as_slice()), (StatusCode::CREATED, &b"abcde"[..]));
        assert!(
            h.get(header::CONTENT_LENGTH).is_none(),
            "a length beside chunked is dropped"
        );
        // HEAD: the length describes a body that is not sent.
        let (_, h, b) = get(&pool, addr, Method::HEAD).await.unwrap();
        assert_eq!((h[header::CONTENT_LENGTH].as_bytes(), b.len()), (&b"10"[..], 0));
        let (s, _, b) = get(&pool, addr, Method::GET).await.unwrap();
        assert_eq!((s, b.len()), (StatusCode::NO_CONTENT, 0));
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "three exchanges on one connection; a HEAD answer announcing a body ends it"
        );
        let (_, _, b) = get(&pool, addr, Method::GET).await.unwrap();
        assert_eq!(b, b"until the end");
        let (_, _, b) = get(&pool, addr, Method::GET).await.unwrap();
        assert_eq!(b, b"z");
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "a body read to close is not reused");
        let (_, _, b) = get(&pool, addr, Method::GET).await.unwrap();
        assert_eq!(b, b"new");
        assert_eq!(accepted.load(Ordering::SeqCst), 4, "Connection: close is honoured");
        let (_, h, b) = get(&pool, addr, Method::GET).await.unwrap();
        assert_eq!(b, b"q", "a coding decides over a length");
        assert!(h.get(header::CONTENT_LENGTH).is_none(), "and the length is dropped");
        assert_eq!(get(&pool, addr, Method::GET).await.unwrap().2, b"last");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            5,
            "a connection that sent both is not reused"
        );
    }

    #[tokio::test]
    async fn bytes_a_backend_sends_after_an_answer_never_answer_the_next_request() {
        let (addr, accepted) = backend(vec![
            // A body after a HEAD answer, late; then a 101 nobody asked for.
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nDELAYHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforge",
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let pool = Pool::new(Duration::from_secs(1));
        let (_, _, b) = get(&pool, addr, Method::HEAD).await.unwrap();
        assert!(b.is_empty());
        // At once, before the late bytes come: the HEAD's connection, which
        // announced a body, was not pooled.
        assert_eq!(get(&pool, addr, Method::GET).await.unwrap().2, b"real");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "the connection with stray bytes was dropped"
        );
        assert!(matches!(get(&pool, addr, Method::GET).await, Err(Error::Malformed(_))));
        let (addr, _) = backend(vec!["HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]).await;
        assert!(matches!(get(&pool, addr, Method::GET).await, Err(Error::Malformed(_))));
    }

    #[tokio::test]
    async fn a_pooled_connection_the_backend_closed_is_retried_only_when_idempotent() {
        let (addr, accepted) = backend(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
            // Closed as the request arrives, unanswered.
            "CLOSE",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
            "CLOSE",
            // Answered, then closed while pooled.
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ncCLOSE",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nd",
        ])
        .await;
        let pool = Pool::new(Duration::from_secs(1));
        assert_eq!(get(&pool, addr, Method::GET).await.unwrap().2, b"a");
        // The pooled connection fails unanswered: a GET is sent again.
        assert_eq!(get(&pool, addr, Method::GET).await.unwrap().2, b"b");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // A POST is not.
        assert!(matches!(
            get(&pool, addr, Method::POST).await,
            Err(Error::Closed | Error::Io(_))
        ));
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a POST is not sent twice");
        assert_eq!(get(&pool, addr, Method::GET).await.unwrap().2, b"c");
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A close seen before use costs nothing: even a POST goes through.
        assert_eq!(get(&pool, addr, Method::POST).await.unwrap().2, b"d");
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_backend_that_does_not_answer_times_out_and_its_connection_is_dropped() {
        let (addr, accepted) = backend(vec![]).await;
        // The script is empty: the backend answers 500 at once. A silent
        // one instead:
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((io, _)) = silent.accept().await {
                held.push(io);
            }
        });
        let pool = Pool::new(Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        let r = pool
            .send(
                silent_addr,
                &Method::GET,
                head(&Method::GET),
                true,
                Duration::from_millis(200),
                None,
            )
            .await;
        assert!(matches!(r, Err(Error::Timeout)));
        assert!(started.elapsed() >= Duration::from_millis(200) && started.elapsed() < Duration::from_secs(2));
        assert!(
            pool.idle
                .lock()
                .unwrap()
                .get(&silent_addr)
                .is_none_or(VecDeque::is_empty)
        );
        // A later request on another endpoint still gets its own deadline.
        assert_eq!(
            get(&pool, addr, Method::GET).await.unwrap().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_backend_that_stops_mid_body_is_cut_off_after_the_read_timeout() {
        let (addr, _) = backend(vec!["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]).await;
        let pool = Pool::new(Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        let r = pool
            .send(
                addr,
                &Method::GET,
                head(&Method::GET),
                true,
                Duration::from_millis(300),
                None,
            )
            .await
            .unwrap();
        assert!(r.into_body().collect().await.is_err());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_per_request_connect_timeout_bounds_the_connect() {
        // A listener whose accept queue is full drops new SYNs: connecting
        // hangs until the timeout.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
                Ok(Ok(c)) => held.push(c),
                _ => break,
            }
        }
        let pool = Pool::new(Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        let r = pool
            .send(
                addr,
                &Method::GET,
                head(&Method::GET),
                true,
                Duration::from_secs(30),
                Some(Duration::from_millis(300)),
            )
            .await;
        assert!(matches!(r, Err(Error::ConnectTimeout)), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        drop((held, listener));
    }

    #[tokio::test]
    async fn malformed_answers_are_errors_and_a_dead_endpoint_a_connect_error() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
            "HTTP/1.1 999999 Huh\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            let (addr, _) = backend(vec![bad]).await;
            let pool = Pool::new(Duration::from_secs(1));
            assert!(
                matches!(get(&pool, addr, Method::GET).await, Err(Error::Malformed(_))),
                "{bad:?}"
            );
        }
        let (addr, _) = backend(vec!["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]).await;
        let pool = Pool::new(Duration::from_secs(1));
        let r = pool
            .send(
                addr,
                &Method::GET,
                head(&Method::GET),
                true,
                Duration::from_secs(5),
                None,
            )
            .await
            .unwrap();
        assert!(r.into_body().collect().await.is_err(), "a broken chunk fails the body");
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(matches!(get(&pool, dead, Method::GET).await, Err(Error::Connect(_))));
    }
}
