//! lb-proxy serving, end to end: the binary and lb-echo backends on
//! loopback, manifests written by each test (Services, EndpointSlices
//! naming 127.0.0.x addresses, Ingresses).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Children stopped (by PID, SIGKILL) when the test ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An lb-echo answering as `service`/`pod` on `ip:port`.
fn echo(procs: &mut Procs, ip: &str, port: u16, service: &str, pod: &str) {
    echo_with(procs, ip, port, service, pod, &[]);
}

/// The same with more flags.
fn echo_with(procs: &mut Procs, ip: &str, port: u16, service: &str, pod: &str, extra: &[&str]) {
    let addr = format!("{ip}:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_lb-echo"))
        .args(["--listen", &addr, "--service", service, "--pod", pod])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    procs.0.push(child);
    wait_listening(&addr);
}

/// lb-proxy over `dir`; its port.
fn proxy(procs: &mut Procs, dir: &Path, extra: &[&str]) -> u16 {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["--manifests", dir.to_str().unwrap(), "--http-listen", &addr])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    procs.0.push(child);
    wait_listening(&addr);
    port
}

/// A Service with one named port, and its EndpointSlice listing `ips` on
/// `target`.
fn backend(name: &str, port: u16, target: u16, ips: &[&str]) -> String {
    let endpoints: String = ips
        .iter()
        .map(|ip| format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  ports: [{{name: http, port: {port}, targetPort: {target}}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {target}, protocol: TCP}}]\nendpoints:\n{endpoints}"
    )
}

const CLASS: &str =
    "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: lb}\nspec: {controller: lb.io/ingress}\n";

/// An Ingress for `host` with (path, service) Prefix rules, annotations
/// given as YAML flow pairs.
fn ingress(name: &str, host: &str, paths: &[(&str, &str)], annotations: &str) -> String {
    let rules: String = paths
        .iter()
        .map(|(path, svc)| {
            format!(
                "      - path: {path}\n        pathType: Prefix\n        backend:\n          service:\n            name: {svc}\n            port: {{name: http}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{{annotations}}}\n\
         spec:\n  ingressClassName: lb\n  rules:\n  - host: \"{host}\"\n    http:\n      paths:\n{rules}"
    )
}

/// One lb-echo (`web`, pod `web-0`, on 127.0.0.1) behind an Ingress for
/// `shop.example.com` with `annotations`, and lb-proxy (with `args`) over
/// it: the proxy's port, and the manifests directory (kept while in use).
fn shop(procs: &mut Procs, annotations: &str, args: &[&str]) -> (u16, tempfile::TempDir) {
    let target = free_port();
    echo(procs, "127.0.0.1", target, "web", "web-0");
    let dir = manifests(&[
        backend("web", 80, target, &["127.0.0.1"]),
        ingress("shop", "shop.example.com", &[("/", "web")], annotations),
    ]);
    let port = proxy(procs, dir.path(), args);
    (port, dir)
}

/// One HTTP/1.1 request as raw bytes; the whole answer (the connection is
/// closed after it).
fn raw(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits (10 s at most, then fails with `what`) until `done` holds: the
/// proxy follows its directory within a poll or two.
/// A manifests directory: our IngressClass and `docs`, in one file.
fn manifests(docs: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<&str> = std::iter::once(CLASS).chain(docs.iter().map(String::as_str)).collect();
    std::fs::write(dir.path().join("all.yaml"), all.join("---\n")).unwrap();
    dir
}

/// lb-proxy over one Ingress: `host`'s `/` to Service `service`, whose one
/// endpoint is 127.0.0.1:`target` (not necessarily an lb-echo), with
/// `annotations`. The proxy's port, and the manifests directory.
fn one_route(procs: &mut Procs, service: &str, target: u16, host: &str, annotations: &str) -> (u16, tempfile::TempDir) {
    let dir = manifests(&[
        backend(service, 80, target, &["127.0.0.1"]),
        ingress(service, host, &[("/", service)], annotations),
    ]);
    let port = proxy(procs, dir.path(), &[]);
    (port, dir)
}

/// The metrics text served on `port`.
fn scrape(port: u16) -> String {
    let (status, _, body) = split(&raw(
        port,
        "GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(status, 200);
    body
}

/// Asks shop.example.com/ws to upgrade to `lb-echo`: the connection, and
/// the answer's head (lower-cased), read to its end and no further.
fn upgrade(port: u16) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: shop.example.com\r\nConnection: Upgrade\r\nUpgrade: lb-echo\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).to_ascii_lowercase())
}

/// Sends SIGTERM to the process `pid`.
fn sigterm(pid: u32) {
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
}

/// How `child` exited, waited for at most `within`.
fn exit_within(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A GET for `host` and `path`: status, head, body.
fn get(port: u16, host: &str, path: &str, headers: &str) -> (u16, String, String) {
    let answer = raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"),
    );
    split(&answer)
}

fn split(answer: &str) -> (u16, String, String) {
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    (status, head.to_owned(), body.to_owned())
}

/// The JSON lb-echo answered with.
fn echoed(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn header<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v["headers"][name][0].as_str()
}

#[test]
fn requests_go_by_host_and_path_to_the_services_endpoints_with_forwarding_headers() {
    let mut procs = Procs(Vec::new());
    let target = free_port();
    echo(&mut procs, "127.0.0.1", target, "web", "web-0");
    let api_target = free_port();
    echo(&mut procs, "127.0.0.2", api_target, "api", "api-0");
    let dir = manifests(&[
        backend("web", 80, target, &["127.0.0.1"]),
        backend("api", 8080, api_target, &["127.0.0.2"]),
        ingress("shop", "shop.example.com", &[("/", "web"), ("/api", "api")], ""),
        ingress("any", "HOSTLESS", &[("/anything", "web")], "")
            .replace("  - host: \"HOSTLESS\"\n    http:", "  - http:"),
    ]);
    let port = proxy(&mut procs, dir.path(), &[]);

    // HTTP/1.0 without a Host reaches a rule without one; what the proxy
    // owns (X-Forwarded-Host) never comes from an untrusted client.
    let answer = raw(
        port,
        "GET /anything HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
    );
    let (status, head, body) = split(&answer);
    assert_eq!(status, 200, "{head}");
    let v = echoed(&body);
    assert_ne!(header(&v, "x-forwarded-host"), Some("evil.example"), "{v}");
    assert_eq!(header(&v, "x-real-ip"), Some("127.0.0.1"));

    let (status, head, body) = get(port, "shop.example.com", "/api/items?x=1", "");
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("server: lb"), "{head}");
    let v = echoed(&body);
    assert_eq!(v["service"], "api");
    assert_eq!(v["target"], "/api/items?x=1");
    assert_eq!(
        header(&v, "host"),
        Some("shop.example.com"),
        "Host as the client sent it"
    );
    assert_eq!(header(&v, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&v, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(header(&v, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&v, "x-forwarded-host"), Some("shop.example.com"));
    assert_eq!(header(&v, "x-forwarded-port"), Some(port.to_string().as_str()));
    assert_eq!(header(&v, "x-request-id").map(str::len), Some(32));

    let (_, _, body) = get(port, "shop.example.com", "/cart", "");
    assert_eq!(echoed(&body)["service"], "web");

    // Forwarded headers from an untrusted client are overwritten; the
    // headers Connection names (hop-by-hop) are not forwarded.
    let (_, _, body) = get(
        port,
        "shop.example.com",
        "/",
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Secret: 1\r\nConnection: X-Secret\r\n\
         Forwarded: for=6.6.6.6\r\nX-Forwarded-Scheme: https\r\nProxy: http://evil:1\r\nX-Original-URL: /admin\r\nX_Rewrite_URL: /admin\r\n",
    );
    let v = echoed(&body);
    for name in [
        "forwarded",
        "x-forwarded-scheme",
        "proxy",
        "x-original-url",
        "x_rewrite_url",
    ] {
        assert_eq!(header(&v, name), None, "{name}: {v}");
    }
    assert_eq!(header(&v, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(&v, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&v, "x-secret"), None, "{v}");
    assert_eq!(header(&v, "connection"), None);

    // Unknown host: 404 from the proxy.
    let (status, _, _) = get(port, "other.example.com", "/", "");
    assert_eq!(status, 404);

    // An absolute-form target names the host; Host is ignored (RFC 9112
    // §3.2.2), for routing and for what the backend is told.
    let ask = |req: &str| split(&raw(port, req));
    let (status, _, body) =
        ask("GET http://shop.example.com/api/x HTTP/1.1\r\nHost: other.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    let v = echoed(&body);
    assert_eq!(
        (v["service"].as_str(), header(&v, "x-forwarded-host")),
        (Some("api"), Some("shop.example.com"))
    );
    let (status, _, _) =
        ask("GET http://other.example.com/api/x HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 404);
    // Asterisk-form is OPTIONS's alone; authority-form is CONNECT's.
    let (status, head, _) = ask("OPTIONS * HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 204, "{head}");
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
    for bad in ["GET * HTTP/1.1", "GET shop.example.com:80 HTTP/1.1"] {
        let (status, head, _) = ask(&format!("{bad}\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n"));
        assert_eq!(status, 400, "{bad}: {head}");
    }
    // Methods are case-sensitive: `get` is not GET; TRACE would echo what
    // the proxy adds.
    let (status, head, _) = ask("get /api/x HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 400, "{head}");
    let (status, head, _) = ask("TRACE /api/x HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 405, "{head}");
}

#[test]
fn endpoints_share_the_load_a_dead_one_is_skipped_and_none_is_503() {
    let mut procs = Procs(Vec::new());
    let target = free_port();
    for (i, ip) in ["127.0.0.1", "127.0.0.2", "127.0.0.3"].iter().enumerate() {
        echo(&mut procs, ip, target, "web", &format!("web-{i}"));
    }
    let dir = manifests(&[
        // 127.0.0.4 listens nowhere: connecting to it fails.
        backend("web", 80, target, &["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]),
        backend("empty", 80, target, &[]),
        ingress("shop", "shop.example.com", &[("/", "web"), ("/empty", "empty")], ""),
    ]);
    let metrics = free_port();
    let port = proxy(
        &mut procs,
        dir.path(),
        &["--metrics-listen", &format!("127.0.0.1:{metrics}")],
    );
    let mut pods = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..40 {
        let (status, head, body) = get(port, "shop.example.com", "/", "");
        assert_eq!(status, 200, "a GET is retried on the next endpoint: {head}");
        *pods
            .entry(echoed(&body)["pod"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert!(pods.values().all(|&n| n >= 10), "round robin: {pods:?}");
    // A POST without a body is retried too: nothing was sent.
    for _ in 0..8 {
        let answer = raw(
            port,
            "POST / HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(split(&answer).0, 200, "{answer}");
    }
    let (status, _, _) = get(port, "shop.example.com", "/empty", "");
    assert_eq!(status, 503);
    // The dead endpoint shows in the metrics though every GET was answered.
    let (_, _, body) = split(&raw(
        metrics,
        "GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
    ));
    let connects: u64 = body
        .lines()
        .filter(|l| l.starts_with("lb_proxy_upstream_errors_total{") && l.contains("kind=\"connect\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(connects >= 5, "{body}");
}

/// SIGTERM: what is in flight is answered, then the proxy exits (0)
/// within the drain bound; a directory that never holds still (a file
/// rewritten again and again) does not keep it from hearing the signal.
#[test]
fn sigterm_drains_in_flight_requests_and_exits_even_while_the_directory_churns() {
    let mut procs = Procs(Vec::new());
    let (port, dir) = shop(&mut procs, "", &["--drain-seconds", "5"]);
    let pid = procs.0.last().map(Child::id).unwrap();
    // A file that never holds still.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, path) = (stop.clone(), dir.path().join("churn.yaml"));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 2000 {
                let _ = std::fs::write(&path, format!("# {i}\n"));
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let slow = std::thread::spawn(move || get(port, "shop.example.com", "/delay/1500", ""));
    std::thread::sleep(Duration::from_millis(300));
    sigterm(pid);
    let (status, head, body) = slow.join().unwrap();
    assert_eq!(status, 200, "the request in flight is answered: {head}");
    assert_eq!(echoed(&body)["target"], "/delay/1500");
    let exit = exit_within(procs.0.last_mut().unwrap(), Duration::from_secs(10));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "still accepting");
}

/// `--shutdown-grace-seconds`: after SIGTERM the proxy says it is not
/// ready at once, yet still answers new connections for the grace period
/// (load balancers take a moment to stop sending), then stops listening.
#[test]
fn sigterm_keeps_accepting_for_the_grace_period_while_not_ready() {
    let mut procs = Procs(Vec::new());
    let metrics = free_port();
    let (port, _dir) = shop(
        &mut procs,
        "",
        &[
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
            "--shutdown-grace-seconds",
            "2",
        ],
    );
    let ready = || {
        split(&raw(
            metrics,
            "GET /readyz HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n",
        ))
        .0
    };
    eventually("ready", || ready() == 200);
    let pid = procs.0.last().map(Child::id).unwrap();
    let signalled = Instant::now();
    sigterm(pid);
    eventually("not ready after SIGTERM", || ready() != 200);
    // Within the grace: a new connection is still served.
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "{:?}",
        signalled.elapsed()
    );
    assert_eq!(get(port, "shop.example.com", "/x", "").0, 200);
    // After it: no longer listening, and gone.
    eventually("stops listening after the grace", || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert!(
        signalled.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        signalled.elapsed()
    );
    exit_within(procs.0.last_mut().unwrap(), Duration::from_secs(10));
}

/// SIGTERM is heard before anything is served too: in cluster mode
/// against an API server that never lists (here nothing listens), the
/// proxy waits for its first list, and exits (0) on the signal.
#[test]
fn sigterm_is_heard_while_waiting_for_the_first_list() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{closed}\", insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = dir.path().join("log");
    let mut procs = Procs(Vec::new());
    procs.0.push(
        Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--http-listen", &format!("127.0.0.1:{port}")])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    eventually("it waits for the first list", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("waiting for the first list"))
    });
    sigterm(procs.0[0].id());
    let exit = exit_within(&mut procs.0[0], Duration::from_secs(5));
    assert!(exit.success(), "{exit:?}");
}

/// A response that streams with a silence longer than the keep-alive
/// timeout (server-sent events, long polls) is not cut: the connection is
/// idle only between requests.
#[test]
fn a_response_streaming_with_long_silences_is_not_cut_as_idle() {
    let mut procs = Procs(Vec::new());
    // A backend that sends its head and a first chunk, waits 2.5 s, then
    // ends the body.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(4) {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read_exact(&mut byte).is_ok() {
                    head.push(byte[0]);
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst \r\n");
                std::thread::sleep(Duration::from_millis(2500));
                let _ = conn.write_all(b"4\r\nlast\r\n0\r\n\r\n");
                std::thread::sleep(Duration::from_millis(500));
            });
        }
    });
    let dir = manifests(&[
        backend("web", 80, target, &["127.0.0.1"]),
        ingress("shop", "shop.example.com", &[("/", "web")], ""),
    ]);
    let port = proxy(&mut procs, dir.path(), &["--keepalive-timeout", "1"]);
    let answer = raw(
        port,
        "GET /events HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("first ") && answer.contains("last"),
        "cut short: {answer:?}"
    );
    assert!(answer.ends_with("0\r\n\r\n"), "cut short: {answer:?}");
}

/// `proxy-read-timeout` is the backend's time to answer: a slow upload
/// longer than it is not cut (nginx buffers the body first), and a
/// backend slower than it gets 504.
#[test]
fn the_read_timeout_starts_when_the_request_is_sent_whole() {
    let mut procs = Procs(Vec::new());
    let (port, _dir) = shop(&mut procs, "nginx.ingress.kubernetes.io/proxy-read-timeout: \"1\"", &[]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 8\r\nConnection: close\r\n\r\n")
        .unwrap();
    for b in b"12345678" {
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(&[*b]).unwrap();
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let (status, head, body) = split(&String::from_utf8_lossy(&answer));
    assert_eq!(status, 200, "a 2.4 s upload under a 1 s read timeout: {head}");
    assert_eq!(echoed(&body)["body_bytes"], 8);
    let (status, head, _) = get(port, "shop.example.com", "/delay/2500", "");
    assert_eq!(status, 504, "{head}");
    // The same with a body sent whole at once: the timer starts then.
    let answer = raw(
        port,
        "POST /delay/2500 HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    );
    assert_eq!(split(&answer).0, 504, "{answer}");
}

/// Every request leaves a trace: one whose client goes away before the
/// answer is counted as 499 (nginx's "client closed request"), beside the
/// answered ones.
#[test]
fn a_request_its_client_abandons_is_counted_as_499() {
    let mut procs = Procs(Vec::new());
    let metrics = free_port();
    let (port, _dir) = shop(&mut procs, "", &["--metrics-listen", &format!("127.0.0.1:{metrics}")]);
    assert_eq!(get(port, "shop.example.com", "/x", "").0, 200);
    {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /delay/3000 HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let scrape = || scrape(metrics);
    eventually("the abandoned request is counted", || {
        scrape()
            .lines()
            .any(|l| l.starts_with("lb_proxy_requests_total{") && l.contains("status=\"499\"") && l.ends_with(" 1"))
    });
    // Under the Ingress and Service it was routed to.
    assert!(
        scrape().lines().any(|l| l.starts_with("lb_proxy_requests_total{")
            && l.contains("status=\"499\"")
            && l.contains("/shop\"")
            && l.contains("/web\"")),
        "{}",
        scrape()
    );
    assert!(
        scrape()
            .lines()
            .any(|l| l.starts_with("lb_proxy_requests_total{") && l.contains("status=\"200\"")),
        "{}",
        scrape()
    );
}

/// An IPv4 client of a dual-stack listener (`[::]`, seen by the socket
/// as `::ffff:127.0.0.1`) is matched by IPv4 ranges.
#[test]
fn ipv4_clients_of_a_dual_stack_listener_meet_ipv4_ranges() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("skipped: no IPv6 here");
        return;
    }
    let mut procs = Procs(Vec::new());
    let target = free_port();
    echo(&mut procs, "127.0.0.1", target, "web", "web-0");
    let dir = manifests(&[
        backend("web", 80, target, &["127.0.0.1"]),
        ingress(
            "deny",
            "deny.example",
            &[("/", "web")],
            "nginx.ingress.kubernetes.io/denylist-source-range: 127.0.0.1/32",
        ),
        ingress(
            "allow",
            "allow.example",
            &[("/", "web")],
            "nginx.ingress.kubernetes.io/allowlist-source-range: 127.0.0.0/8",
        ),
    ]);
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["--manifests", dir.path().to_str().unwrap()])
        .args(["--http-listen", &format!("[::]:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    procs.0.push(child);
    wait_listening(&format!("127.0.0.1:{port}"));
    let (status, head, _) = get(port, "deny.example", "/", "");
    assert_eq!(status, 403, "{head}");
    let (status, head, body) = get(port, "allow.example", "/", "");
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&echoed(&body), "x-real-ip"), Some("127.0.0.1"));
}

/// A backend that stops taking a request body (it accepted and never
/// reads) gets `proxy-send-timeout` (nginx's proxy_send_timeout, between
/// two writes), then the client a 504: the request does not hang.
#[test]
fn a_backend_that_stops_taking_the_body_gets_504_after_the_send_timeout() {
    let deaf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = deaf.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Holds the connection open, reading nothing, until the proxy
        // gives up on it.
        let (mut s, _) = deaf.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        std::thread::sleep(Duration::from_secs(4));
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let mut procs = Procs(Vec::new());
    let (port, _dir) = one_route(
        &mut procs,
        "deaf",
        target,
        "upload.example.com",
        "nginx.ingress.kubernetes.io/proxy-send-timeout: \"1\", nginx.ingress.kubernetes.io/proxy-body-size: 256m",
    );
    const SIZE: usize = 128 << 20;
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    client
        .write_all(
            format!("POST /up HTTP/1.1\r\nHost: upload.example.com\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let started = Instant::now();
    let writer = {
        let mut w = client.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 16];
            let mut sent = 0;
            // Stops when the proxy closes (it answered), or all is sent.
            while sent < SIZE && w.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
            sent
        })
    };
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 504"),
        "{answer:?} after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    let _ = client.shutdown(std::net::Shutdown::Both);
    assert!(
        writer.join().unwrap() < SIZE,
        "the backend took it all: nothing was tested"
    );
    held.join().unwrap();
}

/// `proxy-connect-timeout` bounds the connect of requests with a body too
/// (they go over hyper's client, not the in-task one): 1 s, not the global
/// 5 s, against an endpoint whose accept queue is full (SYNs dropped).
#[test]
fn the_routes_connect_timeout_bounds_requests_with_a_body() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket.listen(0).unwrap()
    });
    let full = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&full, Duration::from_millis(200)) {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
    }
    let mut procs = Procs(Vec::new());
    let (port, _dir) = one_route(
        &mut procs,
        "full",
        full.port(),
        "slow.example.com",
        "nginx.ingress.kubernetes.io/proxy-connect-timeout: \"1\"",
    );
    let started = Instant::now();
    let answer = raw(
        port,
        "POST /up HTTP/1.1\r\nHost: slow.example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    let took = started.elapsed();
    let (status, head, _) = split(&answer);
    assert!(status == 502 || status == 504, "{head}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    drop((held, listener));
}

/// A request an Ingress refuses itself (its denylist's 403) is counted
/// under that Ingress, with no Service: who refused it is in the metrics.
#[test]
fn a_request_an_ingress_refuses_is_counted_under_it() {
    let mut procs = Procs(Vec::new());
    let metrics = free_port();
    let (port, _dir) = shop(
        &mut procs,
        "nginx.ingress.kubernetes.io/denylist-source-range: 127.0.0.1/32",
        &["--metrics-listen", &format!("127.0.0.1:{metrics}")],
    );
    assert_eq!(get(port, "shop.example.com", "/x", "").0, 403);
    let scrape = || scrape(metrics);
    eventually("the refused request is counted under its Ingress", || {
        scrape().lines().any(|l| {
            l.starts_with("lb_proxy_requests_total{")
                && l.contains("status=\"403\"")
                && l.contains("/shop\"")
                && l.contains("service=\"\"")
        })
    });
}

/// `load-balance: ewma` sends the requests to the endpoint that answers
/// fast; round robin (the default) to every endpoint in turn, slow or not.
#[test]
fn ewma_favours_the_fast_endpoint_where_round_robin_takes_turns() {
    let mut procs = Procs(Vec::new());
    let target = free_port();
    echo(&mut procs, "127.0.0.1", target, "web", "fast");
    echo_with(&mut procs, "127.0.0.2", target, "web", "slow", &["--delay-ms", "40"]);
    let dir = manifests(&[
        backend("web", 80, target, &["127.0.0.1", "127.0.0.2"]),
        ingress(
            "ewma",
            "ewma.example",
            &[("/", "web")],
            "nginx.ingress.kubernetes.io/load-balance: ewma",
        ),
        ingress("rr", "rr.example", &[("/", "web")], ""),
    ]);
    let port = proxy(&mut procs, dir.path(), &[]);
    let count = |host: &str| {
        let mut pods = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..40 {
            let (status, head, body) = get(port, host, "/", "");
            assert_eq!(status, 200, "{head}");
            *pods
                .entry(echoed(&body)["pod"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        pods
    };
    let rr = count("rr.example");
    assert_eq!(
        (rr.get("fast"), rr.get("slow")),
        (Some(&20), Some(&20)),
        "round robin: {rr:?}"
    );
    let ewma = count("ewma.example");
    // The slow one is tried (an endpoint not yet heard from costs
    // nothing) and then passed over while its 40 ms decay.
    assert!(ewma.get("slow").copied().unwrap_or(0) <= 2, "ewma: {ewma:?}");
}

#[test]
fn the_proxy_answers_redirects_body_limits_and_bad_framing_itself() {
    let mut procs = Procs(Vec::new());
    let target = free_port();
    echo(&mut procs, "127.0.0.1", target, "web", "web-0");
    let dir = manifests(&[
        backend("web", 80, target, &["127.0.0.1"]),
        ingress(
            "small",
            "small.example.com",
            &[("/", "web")],
            "nginx.ingress.kubernetes.io/proxy-body-size: \"10\"",
        ),
        ingress(
            "moved",
            "moved.example.com",
            &[("/", "web")],
            "nginx.ingress.kubernetes.io/permanent-redirect: \"https://new.example.com/\"",
        ),
    ]);
    let port = proxy(&mut procs, dir.path(), &[]);
    let (status, head, _) = get(port, "moved.example.com", "/x", "");
    assert_eq!(status, 301);
    assert!(head.contains("location: https://new.example.com/"), "{head}");
    // Within the limit, forwarded; over it, 413 before the backend.
    let small = |body: &str| {
        split(&raw(
            port,
            &format!(
                "POST / HTTP/1.1\r\nHost: small.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        ))
    };
    let (status, _, body) = small("0123456789");
    assert_eq!(status, 200);
    assert_eq!(echoed(&body)["body_bytes"], 10);
    assert_eq!(small("0123456789a").0, 413);
    // Smuggling vectors: a length beside a transfer coding, two lengths.
    for bad in [
        "POST / HTTP/1.1\r\nHost: small.example.com\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: small.example.com\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "GET / HTTP/1.1\r\nHost: small.example.com\r\nX-A: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: small.example.com\r\nX-A: a\0b\r\n\r\n",
        "GET / HTTP/1.1\nHost: small.example.com\n\n",
        // A chunk longer than it says: the client's body is broken (400,
        // not a backend failure).
        "POST / HTTP/1.1\r\nHost: small.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
        // HTTP/1.1 without a Host.
        "GET / HTTP/1.1\r\n\r\n",
        // After a good request on the same connection, too.
        "GET / HTTP/1.1\r\nHost: small.example.com\r\n\r\nPOST / HTTP/1.1\r\nHost: small.example.com\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let answer = raw(port, bad);
        // The last answer on the connection is the refusal, and it closes.
        let last = answer.rfind("HTTP/1.1 ").map_or(answer.as_str(), |i| &answer[i..]);
        let (status, head, _) = split(last);
        assert_eq!(status, 400, "{bad:?} → {answer}");
        assert!(head.contains("connection: close"), "{head}");
    }
}

#[test]
fn a_slow_client_is_cut_off_by_the_header_timeout() {
    let mut procs = Procs(Vec::new());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("class.yaml"), CLASS).unwrap();
    let port = proxy(&mut procs, dir.path(), &["--client-header-timeout", "1"]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Never finishes its head: the proxy closes within the timeout (and
    // some slack), not when the client gives up.
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");
    assert!(took >= Duration::from_millis(900), "not before the timeout: {took:?}");
    // One that connects and sends nothing at all: the same bound (not the
    // keep-alive one, 75 s), as nginx's client_header_timeout.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let _ = s.read_to_end(&mut buf);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "a silent connection held {took:?}");
}

#[test]
fn a_reload_swaps_routes_without_failing_a_request() {
    let mut procs = Procs(Vec::new());
    let target = free_port();
    echo(&mut procs, "127.0.0.1", target, "web", "web-0");
    echo(&mut procs, "127.0.0.2", target, "api", "api-0");
    let dir = tempfile::tempdir().unwrap();
    let base = [
        CLASS.to_owned(),
        backend("web", 80, target, &["127.0.0.1"]),
        backend("api", 80, target, &["127.0.0.2"]),
    ]
    .join("---\n");
    std::fs::write(dir.path().join("base.yaml"), &base).unwrap();
    std::fs::write(
        dir.path().join("shop.yaml"),
        ingress("shop", "shop.example.com", &[("/", "web")], ""),
    )
    .unwrap();
    let port = proxy(&mut procs, dir.path(), &[]);
    // Load from another thread while the Ingress is rewritten ten times.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed, mut seen) = (0, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, head, body) = get(port, "shop.example.com", "/", "");
                if status == 200 {
                    ok += 1;
                    seen.insert(echoed(&body)["service"].as_str().unwrap_or_default().to_owned());
                } else {
                    failed.push(head);
                }
            }
            (ok, failed, seen)
        })
    };
    for i in 0..10 {
        let svc = if i % 2 == 0 { "web" } else { "api" };
        let tmp = dir.path().join(".shop.tmp");
        std::fs::write(&tmp, ingress("shop", "shop.example.com", &[("/", svc)], "")).unwrap();
        std::fs::rename(&tmp, dir.path().join("shop.yaml")).unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, seen) = load.join().unwrap();
    assert!(failed.is_empty(), "{} failed: {:?}", failed.len(), failed.first());
    assert!(ok > 50, "only {ok} requests");
    assert_eq!(seen.len(), 2, "both versions served under load: {seen:?}");
    // The last version routes: api.
    let (_, _, body) = get(port, "shop.example.com", "/", "");
    assert_eq!(echoed(&body)["service"], "api");
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate it signs for `names` (files NAME.crt/NAME.key).
fn certificates(dir: &Path, leaves: &[(&str, &str)]) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
        ],
    );
    for (file, san) in leaves {
        let (key, csr, crt, ext) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.crt"),
            format!("{file}.ext"),
        );
        std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={file}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// A kubernetes.io/tls Secret from NAME.crt/NAME.key (as stringData, which
/// a manifest may hold).
fn tls_secret(certs: &Path, name: &str, file: &str) -> String {
    let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let crt = std::fs::read_to_string(certs.join(format!("{file}.crt"))).unwrap();
    let key = std::fs::read_to_string(certs.join(format!("{file}.key"))).unwrap();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(crt),
        indent(key)
    )
}

/// A TLS connection to the proxy with `sni`, trusting the test CA; the
/// negotiated ALPN protocol and the answer to one HTTP/1.1 GET (or the
/// handshake's error).
fn https_get(port: u16, certs: &Path, sni: &str, alpn: &[&[u8]]) -> Result<(Option<Vec<u8>>, String), String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_file(certs.join("ca.crt")).unwrap();
    roots.add(ca).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let request = format!("GET /x HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    if alpn.first() == Some(&&b"h2"[..]) {
        // Only the negotiation is looked at.
        tls.conn.complete_io(&mut tls.sock).map_err(|e| e.to_string())?;
        return Ok((tls.conn.alpn_protocol().map(<[u8]>::to_vec), String::new()));
    }
    tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    Ok((
        tls.conn.alpn_protocol().map(<[u8]>::to_vec),
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

#[test]
fn https_picks_the_certificate_by_sni_and_a_bad_secret_disables_only_its_hosts() {
    let mut procs = Procs(Vec::new());
    let target = free_port();
    echo(&mut procs, "127.0.0.1", target, "web", "web-0");
    let certs = tempfile::tempdir().unwrap();
    certificates(
        certs.path(),
        &[("shop", "DNS:shop.example.com"), ("wild", "DNS:*.wild.example.com")],
    );
    let dir = tempfile::tempdir().unwrap();
    let tls_ingress = |name: &str, host: &str, secret: &str| {
        ingress(name, host, &[("/", "web")], "").replace(
            "spec:\n  ingressClassName: lb\n",
            &format!("spec:\n  ingressClassName: lb\n  tls:\n  - hosts: [\"{host}\"]\n    secretName: {secret}\n"),
        )
    };
    std::fs::write(
        dir.path().join("all.yaml"),
        [
            CLASS.to_owned(),
            backend("web", 80, target, &["127.0.0.1"]),
            tls_secret(certs.path(), "shop-tls", "shop"),
            tls_secret(certs.path(), "wild-tls", "wild"),
            // A Secret whose key is not its certificate's.
            tls_secret(certs.path(), "broken-tls", "shop").replace(
                &std::fs::read_to_string(certs.path().join("shop.key"))
                    .unwrap()
                    .lines()
                    .map(|l| format!("    {l}\n"))
                    .collect::<String>(),
                &std::fs::read_to_string(certs.path().join("wild.key"))
                    .unwrap()
                    .lines()
                    .map(|l| format!("    {l}\n"))
                    .collect::<String>(),
            ),
            tls_ingress("shop", "shop.example.com", "shop-tls"),
            tls_ingress("wild", "*.wild.example.com", "wild-tls"),
            tls_ingress("broken", "broken.example.com", "broken-tls"),
        ]
        .join("---\n"),
    )
    .unwrap();
    let http = free_port();
    let https = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
        .args(["--manifests", dir.path().to_str().unwrap()])
        .args([
            "--http-listen",
            &format!("127.0.0.1:{http}"),
            "--https-listen",
            &format!("127.0.0.1:{https}"),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    procs.0.push(child);
    wait_listening(&format!("127.0.0.1:{https}"));

    let (alpn, answer) = https_get(https, certs.path(), "shop.example.com", &[b"http/1.1"]).unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (status, head, body) = split(&answer);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("strict-transport-security: max-age=31536000; includeSubDomains"),
        "{head}"
    );
    let v = echoed(&body);
    assert_eq!(header(&v, "x-forwarded-proto"), Some("https"));
    // The wildcard covers one label.
    let (_, answer) = https_get(https, certs.path(), "a.wild.example.com", &[]).unwrap();
    assert_eq!(split(&answer).0, 200);
    // HTTP/2 by ALPN.
    let (alpn, _) = https_get(https, certs.path(), "shop.example.com", &[b"h2", b"http/1.1"]).unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    // The broken Secret's host has no certificate (no default given): the
    // handshake fails; the others are untouched.
    assert!(https_get(https, certs.path(), "broken.example.com", &[]).is_err());
    assert!(https_get(https, certs.path(), "nobody.example.com", &[]).is_err());
    // The shop Secret broken while serving: its last good certificate
    // stays in force (reported), the handshake still succeeds.
    let all = std::fs::read_to_string(dir.path().join("all.yaml")).unwrap();
    let crt = std::fs::read_to_string(certs.path().join("shop.crt")).unwrap();
    let second_line = crt.lines().nth(1).unwrap().to_owned();
    let broken = all.replacen(&second_line, "AAAAbroken", 1);
    assert_ne!(broken, all);
    std::fs::write(dir.path().join(".all.tmp"), broken).unwrap();
    std::fs::rename(dir.path().join(".all.tmp"), dir.path().join("all.yaml")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (_, answer) = https_get(https, certs.path(), "shop.example.com", &[]).expect("the last good certificate");
    assert_eq!(split(&answer).0, 200);
    // Plain HTTP to a TLS host redirects (ssl-redirect is on by default).
    let (status, head, _) = get(http, "shop.example.com", "/x", "");
    assert_eq!(status, 308, "{head}");
    assert!(head.contains("location: https://shop.example.com/x"), "{head}");
}

/// HTTP/2 with prior knowledge to the proxy: requests (built with `uri`
/// naming the site, so `:authority` is the site) over one connection.
async fn h2_to_proxy<B>(port: u16) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

#[test]
fn http2_with_prior_knowledge_is_served() {
    let mut procs = Procs(Vec::new());
    let (port, _dir) = shop(&mut procs, "", &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (version, status, body, cookies, mismatch) = runtime.block_on(async move {
        use http_body_util::BodyExt as _;
        let mut send = h2_to_proxy::<http_body_util::Empty<bytes::Bytes>>(port).await;
        // Cookies, one field each in HTTP/2, go to the HTTP/1.1 backend
        // as one line.
        let req = hyper::Request::get("http://shop.example.com/h2")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let (version, status) = (resp.version(), resp.status().as_u16());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        let cookies = echoed(&body)["headers"]["cookie"].clone();
        // An :authority that is not the Host: which was meant is not
        // guessed (RFC 9113 §8.3.1).
        let req = hyper::Request::get("http://shop.example.com/h2")
            .header("host", "other.example.com")
            .body(http_body_util::Empty::new())
            .unwrap();
        let mismatch = send.send_request(req).await.unwrap().status().as_u16();
        // Neither :authority nor Host: malformed, as HTTP/1.1 without Host.
        let req = hyper::Request::get("/h2").body(http_body_util::Empty::new()).unwrap();
        let hostless = send.send_request(req).await.map(|r| r.status().as_u16());
        assert!(matches!(hostless, Ok(400)), "{hostless:?}");
        (version, status, body, cookies, mismatch)
    });
    // A streamed body (no content-length, as gRPC sends): it arrives whole.
    let posted = runtime.block_on(async move {
        use http_body_util::BodyExt as _;
        let frames = futures::stream::iter(["hel", "lo"].map(|s| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from_static(s.as_bytes())))
        }));
        let mut send = h2_to_proxy(port).await;
        let req = hyper::Request::post("http://shop.example.com/h2")
            .body(http_body_util::StreamBody::new(frames))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    });
    assert_eq!(echoed(&posted)["body_bytes"], 5, "{posted}");
    assert_eq!(version, hyper::Version::HTTP_2);
    assert_eq!(status, 200, "{body}");
    let v = echoed(&body);
    assert_eq!(v["service"], "web");
    assert_eq!(v["target"], "/h2");
    assert_eq!(cookies, serde_json::json!(["a=1; b=2"]));
    assert_eq!(mismatch, 400);
}

/// A tunnel where nothing moves for the route's `proxy-read-timeout` is
/// closed (as nginx bounds WebSockets); one that talks stays open; at
/// SIGTERM an open tunnel is given the drain, not cut at once.
#[test]
fn a_quiet_tunnel_is_closed_and_an_open_one_is_drained() {
    let mut procs = Procs(Vec::new());
    let (port, _dir) = shop(
        &mut procs,
        "nginx.ingress.kubernetes.io/proxy-read-timeout: \"1\"",
        &["--drain-seconds", "3"],
    );
    let open = || {
        let (s, head) = upgrade(port);
        assert!(head.starts_with("http/1.1 101"), "{head}");
        s
    };
    let echo = |s: &mut TcpStream| {
        s.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
    };
    // Talking every 300 ms for 2 s: kept.
    let mut talking = open();
    for _ in 0..7 {
        echo(&mut talking);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Quiet: closed after about a second.
    let mut quiet = open();
    let started = Instant::now();
    let mut rest = Vec::new();
    let n = quiet.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // SIGTERM with a tunnel open: it still carries bytes during the drain.
    let mut open_at_exit = open();
    let pid = procs.0.last().map(Child::id).unwrap();
    sigterm(pid);
    std::thread::sleep(Duration::from_millis(300));
    echo(&mut open_at_exit);
    exit_within(procs.0.last_mut().unwrap(), Duration::from_secs(10));
}

#[test]
fn an_upgrade_is_tunnelled_after_the_backends_101() {
    let mut procs = Procs(Vec::new());
    let (port, _dir) = shop(&mut procs, "", &[]);
    // The 101, then the tunnel: bytes come back as sent, framing or not.
    let (mut s, head) = upgrade(port);
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: lb-echo"), "{head}");
    for message in [&b"hello\n"[..], b"\x00\x01 not HTTP \r\n\r\n", b"bye"] {
        s.write_all(message).unwrap();
        let mut back = vec![0u8; message.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, message);
    }
    // A backend that does not agree: no tunnel, its answer as it is.
    let (status, _, body) = get(
        port,
        "shop.example.com",
        "/plain",
        "Connection: Upgrade\r\nUpgrade: other\r\n",
    );
    assert_eq!(status, 200);
    assert_eq!(echoed(&body)["target"], "/plain");
    // HTTP/1.0 has no upgrade: a plain request and answer (RFC 9110 §7.8).
    let answer = raw(
        port,
        "GET /old HTTP/1.0\r\nHost: shop.example.com\r\nConnection: Upgrade\r\nUpgrade: lb-echo\r\n\r\n",
    );
    let (status, head, body) = split(&answer);
    assert_eq!(status, 200, "{head}");
    let v = echoed(&body);
    assert_eq!(
        (v["target"].as_str(), header(&v, "upgrade")),
        (Some("/old"), None),
        "{v}"
    );
    // A refused upgrade (here: no such host) closes the connection, so what
    // follows on it (a bare-LF request) is never read; CONNECT is refused.
    let answer = raw(
        port,
        "GET / HTTP/1.1\r\nHost: nope\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\nGET / HTTP/1.1\nHost: shop.example.com\n\n",
    );
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(
        answer.starts_with("HTTP/1.1 404") && answer.contains("connection: close"),
        "{answer}"
    );
    let answer = raw(
        port,
        "CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\nGET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n",
    );
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
}

#[test]
fn forwarded_for_from_a_trusted_proxy_is_read_from_the_right() {
    let mut procs = Procs(Vec::new());
    let (port, _dir) = shop(&mut procs, "", &["--trusted-proxy", "127.0.0.0/8"]);
    // A client wrote 6.6.6.6; the trusted front appended the client's
    // real address: that one is the client.
    let (_, _, body) = get(port, "shop.example.com", "/", "X-Forwarded-For: 6.6.6.6, 192.0.2.7\r\n");
    let v = echoed(&body);
    assert_eq!(header(&v, "x-real-ip"), Some("192.0.2.7"));
    assert_eq!(header(&v, "x-forwarded-for"), Some("6.6.6.6, 192.0.2.7, 127.0.0.1"));
    // Trusted hops on the right are skipped.
    let (_, _, body) = get(
        port,
        "shop.example.com",
        "/",
        "X-Forwarded-For: 192.0.2.8, 127.0.0.9\r\n",
    );
    assert_eq!(header(&echoed(&body), "x-real-ip"), Some("192.0.2.8"));
    // Sent as two lines: one list, in order, with this hop last.
    let (_, _, body) = get(
        port,
        "shop.example.com",
        "/",
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 192.0.2.7\r\n",
    );
    let v = echoed(&body);
    assert_eq!(header(&v, "x-real-ip"), Some("192.0.2.7"));
    assert_eq!(header(&v, "x-forwarded-for"), Some("6.6.6.6, 192.0.2.7, 127.0.0.1"));
    assert_eq!(v["headers"]["x-forwarded-for"].as_array().map(Vec::len), Some(1), "{v}");
}

/// Behind a load balancer that ends TLS (a `--trusted-proxy`), its
/// `X-Forwarded-Proto: https` counts as HTTPS: the https redirect does not
/// loop. From anyone else the header changes nothing.
#[test]
fn forwarded_proto_from_a_trusted_proxy_stops_the_https_redirect() {
    let mut procs = Procs(Vec::new());
    let force = "nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"";
    let (trusting, _a) = shop(&mut procs, force, &["--trusted-proxy", "127.0.0.0/8"]);
    let (status, _, body) = get(trusting, "shop.example.com", "/x", "X-Forwarded-Proto: https\r\n");
    assert_eq!(status, 200);
    assert_eq!(header(&echoed(&body), "x-scheme"), Some("https"));
    assert_eq!(get(trusting, "shop.example.com", "/x", "").0, 308);
    assert_eq!(
        get(trusting, "shop.example.com", "/x", "X-Forwarded-Proto: http\r\n").0,
        308
    );
    let (untrusting, _b) = shop(&mut procs, force, &[]);
    assert_eq!(
        get(untrusting, "shop.example.com", "/x", "X-Forwarded-Proto: https\r\n").0,
        308
    );
}

#[test]
fn cookie_affinity_pins_a_client_and_grpc_backends_get_http2() {
    let mut procs = Procs(Vec::new());
    let target = free_port();
    for (i, ip) in ["127.0.0.1", "127.0.0.2", "127.0.0.3"].iter().enumerate() {
        echo(&mut procs, ip, target, "web", &format!("web-{i}"));
    }
    let dir = manifests(&[
        backend("web", 80, target, &["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
        ingress(
            "sticky",
            "sticky.example.com",
            &[("/app", "web")],
            "nginx.ingress.kubernetes.io/affinity: cookie, nginx.ingress.kubernetes.io/session-cookie-name: route",
        ),
        ingress(
            "grpc",
            "grpc.example.com",
            &[("/", "web")],
            "nginx.ingress.kubernetes.io/backend-protocol: GRPC",
        ),
    ]);
    let port = proxy(&mut procs, dir.path(), &[]);
    let (status, head, body) = get(port, "sticky.example.com", "/app/x", "");
    assert_eq!(status, 200, "{head}");
    let first = echoed(&body)["pod"].as_str().unwrap().to_owned();
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap_or_else(|| panic!("no cookie: {head}"))
        .to_owned();
    assert!(cookie.starts_with("route="), "{cookie}");
    assert!(cookie.contains("Path=/app") && cookie.contains("HttpOnly"), "{cookie}");
    let value = cookie.split(';').next().unwrap();
    for _ in 0..10 {
        let (_, head, body) = get(port, "sticky.example.com", "/app/x", &format!("Cookie: {value}\r\n"));
        assert_eq!(echoed(&body)["pod"], first.as_str(), "pinned");
        assert!(
            !head.contains("set-cookie"),
            "no new cookie while the pin holds: {head}"
        );
    }
    // Without the cookie: spread again.
    let pods: std::collections::BTreeSet<String> = (0..6)
        .map(|_| {
            echoed(&get(port, "sticky.example.com", "/app/x", "").2)["pod"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(pods.len() > 1, "{pods:?}");
    // backend-protocol GRPC: HTTP/2 without TLS to the backend.
    let (status, _, body) = get(port, "grpc.example.com", "/svc/Method", "");
    assert_eq!(status, 200);
    assert_eq!(echoed(&body)["version"], "HTTP/2.0");
}

#[test]
fn https_and_grpcs_backends_are_reached_over_tls() {
    let mut procs = Procs(Vec::new());
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path(), &[("backend", "IP:127.0.0.1")]);
    let target = free_port();
    let addr = format!("127.0.0.1:{target}");
    let (crt, key) = (certs.path().join("backend.crt"), certs.path().join("backend.key"));
    procs.0.push(
        Command::new(env!("CARGO_BIN_EXE_lb-echo"))
            .args(["--listen", &addr, "--service", "secure"])
            .arg("--tls-cert")
            .arg(&crt)
            .arg("--tls-key")
            .arg(&key)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&addr);
    let dir = manifests(&[
        backend("secure", 443, target, &["127.0.0.1"]),
        ingress(
            "https",
            "https.example.com",
            &[("/", "secure")],
            "nginx.ingress.kubernetes.io/backend-protocol: HTTPS",
        ),
        ingress(
            "grpcs",
            "grpcs.example.com",
            &[("/", "secure")],
            "nginx.ingress.kubernetes.io/backend-protocol: GRPCS",
        ),
        ingress("plain", "plain.example.com", &[("/", "secure")], ""),
    ]);
    let port = proxy(&mut procs, dir.path(), &[]);
    let (status, head, body) = get(port, "https.example.com", "/x", "");
    assert_eq!(status, 200, "{head}");
    let v = echoed(&body);
    assert_eq!(
        (v["tls"].as_bool(), v["version"].as_str()),
        (Some(true), Some("HTTP/1.1"))
    );
    let (status, _, body) = get(port, "grpcs.example.com", "/svc/M", "");
    assert_eq!(status, 200);
    let v = echoed(&body);
    assert_eq!(
        (v["tls"].as_bool(), v["version"].as_str()),
        (Some(true), Some("HTTP/2.0"))
    );
    // Plain HTTP to a TLS backend fails as a bad gateway, named.
    assert_eq!(get(port, "plain.example.com", "/x", "").0, 502);
}

#[test]
fn an_idle_connection_is_closed_but_a_slow_backend_is_waited_for() {
    let mut procs = Procs(Vec::new());
    let (port, _dir) = shop(&mut procs, "", &["--keepalive-timeout", "1"]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A backend slower than the idle timeout: the client is waiting for an
    // answer, not idle.
    s.write_all(b"GET /delay/2000 HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Then kept alive, silent: closed after about a second.
    let start = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
}

#[test]
fn external_auth_allows_denies_and_sends_to_sign_in() {
    let mut procs = Procs(Vec::new());
    let target = free_port();
    echo(&mut procs, "127.0.0.1", target, "web", "web-0");
    let auth = free_port();
    echo(&mut procs, "127.0.0.5", auth, "auth", "auth-0");
    let dir = tempfile::tempdir().unwrap();
    let guarded = |name: &str, status: u16, extra: &str| {
        ingress(
            name,
            &format!("{name}.example.com"),
            &[("/", "web")],
            &format!("nginx.ingress.kubernetes.io/auth-url: \"http://127.0.0.5:{auth}/status/{status}\"{extra}"),
        )
    };
    std::fs::write(
        dir.path().join("all.yaml"),
        [
            CLASS.to_owned(),
            backend("web", 80, target, &["127.0.0.1"]),
            guarded(
                "allowed",
                200,
                ", nginx.ingress.kubernetes.io/auth-response-headers: \"Content-Type, X-User\"",
            ),
            guarded("denied", 403, ""),
            guarded("anonymous", 401, ""),
            guarded(
                "signin",
                401,
                ", nginx.ingress.kubernetes.io/auth-signin: \"https://login.example.com/start\"",
            ),
            guarded("broken", 500, ""),
        ]
        .join("---\n"),
    )
    .unwrap();
    let port = proxy(&mut procs, dir.path(), &[]);
    let (status, head, body) = get(port, "allowed.example.com", "/x?y=1", "X-User: admin\r\n");
    assert_eq!(status, 200, "{head}");
    let v = echoed(&body);
    assert_eq!(v["service"], "web");
    // The auth answer's chosen header, passed upstream; one it did not
    // send is not the client's to claim.
    assert_eq!(header(&v, "content-type"), Some("application/json"));
    assert_eq!(header(&v, "x-user"), None, "{v}");
    assert_eq!(get(port, "denied.example.com", "/x", "").0, 403);
    assert_eq!(get(port, "anonymous.example.com", "/x", "").0, 401);
    let (status, head, _) = get(port, "signin.example.com", "/x?y=1", "");
    assert_eq!(status, 302);
    assert!(
        head.contains("location: https://login.example.com/start?rd=http%3A%2F%2Fsignin.example.com%2Fx%3Fy%3D1"),
        "{head}"
    );
    assert_eq!(get(port, "broken.example.com", "/x", "").0, 500);
    // The auth service is told of the request as routed: the host of an
    // absolute-form target (not a Host header naming another), the
    // canonical path (not another spelling of it).
    let (status, head, _) = split(&raw(
        port,
        "GET http://signin.example.com/a/../x?y=1 HTTP/1.1\r\nHost: allowed.example.com\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(status, 302, "{head}");
    assert!(
        head.contains("location: https://login.example.com/start?rd=http%3A%2F%2Fsignin.example.com%2Fx%3Fy%3D1"),
        "{head}"
    );
}

#[test]
fn a_client_that_stops_reading_is_cut_off() {
    let mut procs = Procs(Vec::new());
    let target = free_port();
    echo(&mut procs, "127.0.0.1", target, "web", "web-0");
    let dir = manifests(&[
        backend("web", 80, target, &["127.0.0.1"]),
        ingress(
            "shop",
            "shop.example.com",
            &[("/", "web")],
            "nginx.ingress.kubernetes.io/proxy-body-size: \"0\"",
        ),
    ]);
    let port = proxy(&mut procs, dir.path(), &["--keepalive-timeout", "1"]);
    let size = 48 << 20;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // A second request pipelined behind: hyper holds it and stops reading
    // the socket, so only a bound on the stalled writes can end this.
    s.write_all(
        format!(
            "GET /bytes/{size} HTTP/1.1\r\nHost: shop.example.com\r\n\r\nGET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    // Not reading: the proxy's writes stall, and it gives up.
    std::thread::sleep(Duration::from_secs(4));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < size,
        "the whole answer came ({got} bytes): the stalled client was not cut off"
    );
}

#[test]
fn basic_auth_asks_for_the_password_and_fails_closed_without_its_secret() {
    let mut procs = Procs(Vec::new());
    let (port, dir) = shop(
        &mut procs,
        "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: users, \
         nginx.ingress.kubernetes.io/auth-realm: \"Staff only\"",
        &[],
    );
    // No Secret yet: refused, never served open.
    let (status, head, _) = get(port, "shop.example.com", "/", "");
    assert_eq!(status, 503, "{head}");
    // `openssl passwd -apr1 -salt abcdefgh password`
    std::fs::write(
        dir.path().join("users.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: users, namespace: default}\ntype: Opaque\n\
         stringData:\n  auth: \"ann:$apr1$abcdefgh$FBwExRW4dCc8aL.OvjpIE1\\n\"\n",
    )
    .unwrap();
    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Authorization: Basic {token}\r\n")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, head, _) = get(port, "shop.example.com", "/", "");
        if status == 401 {
            assert!(head.contains("www-authenticate: Basic realm=\"Staff only\""), "{head}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Secret was never read: {head}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _, _) = get(port, "shop.example.com", "/", &basic("ann", "wrong"));
    assert_eq!(status, 401);
    let (status, _, _) = get(port, "shop.example.com", "/", &basic("bob", "password"));
    assert_eq!(status, 401);
    let (status, head, body) = get(port, "shop.example.com", "/", &basic("ann", "password"));
    assert_eq!(status, 200, "{head}");
    assert_eq!(echoed(&body)["service"], "web");
    // The password stays with the proxy.
    assert_eq!(header(&echoed(&body), "authorization"), None, "{body}");
    // auth-secret-type: auth-map: each key a user, its value the hash.
    std::fs::write(
        dir.path().join("staff.yaml"),
        [
            ingress(
                "staff",
                "staff.example.com",
                &[("/", "web")],
                "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: staffmap, \
                 nginx.ingress.kubernetes.io/auth-secret-type: auth-map",
            ),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: staffmap, namespace: default}\ntype: Opaque\n\
             stringData: {bob: \"{PLAIN}pw\", ann: \"$apr1$abcdefgh$FBwExRW4dCc8aL.OvjpIE1\"}\n"
                .to_owned(),
        ]
        .join("---\n"),
    )
    .unwrap();
    eventually("the auth-map Secret was never read", || {
        get(port, "staff.example.com", "/", &basic("bob", "pw")).0 == 200
    });
    assert_eq!(get(port, "staff.example.com", "/", &basic("ann", "password")).0, 200);
    assert_eq!(get(port, "staff.example.com", "/", &basic("bob", "wrong")).0, 401);
    // The file form of the same name is not read as a map, nor the reverse.
    assert_eq!(get(port, "shop.example.com", "/", &basic("bob", "pw")).0, 401);
}

#[test]
fn an_edit_that_breaks_an_ingress_leaves_its_last_good_version_serving() {
    let mut procs = Procs(Vec::new());
    let (port, dir) = shop(&mut procs, "", &[]);
    assert_eq!(get(port, "shop.example.com", "/x", "").0, 200);
    let file = dir.path().join("all.yaml");
    let good = std::fs::read_to_string(&file).unwrap();
    // A path type the API server would refuse, as a typo in a live edit.
    std::fs::write(&file, good.replace("pathType: Prefix", "pathType: Prefx")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        get(port, "shop.example.com", "/x", "").0,
        200,
        "the last good version serves"
    );
    // A good edit after it is taken.
    std::fs::write(&file, good.replace("- path: /\n", "- path: /shop\n")).unwrap();
    // Both sides of the edit, each awaited: a poll may catch the file
    // half written (std::fs::write truncates first) and see the Ingress
    // gone for a moment.
    eventually("the good edit was never taken", || {
        get(port, "shop.example.com", "/x", "").0 == 404 && get(port, "shop.example.com", "/shop/x", "").0 == 200
    });
    let wait_for =
        |status: u16, what: &str| eventually(what, || get(port, "shop.example.com", "/shop/x", "").0 == status);
    // An edit that asks for protection and does not build leaves nothing
    // open: the open version is not kept.
    let open = good.replace("- path: /\n", "- path: /shop\n");
    std::fs::write(
        &file,
        open.replace(
            "annotations: {}",
            "annotations: {nginx.ingress.kubernetes.io/auth-type: basic}",
        ),
    )
    .unwrap();
    wait_for(404, "a broken auth edit must not leave the open version serving");
    std::fs::write(&file, &open).unwrap();
    wait_for(200, "the open version again");
    // The same when the protection itself is good and the error is
    // elsewhere: an allowlist added with a typo in a path type.
    std::fs::write(
        &file,
        open.replace(
            "annotations: {}",
            "annotations: {nginx.ingress.kubernetes.io/allowlist-source-range: 10.0.0.0/8}",
        )
        .replace("pathType: Prefix", "pathType: Prefx"),
    )
    .unwrap();
    wait_for(
        404,
        "an edit adding an allowlist that does not build must not leave the open version serving",
    );
    std::fs::write(&file, &open).unwrap();
    wait_for(200, "the open version again");
    // Moved to another class: no longer ours, not kept.
    std::fs::write(&file, open.replace("ingressClassName: lb", "ingressClassName: other")).unwrap();
    wait_for(404, "an Ingress moved to another class must stop being served");
}

#[test]
fn a_client_that_stops_sending_its_body_gets_408_at_the_keepalive_bound() {
    let mut procs = Procs(Vec::new());
    let (port, _dir) = shop(&mut procs, "", &["--keepalive-timeout", "1"]);
    let started = std::time::Instant::now();
    let answer = raw(
        port,
        "POST /upload HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 100\r\n\r\nab",
    );
    let (status, head, _) = split(&answer);
    assert_eq!(status, 408, "{head}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// A manifest rewritten in place (truncated, then written, as
/// `std::fs::write` and many tools do) is never read half written: the
/// proxy waits for the directory to hold still, and no request meets the
/// moment the file was empty.
#[test]
fn a_file_rewritten_in_place_never_takes_routes_away() {
    let mut procs = Procs(Vec::new());
    let (port, dir) = shop(&mut procs, "", &[]);
    assert_eq!(get(port, "shop.example.com", "/x", "").0, 200);
    let file = dir.path().join("all.yaml");
    let good = std::fs::read_to_string(&file).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut asked, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = get(port, "shop.example.com", "/x", "").0;
                asked += 1;
                if status != 200 {
                    failed.push(status);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (asked, failed)
        })
    };
    for _ in 0..60 {
        let mut f = std::fs::File::create(&file).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        f.write_all(good.as_bytes()).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(40));
    }
    // Past the last rewrite's settling.
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (asked, failed) = watcher.join().unwrap();
    assert!(asked > 100, "{asked}");
    assert!(
        failed.is_empty(),
        "{} of {asked} requests failed: {failed:?}",
        failed.len()
    );
}
