//! BIRD for the BGP tests: started by the test on loopback with passive
//! sessions for a speaker at 127.0.0.1, driven through birdc, killed on
//! drop.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether BIRD is here; under CI it must be.
pub fn bird_available() -> bool {
    let found = ["bird", "birdc"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the BGP tests: bird2 is missing"
        );
        eprintln!("skipped: needs bird and birdc (Debian's bird2)");
    }
    found
}

/// A process killed on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// BIRD with two passive sessions for the speaker at 127.0.0.1: eBGP on
/// `addr:port` (AS 65000) and iBGP on `[::1]:port+1` (AS 65001).
pub struct Bird {
    ctl: String,
    conf: PathBuf,
    process: Option<Running>,
}

impl Bird {
    pub fn start(dir: &Path, addr: Ipv4Addr, port: u16, extra: &str) -> Bird {
        let conf = dir.join("bird.conf");
        std::fs::write(
            &conf,
            format!(
                "log stderr all;\nrouter id {addr};\nprotocol device {{ }}\n\
                 protocol bgp v4 {{\n  local {addr} port {port} as 65000;\n  neighbor 127.0.0.1 as 65001;\n  \
                 passive on; strict bind on; multihop; hold time 9; error wait time 1, 2;{extra}\n  \
                 ipv4 {{ import all; export none; }};\n}}\n\
                 protocol bgp v6 {{\n  local ::1 port {} as 65001;\n  neighbor ::1 as 65001;\n  \
                 passive on; strict bind on; hold time 9; error wait time 1, 2;\n  \
                 ipv6 {{ import all; export none; }};\n}}\n",
                port + 1
            ),
        )
        .unwrap();
        let mut b = Bird {
            ctl: dir.join("bird.ctl").to_string_lossy().into_owned(),
            conf,
            process: None,
        };
        b.restart();
        b
    }

    /// Starts BIRD (again).
    pub fn restart(&mut self) {
        self.process = None;
        let child = Command::new("bird")
            .args(["-f", "-c"])
            .arg(&self.conf)
            .args(["-s", &self.ctl])
            .stdout(Stdio::null())
            .stderr(self.log_file())
            .spawn()
            .unwrap();
        self.process = Some(Running(child));
        eventually("BIRD is up", || self.cli("show status").contains("Daemon is up"));
    }

    /// BIRD's log (appended to across restarts).
    fn log_file(&self) -> Stdio {
        let path = self.conf.with_file_name("bird.log");
        match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => f.into(),
            Err(_) => Stdio::null(),
        }
    }

    /// What BIRD logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.conf.with_file_name("bird.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map(|p| p.0.id()).unwrap_or(0)
    }

    pub fn cli(&self, cmd: &str) -> String {
        let mut args = vec!["-s", self.ctl.as_str()];
        args.extend(cmd.split(' '));
        let out = Command::new("birdc").args(&args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn routes(&self) -> String {
        self.cli("show route all")
    }

    /// The session's line in `show protocols` (state and since when).
    pub fn protocol(&self, name: &str) -> String {
        self.cli("show protocols")
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    }

    /// Asserts that session `name` is established and has not changed
    /// state since its line read `since`. (BIRD prints when its last state
    /// change was from its monotonic clock through the wall clock: the
    /// millisecond shown may move by one between two reads with no change.
    /// A flap moves it by a second or more: BIRD dials again every second.)
    pub fn assert_stayed(&self, name: &str, since: &str) {
        let now = self.protocol(name);
        assert!(now.contains("Established"), "{now}");
        assert!(
            changed_at(since).abs_diff(changed_at(&now)) <= 5,
            "the session changed state: {since} then {now}"
        );
    }
}

/// The time of the last state change in a line of BIRD's `show protocols`
/// (`HH:MM:SS.mmm`, the fifth column), in milliseconds of the day.
fn changed_at(line: &str) -> u64 {
    let field = line.split_whitespace().nth(4).unwrap_or_default();
    let parts: Vec<u64> = field
        .split([':', '.'])
        .map(|p| p.parse().unwrap_or_else(|_| panic!("no time in {line:?}")))
        .collect();
    assert_eq!(parts.len(), 4, "no time in {line:?}");
    ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000 + parts[3]
}

/// Waits up to 15 s for `ready`.
pub fn eventually(what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < Duration::from_secs(15), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn local(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, n, 1 + (std::process::id() % 200) as u8)
}
