//! Strict HTTP/1.1 request framing, checked on the bytes a client sends
//! before the HTTP parser sees them (sans I/O: bytes in, bytes out).
//!
//! hyper accepts some messages RFC 9112 lets a server reject and a proxy
//! should: a `Content-Length` beside a `Transfer-Encoding` (hyper drops the
//! length and frames by the coding), the classic request smuggling vector,
//! and a bare LF. The [`Framer`] follows the request stream (each head,
//! then its body by length or chunk by chunk) and refuses, on the first
//! offence:
//! - a bare LF or a bare CR where a line must end in CRLF;
//! - obsolete line folding (a header line starting with a space or tab);
//! - a header name that is not a token, or a header value with a control
//!   character (NUL, …; a tab is fine);
//! - `Content-Length` that is not digits, or more than one of them;
//! - `Content-Length` with `Transfer-Encoding`; a `Transfer-Encoding` other
//!   than `chunked`, or on HTTP/1.0;
//! - a chunk size that is not hexadecimal or overflows, a chunk not
//!   followed by CRLF;
//! - a head longer than the limit.
//!
//! Heads are held until complete and checked whole; bodies pass as they
//! come. After an upgrade request (or CONNECT), or the HTTP/2 preface, the
//! rest of the stream is not HTTP/1 and passes unchecked.
//!
//! [`Dechunker`] decodes chunked bodies (a backend's responses).

use bytes::{Bytes, BytesMut};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A line ended in LF alone, or a CR was not followed by LF.
    #[error("a line not ended by CRLF (bare LF or CR)")]
    BareLineEnd,
    /// A header line started with whitespace (obs-fold).
    #[error("obsolete line folding")]
    ObsFold,
    /// A header name with a character a token may not hold.
    #[error("an invalid header name")]
    HeaderName,
    /// A control character in the request line or a header value.
    #[error("a control character in the request head")]
    Control,
    /// `Content-Length` is not a number.
    #[error("an invalid Content-Length")]
    Length,
    /// `Content-Length` more than once (or a list).
    #[error("more than one Content-Length")]
    DuplicateLength,
    /// `Content-Length` and `Transfer-Encoding` together.
    #[error("Content-Length with Transfer-Encoding")]
    LengthWithCoding,
    /// A transfer coding other than `chunked` (or on HTTP/1.0).
    #[error("a Transfer-Encoding other than chunked")]
    Coding,
    /// A malformed chunk size line, or chunk data not ended by CRLF.
    #[error("malformed chunked body")]
    Chunk,
    /// The head is longer than the limit.
    #[error("request head too large")]
    TooLarge,
}

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a head.
    Head,
    /// A body of this many bytes left, then (if `then_opaque`) opaque.
    Fixed { left: u64, then_opaque: bool },
    /// A chunked body.
    Chunked(Chunk),
    /// Not HTTP/1 any more (upgraded, CONNECT, HTTP/2): unchecked.
    Opaque,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The size line: digits seen, value so far, in an extension, CR seen.
    Size {
        digits: u8,
        value: u64,
        ext: bool,
        cr: bool,
    },
    /// Whitespace after the size of this value.
    SizeWs { value: u64 },
    /// Data bytes left.
    Data(u64),
    /// The CR after the data.
    DataCr,
    /// The LF after the data.
    DataLf,
    /// Trailer lines: bytes on this line, CR seen.
    Trailer { len: usize, cr: bool },
}

impl Chunk {
    /// The state after framing byte `b` (in any state but data); `None`
    /// once the last chunk's trailer section has ended. Trailer lines are
    /// at most `max_line` bytes.
    fn step(self, b: u8, max_line: usize) -> Result<Option<Chunk>, Violation> {
        Ok(Some(match self {
            Chunk::Size { cr: true, .. } if b != b'\n' => return Err(Violation::Chunk),
            Chunk::Size {
                cr: true,
                digits,
                value,
                ..
            } => match (digits, value) {
                (0, _) => return Err(Violation::Chunk),
                (_, 0) => Chunk::Trailer { len: 0, cr: false },
                (_, n) => Chunk::Data(n),
            },
            Chunk::Size { ext, .. } if b == b'\n' => {
                let _ = ext;
                return Err(Violation::BareLineEnd);
            }
            Chunk::Size { digits, value, ext, .. } if b == b'\r' => Chunk::Size {
                digits,
                value,
                ext,
                cr: true,
            },
            Chunk::Size {
                digits,
                value,
                ext: true,
                ..
            } => {
                if b != b'\t' && (b < 0x20 || b == 0x7f) {
                    return Err(Violation::Chunk);
                }
                Chunk::Size {
                    digits,
                    value,
                    ext: true,
                    cr: false,
                }
            }
            Chunk::Size { digits, value, .. } => match b {
                b';' if digits > 0 => Chunk::Size {
                    digits,
                    value,
                    ext: true,
                    cr: false,
                },
                b' ' | b'\t' if digits > 0 => Chunk::SizeWs { value },
                _ => {
                    let d = (b as char).to_digit(16).ok_or(Violation::Chunk)?;
                    // 15 significant hex digits: sizes up to 2^60, far past
                    // any body (leading zeros do not count).
                    if digits >= 15 && value != 0 {
                        return Err(Violation::Chunk);
                    }
                    Chunk::Size {
                        digits: if value == 0 { 1 } else { digits + 1 },
                        value: value * 16 + u64::from(d),
                        ext: false,
                        cr: false,
                    }
                }
            },
            // Whitespace after the size may only lead to an extension or
            // the line's end ("4 5" is no size).
            Chunk::SizeWs { value } => match b {
                b' ' | b'\t' => self,
                b';' => Chunk::Size {
                    digits: 1,
                    value,
                    ext: true,
                    cr: false,
                },
                b'\r' => Chunk::Size {
                    digits: 1,
                    value,
                    ext: false,
                    cr: true,
                },
                b'\n' => return Err(Violation::BareLineEnd),
                _ => return Err(Violation::Chunk),
            },
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::DataLf if b == b'\n' => Chunk::Size {
                digits: 0,
                value: 0,
                ext: false,
                cr: false,
            },
            Chunk::DataCr | Chunk::DataLf => return Err(Violation::Chunk),
            Chunk::Trailer { cr: true, len } => {
                if b != b'\n' {
                    return Err(Violation::BareLineEnd);
                }
                if len == 0 {
                    return Ok(None);
                }
                Chunk::Trailer { len: 0, cr: false }
            }
            Chunk::Trailer { len, .. } => match b {
                b'\r' => Chunk::Trailer { len, cr: true },
                b'\n' => return Err(Violation::BareLineEnd),
                _ if len >= max_line => return Err(Violation::TooLarge),
                _ => Chunk::Trailer {
                    len: len + 1,
                    cr: false,
                },
            },
            Chunk::Data(_) => self,
        }))
    }
}

/// The HTTP/2 connection preface (prior knowledge, RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Follows one connection's request stream.
#[derive(Debug)]
pub struct Framer {
    state: State,
    head: Vec<u8>,
    /// Bytes of the head's current line so far.
    line: usize,
    max_head: usize,
    heads: u64,
    h2: bool,
}

impl Framer {
    /// A framer refusing heads longer than `max_head` bytes.
    pub fn new(max_head: usize) -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            line: 0,
            max_head,
            heads: 0,
            h2: false,
        }
    }

    /// Whether the stream is no longer HTTP/1 (unchecked from here on).
    pub fn is_opaque(&self) -> bool {
        self.state == State::Opaque
    }

    /// Whether the stream turned out to be HTTP/2 (its preface came).
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// How many request heads have passed whole.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Whether a request body is coming (part of it is still awaited).
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Fixed { left, .. } if left > 0) || matches!(self.state, State::Chunked(_))
    }

    /// Whether part of a request head has come and the rest is awaited.
    pub fn in_head(&self) -> bool {
        self.state == State::Head && !self.head.is_empty()
    }

    /// Takes bytes the client sent; appends to `out` those that may go on
    /// to the parser (complete, checked heads; body bytes as they come).
    /// On a violation, `out` holds what went before the offending message
    /// and the framer must not be fed again.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Violation> {
        while !input.is_empty() {
            match self.state {
                State::Opaque => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                State::Fixed { left, then_opaque } => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let left = left - n as u64;
                    self.state = match (left, then_opaque) {
                        (0, true) => State::Opaque,
                        (0, false) => State::Head,
                        _ => State::Fixed { left, then_opaque },
                    };
                }
                State::Chunked(chunk) => {
                    let used = self.chunked(chunk, input, out)?;
                    input = &input[used..];
                }
                State::Head => {
                    let used = self.head_bytes(input, out)?;
                    input = &input[used..];
                }
            }
        }
        Ok(())
    }

    /// Collects head bytes; on the end of the head, checks it and sets the
    /// body's framing. Returns the bytes used. (One pass over the bytes,
    /// copied once: heads are most of what a client sends.)
    fn head_bytes(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Violation> {
        // `input[from..]` is not in `self.head` yet.
        let mut from = 0;
        let mut prev = self.head.last().copied();
        for (i, &b) in input.iter().enumerate() {
            match (prev, b) {
                (Some(b'\r'), b'\n') => {}
                (Some(b'\r'), _) | (_, b'\n') => return Err(Violation::BareLineEnd),
                _ => {}
            }
            prev = Some(b);
            let len = self.head.len() + (i + 1 - from);
            if len > self.max_head {
                return Err(Violation::TooLarge);
            }
            if b != b'\n' {
                self.line += 1;
                continue;
            }
            // A line ended: was it empty (its CR alone)?
            let empty = self.line == 1;
            self.line = 0;
            // Empty lines before a request line are ignored (RFC 9112 §2.2).
            if len == 2 {
                out.extend_from_slice(b"\r\n");
                self.head.clear();
                from = i + 1;
                prev = None;
                continue;
            }
            // Only as the first thing the client sends (RFC 9113 §3.4):
            // after a request it would turn the rest of the stream opaque.
            if len == H2_PREFACE.len() && self.heads == 0 {
                let (held, new) = H2_PREFACE.split_at(self.head.len());
                if self.head == held && &input[from..=i] == new {
                    out.append(&mut self.head);
                    out.extend_from_slice(new);
                    self.state = State::Opaque;
                    self.h2 = true;
                    return Ok(i + 1);
                }
            }
            if empty {
                self.head.extend_from_slice(&input[from..=i]);
                let framing = check_head(&self.head)?;
                out.append(&mut self.head);
                self.heads += 1;
                self.state = framing;
                return Ok(i + 1);
            }
        }
        self.head.extend_from_slice(&input[from..]);
        Ok(input.len())
    }

    /// Follows a chunked body. Returns the bytes used.
    fn chunked(&mut self, mut chunk: Chunk, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Violation> {
        let mut used = 0;
        while used < input.len() {
            if let Chunk::Data(left) = chunk {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len() - used);
                out.extend_from_slice(&input[used..used + n]);
                used += n;
                let left = left - n as u64;
                chunk = if left == 0 { Chunk::DataCr } else { Chunk::Data(left) };
                continue;
            }
            let b = input[used];
            used += 1;
            out.push(b);
            match chunk.step(b, self.max_head)? {
                Some(next) => chunk = next,
                None => {
                    self.state = State::Head;
                    return Ok(used);
                }
            }
        }
        self.state = State::Chunked(chunk);
        Ok(used)
    }
}

/// Whether `b` may be in a header name (RFC 9110 tchar).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks a whole head (ending in CRLF CRLF); returns how its body is
/// framed.
fn check_head(head: &[u8]) -> Result<State, Violation> {
    let body = &head[..head.len() - 4];
    let mut lines = body.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    if request_line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Violation::Control);
    }
    let http10 = request_line.ends_with(b"HTTP/1.0");
    let connect = request_line.starts_with(b"CONNECT ");
    let mut length: Option<u64> = None;
    let mut coding = false;
    let mut upgrade = false;
    let mut connection_upgrade = false;
    for line in lines {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(Violation::ObsFold);
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(Violation::HeaderName)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| tchar(b)) {
            return Err(Violation::HeaderName);
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Violation::Control);
        }
        let value = value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(Violation::DuplicateLength);
            }
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Err(Violation::Length);
            }
            length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            if length.is_none() {
                return Err(Violation::Length);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // One coding, chunked, once: what nginx accepts too.
            if coding || http10 || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Violation::Coding);
            }
            coding = true;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_upgrade |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        }
    }
    if coding && length.is_some() {
        return Err(Violation::LengthWithCoding);
    }
    // HTTP/1.0 never upgrades; the proxy closes the connection after any
    // answer but a 101, so what follows a refused upgrade is never parsed.
    let then_opaque = connect || (upgrade && connection_upgrade && !http10);
    Ok(match (coding, length) {
        (true, _) => State::Chunked(Chunk::Size {
            digits: 0,
            value: 0,
            ext: false,
            cr: false,
        }),
        (false, Some(n)) if n > 0 => State::Fixed { left: n, then_opaque },
        _ if then_opaque => State::Opaque,
        _ => State::Head,
    })
}

/// Decodes a chunked message body (RFC 9112 §7.1) from bytes as they
/// arrive: the data without its framing. Chunk extensions and trailer
/// fields are read and dropped; sizes past 15 significant hex digits, bare
/// LFs and anything but CRLF after a chunk are errors.
#[derive(Debug, Clone, Copy)]
pub struct Dechunker {
    state: Chunk,
    done: bool,
}

impl Default for Dechunker {
    fn default() -> Self {
        Self {
            state: Chunk::Size {
                digits: 0,
                value: 0,
                ext: false,
                cr: false,
            },
            done: false,
        }
    }
}

/// Bytes of one trailer line accepted.
const MAX_TRAILER_LINE: usize = 8 * 1024;

/// What [`Dechunker::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Dechunked {
    /// Body bytes (taken from the buffer).
    Data(Bytes),
    /// Every byte given was framing: more are needed.
    More,
    /// The last chunk and the trailers are read; bytes after them stay in
    /// the buffer.
    End,
}

impl Dechunker {
    /// Consumes framing from the front of `buf` up to the next body bytes,
    /// which it returns, or until `buf` is empty or the body has ended.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Dechunked, Violation> {
        use bytes::Buf as _;
        while !buf.is_empty() && !self.done {
            if let Chunk::Data(left) = self.state {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let left = left - take as u64;
                self.state = if left == 0 { Chunk::DataCr } else { Chunk::Data(left) };
                return Ok(Dechunked::Data(buf.split_to(take).freeze()));
            }
            let b = buf[0];
            buf.advance(1);
            match self.state.step(b, MAX_TRAILER_LINE)? {
                Some(next) => self.state = next,
                None => self.done = true,
            }
        }
        Ok(match self.done {
            true => Dechunked::End,
            false => Dechunked::More,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(input: &[u8]) -> (Vec<u8>, Result<(), Violation>) {
        let mut f = Framer::new(64 * 1024);
        let mut out = Vec::new();
        let r = f.feed(input, &mut out);
        (out, r)
    }

    #[test]
    fn good_requests_pass_whole() {
        let reqs: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\nX-Tab: a\tb\r\n\r\n",
        ];
        for r in reqs {
            let (out, res) = run(r);
            assert_eq!(res, Ok(()), "{}", String::from_utf8_lossy(r));
            assert_eq!(&out, r);
        }
    }

    #[test]
    fn smuggling_vectors_are_refused() {
        let cases: &[(&[u8], Violation)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Violation::LengthWithCoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                Violation::LengthWithCoding,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                Violation::DuplicateLength,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n", Violation::Length),
            (b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n", Violation::Length),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Violation::Coding,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Violation::Coding,
            ),
            (b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", Violation::ObsFold),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", Violation::BareLineEnd),
            (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", Violation::BareLineEnd),
            (b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n", Violation::Control),
            (b"GET / HTTP/1.1\r\nX A: b\r\n\r\n", Violation::HeaderName),
            (b"GET / HTTP/1.1\r\nX-A : b\r\n\r\n", Violation::HeaderName),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                Violation::Chunk,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
                Violation::Chunk,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
                Violation::Chunk,
            ),
        ];
        for (input, want) in cases {
            let (out, res) = run(input);
            assert_eq!(res, Err(*want), "{}", String::from_utf8_lossy(input));
            // Nothing of an offending head went on (a body's head did, and
            // its body up to the fault).
            if *want != Violation::Chunk {
                assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
            }
        }
    }

    #[test]
    fn a_second_request_after_a_good_one_is_checked_too() {
        let (out, res) = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(res, Err(Violation::LengthWithCoding));
        assert_eq!(out, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn a_head_over_the_limit_is_refused() {
        let mut f = Framer::new(100);
        let mut out = Vec::new();
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200));
        assert_eq!(f.feed(long.as_bytes(), &mut out), Err(Violation::TooLarge));
    }

    #[test]
    fn upgrades_and_h2_pass_unchecked_after_their_head() {
        let (out, res) = run(b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x00\x01binary\n");
        assert_eq!(res, Ok(()));
        assert!(out.ends_with(b"\x00\x01binary\n"));
        let (_, res) = run(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04");
        assert_eq!(res, Ok(()));
        // Not after a request: then it is a head like any other, checked.
        let mut f = Framer::new(64 * 1024);
        let mut out = Vec::new();
        let after = f.feed(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            &mut out,
        );
        assert!(!f.is_h2() && !f.is_opaque(), "{after:?}");
    }

    /// A request stream the reference model frames: heads of plain
    /// headers, bodies by length or in chunks.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let body = proptest::collection::vec(any::<u8>(), 0..40);
        let request =
            (body, any::<bool>(), proptest::collection::vec(1usize..8, 0..4)).prop_map(|(body, chunked, cuts)| {
                let mut r = b"POST /p HTTP/1.1\r\nHost: a\r\n".to_vec();
                if chunked {
                    r.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    let mut rest = &body[..];
                    for c in cuts {
                        let n = c.min(rest.len());
                        if n == 0 {
                            break;
                        }
                        r.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                        r.extend_from_slice(&rest[..n]);
                        r.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                    }
                    if !rest.is_empty() {
                        r.extend_from_slice(format!("{:X}\r\n", rest.len()).as_bytes());
                        r.extend_from_slice(rest);
                        r.extend_from_slice(b"\r\n");
                    }
                    r.extend_from_slice(b"0\r\n\r\n");
                } else {
                    r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                    r.extend_from_slice(&body);
                }
                r
            });
        proptest::collection::vec(request, 1..4).prop_map(|rs| rs.concat())
    }

    proptest! {
        /// Well-framed streams pass byte for byte, however they are cut
        /// into reads.
        #[test]
        fn well_framed_streams_pass_unchanged_in_any_pieces(s in stream(), cuts in proptest::collection::vec(1usize..64, 0..20)) {
            let mut f = Framer::new(64 * 1024);
            let mut out = Vec::new();
            let mut rest = &s[..];
            for c in cuts {
                let n = c.min(rest.len());
                f.feed(&rest[..n], &mut out).unwrap();
                rest = &rest[n..];
            }
            f.feed(rest, &mut out).unwrap();
            prop_assert_eq!(out, s);
            prop_assert_eq!(f.state, State::Head);
        }

        /// Head-like input (line ends, bare CRs and LFs, the HTTP/2
        /// preface, lengths) gives the same bytes and the same verdict
        /// however it is cut into reads.
        #[test]
        fn any_cut_gives_the_same_verdict(
            parts in proptest::collection::vec(prop_oneof![
                Just(&b"\r\n"[..]), Just(&b"\r"[..]), Just(&b"\n"[..]), Just(&b"GET / HTTP/1.1"[..]),
                Just(&b"Host: a"[..]), Just(&b"Content-Length: 2"[..]), Just(&b"PRI * HTTP/2.0"[..]),
                Just(&b"x"[..]), Just(&b" "[..]), Just(&b"\r\n\r\n"[..]),
            ], 0..40),
            cuts in proptest::collection::vec(1usize..20, 0..30),
        ) {
            let input = parts.concat();
            // A small limit: heads past it are met too.
            let mut whole_out = Vec::new();
            let whole = Framer::new(64).feed(&input, &mut whole_out);
            let mut f = Framer::new(64);
            let mut out = Vec::new();
            let mut rest = &input[..];
            let mut verdict = Ok(());
            for c in cuts.into_iter().chain([usize::MAX]) {
                let n = c.min(rest.len());
                verdict = f.feed(&rest[..n], &mut out);
                rest = &rest[n..];
                if verdict.is_err() || rest.is_empty() {
                    break;
                }
            }
            prop_assert_eq!(verdict, whole);
            prop_assert_eq!(out, whole_out);
        }

        /// Any input: no panic, and what goes on is a prefix of it.
        #[test]
        fn any_bytes_give_a_prefix_or_a_violation(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (out, _) = run(&input);
            prop_assert!(input.starts_with(&out));
        }
    }

    /// Feeds `wire` to a dechunker in pieces cut at `cuts`: the body, or
    /// the first error; and what is left after the end.
    fn dechunk(wire: &[u8], cuts: &[usize]) -> (Vec<u8>, Result<Vec<u8>, Violation>) {
        let mut d = Dechunker::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut at = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        ends.push(wire.len());
        ends.sort_unstable();
        for end in ends {
            buf.extend_from_slice(&wire[at..end.max(at)]);
            at = end.max(at);
            loop {
                match d.decode(&mut buf) {
                    Ok(Dechunked::Data(b)) => body.extend_from_slice(&b),
                    Ok(Dechunked::More) => break,
                    Ok(Dechunked::End) => return ([&buf[..], &wire[at..]].concat(), Ok(body)),
                    Err(e) => return (buf.to_vec(), Err(e)),
                }
            }
        }
        (buf.to_vec(), Err(Violation::TooLarge))
    }

    #[test]
    fn dechunker_reads_sizes_extensions_and_trailers() {
        let wire =
            b"4;name=value\r\nWiki\r\n5 ; x\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nNEXT";
        let (rest, body) = dechunk(wire, &[]);
        assert_eq!(body.unwrap(), b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(rest, b"NEXT");
        // Leading zeros are not digits that count; whitespace may end a size.
        let (_, body) = dechunk(b"00000000000000000004 \t\r\nWiki\r\n0\r\n\r\n", &[]);
        assert_eq!(body.unwrap(), b"Wiki");
        for bad in [
            &b"x\r\n"[..],
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiX\r\n0\r\n\r\n",
            b"\r\n",
            b"1111111111111111\r\n",
            b"0\r\nbare\nLF\r\n\r\n",
            b"4 5\r\nWiki\r\n0\r\n\r\n",
        ] {
            assert!(dechunk(bad, &[]).1.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        /// Any body, cut into any chunks with or without extensions and
        /// trailers, fed in any pieces, comes out whole, and what follows
        /// the body is left in the buffer.
        #[test]
        fn dechunker_round_trips(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..20),
            ext in any::<bool>(),
            trailer in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                wire.extend_from_slice(format!("{n:X}").as_bytes());
                if ext {
                    wire.extend_from_slice(b";a=\"b c\"");
                }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\n");
            if trailer {
                wire.extend_from_slice(b"X-Sum: 1\r\n");
            }
            wire.extend_from_slice(b"\r\nafter");
            let (left, got) = dechunk(&wire, &cuts);
            prop_assert_eq!(got.unwrap(), body);
            prop_assert_eq!(left, b"after".to_vec());
        }

        /// Arbitrary bytes never panic, and never yield more body bytes
        /// than were given.
        #[test]
        fn dechunker_survives_anything(wire in proptest::collection::vec(any::<u8>(), 0..512), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let (_, got) = dechunk(&wire, &cuts);
            if let Ok(body) = got {
                prop_assert!(body.len() <= wire.len());
            }
        }
    }
}
