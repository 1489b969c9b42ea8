//! A client connection with its request stream checked by a [`Framer`]
//! before hyper parses it. On a violation, what went before passes, then a
//! request line hyper itself refuses: hyper answers 400 in order (after any
//! response still owed) and closes the connection.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::framing::Framer;

/// What replaces an offending message: a method with a control character,
/// which hyper answers with 400 Bad Request and a close.
const POISON: &[u8] = b"\x01 / HTTP/1.1\r\n\r\n";

/// The longest bound kept (longer ones would overflow the clock).
pub(crate) const YEAR: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// A connection whose reads go through a [`Framer`].
pub(crate) struct Guarded<S> {
    inner: S,
    framer: Framer,
    /// Bytes read from the client, not yet checked.
    staging: Box<[u8]>,
    /// Checked bytes not yet handed to the parser, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// A violation was met: nothing more is read.
    poisoned: bool,
    peer: std::net::SocketAddr,
    /// How long a started head may take to complete, and when the one
    /// being collected started.
    head_timeout: std::time::Duration,
    head_started: Option<Instant>,
    /// How long the connection may stay silent both ways (keep-alive
    /// between requests, a stalled body), and when a byte last passed.
    idle_timeout: std::time::Duration,
    active: Instant,
    /// One timer for both bounds, never later than either: it is set to
    /// fire within the shorter bound of when it is set, so a bound that
    /// starts later cannot be missed, and activity costs no timer update.
    /// When it fires, the bounds are checked and it is set again.
    timer: Pin<Box<tokio::time::Sleep>>,
    /// A request passed and no byte of its response went out yet: the
    /// backend may take its time (its own timeout applies), not idle.
    awaiting: bool,
    heads: u64,
    /// A request head passed and its body is still coming.
    owing: bool,
    /// Counts refused requests.
    refused: Option<prometheus_client::metrics::counter::Counter>,
    /// A client that stops reading: how long a write may wait (nginx's
    /// send_timeout), and when the one waiting gives up.
    send_timeout: std::time::Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The connection's requests whose responses are not yet sent whole:
    /// while there are any, the connection is not idle (a response may
    /// stream with long silences; its route's read timeout bounds them).
    in_flight: Option<Arc<AtomicUsize>>,
}

/// One request of a connection, from its head until its response is sent
/// whole (or given up): counted in the connection's [`Guarded::tracking`].
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`InFlight`] until it is
/// sent whole (hyper drops it then).
pub(crate) struct Tracked<B> {
    pub(crate) body: B,
    pub(crate) _in_flight: InFlight,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl<S> Guarded<S> {
    pub(crate) fn new(
        inner: S,
        max_head: usize,
        head_timeout: std::time::Duration,
        idle_timeout: std::time::Duration,
        peer: std::net::SocketAddr,
    ) -> Self {
        Self {
            idle_timeout: idle_timeout.min(YEAR),
            active: Instant::now(),
            timer: Box::pin(tokio::time::sleep(head_timeout.min(idle_timeout).min(YEAR))),
            awaiting: false,
            heads: 0,
            owing: false,
            refused: None,
            send_timeout: idle_timeout,
            stalled: None,
            in_flight: None,
            // (Bounded so that deadlines never overflow the clock.)
            head_timeout: head_timeout.min(YEAR),
            // The first head's time runs from the connection's start: a
            // client that connects and sends nothing gets the head bound,
            // as in nginx (client_header_timeout), not the keep-alive one.
            head_started: Some(Instant::now()),
            inner,
            framer: Framer::new(max_head),
            staging: vec![0; 16 * 1024].into_boxed_slice(),
            out: Vec::new(),
            out_pos: 0,
            poisoned: false,
            peer,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.poisoned {
                // End of stream: hyper answers what it has, then closes.
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = this.check_bounds(cx) {
                this.poisoned = true;
                return Poll::Ready(Err(e));
            }
            let mut staging = ReadBuf::new(&mut this.staging);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut staging))?;
            let read = staging.filled();
            if read.is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.active = Instant::now();
            if let Err(v) = this.framer.feed(read, &mut this.out) {
                // Counted and said (at debug: a flood must not flood the log).
                if let Some(refused) = &this.refused {
                    refused.inc();
                }
                tracing::debug!(client = %this.peer, violation = %v, "request refused");
                this.out.extend_from_slice(POISON);
                this.poisoned = true;
            }
            // A request is in once its body is: until then the client owes
            // bytes and its silence counts (nginx's client_body_timeout).
            if this.framer.heads() != this.heads {
                this.heads = this.framer.heads();
                this.owing = true;
            }
            if this.owing && !this.framer.in_body() {
                this.owing = false;
                this.awaiting = true;
            }
            match (this.framer.in_head(), this.head_started.is_some()) {
                (true, false) => this.head_started = Some(this.active),
                (false, true) => this.head_started = None,
                _ => {}
            }
        }
    }
}

impl<S> Guarded<S> {
    /// When the timer has fired: an error if a head took too long
    /// (slowloris) or the connection was silent too long; otherwise the
    /// timer is set again. Registers for the timer's wake-up.
    fn check_bounds(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        while self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if self.head_started.is_some_and(|s| now >= s + self.head_timeout) {
                tracing::debug!(client = %self.peer, "request head not complete in time; closing");
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request head timeout",
                ));
            }
            // A tunnel (after a 101) is the two ends' business; HTTP/2 is
            // bounded by its silence both ways, like an HTTP/1 connection
            // between requests (hyper has no idle bound for it).
            // (A request body the client still owes is the client's
            // silence: it counts, as nginx's client_body_timeout.)
            let answering = !self.owing && self.in_flight.as_ref().is_some_and(|n| n.load(Ordering::Relaxed) > 0);
            let timed = (!self.framer.is_opaque() || self.framer.is_h2()) && !self.awaiting && !answering;
            if timed && now >= self.active + self.idle_timeout {
                tracing::debug!(client = %self.peer, "connection idle too long; closing");
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout"));
            }
            let mut next = now + self.head_timeout.min(self.idle_timeout);
            if let Some(s) = self.head_started {
                next = next.min(s + self.head_timeout);
            }
            if timed {
                next = next.min(self.active + self.idle_timeout);
            }
            self.timer.as_mut().reset(next);
        }
        Ok(())
    }

    /// The same, not idle while `in_flight` (see [`InFlight`]) counts
    /// requests.
    pub(crate) fn tracking(mut self, in_flight: Arc<AtomicUsize>) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    /// The same, counting refused requests in `counter`.
    pub(crate) fn counting(mut self, counter: prometheus_client::metrics::counter::Counter) -> Self {
        self.refused = Some(counter);
        self
    }

    /// A write could not proceed: arms the stall deadline, and says
    /// whether it has run out (the client stopped reading).
    fn stall(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.send_timeout;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        deadline.as_mut().poll(cx).is_ready()
    }

    /// Bytes went out: the connection is not idle.
    fn wrote(&mut self, n: usize) {
        self.stalled = None;
        if n > 0 {
            self.awaiting = false;
            self.active = Instant::now();
        }
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// A write that waits on the client: pending, or an error once it has
    /// waited the send timeout.
    fn stalled_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.stall(cx) {
            tracing::debug!(client = %self.peer, "client not reading; closing");
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "send timeout: the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let n = match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => r?,
            Poll::Pending => return self.stalled_write(cx),
        };
        self.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let n = match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => r?,
            Poll::Pending => return self.stalled_write(cx),
        };
        self.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
