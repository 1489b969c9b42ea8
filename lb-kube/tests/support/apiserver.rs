//! A real etcd + kube-apiserver on loopback for tests, found as envtest
//! finds them: `KUBEBUILDER_ASSETS` names a directory holding `etcd` and
//! `kube-apiserver`. Without it, [`ApiServer::start`] prints a notice and
//! returns `None` (the test then skips). Certificates come from the
//! `openssl` command; everything listens on 127.0.0.1 on free ports; the
//! processes are stopped (by PID) when the value is dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running API server and its etcd.
pub struct ApiServer {
    dir: tempfile::TempDir,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    etcd_ports: (u16, u16),
    token: String,
    assets: PathBuf,
    runtime: tokio::runtime::Runtime,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
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

impl ApiServer {
    /// Starts one, or returns `None` with a notice when
    /// `KUBEBUILDER_ASSETS` is unset.
    pub fn start(test: &str) -> Option<Self> {
        let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from) else {
            eprintln!("skipping {test}: KUBEBUILDER_ASSETS is unset (a directory with etcd and kube-apiserver)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=lb-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=kube-apiserver",
                "-keyout",
                "serving.key",
                "-out",
                "serving.csr",
            ],
        );
        std::fs::write(d.join("serving.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "serving.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "serving.ext",
                "-out",
                "serving.crt",
            ],
        );
        openssl(d, &["genrsa", "-out", "sa.key", "2048"]);
        openssl(d, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        let token = format!("lb-test-{:x}", rand_u64());
        std::fs::write(
            d.join("tokens.csv"),
            format!("{token},lb-test-admin,lb-test-admin,\"system:masters\"\n"),
        )
        .unwrap();
        let mut server = Self {
            dir,
            etcd: None,
            apiserver: None,
            url: String::new(),
            port: 0,
            etcd_ports: (free_port(), free_port()),
            token,
            assets,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        server.port = free_port();
        server.url = format!("https://127.0.0.1:{}", server.port);
        server.launch();
        Some(server)
    }

    /// Starts both processes and waits until the API server is ready.
    fn launch(&mut self) {
        self.spawn_etcd();
        self.spawn_apiserver();
        std::fs::write(self.dir.path().join("kubeconfig"), self.kubeconfig_text()).unwrap();
        self.wait_ready();
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .unwrap()
    }

    fn spawn_etcd(&mut self) {
        let (client, peer) = self.etcd_ports;
        let data = self.dir.path().join("etcd-data");
        self.etcd = Some(
            Command::new(self.assets.join("etcd"))
                .arg(data)
                .args([client.to_string(), peer.to_string()])
                .env("ETCD_UNSAFE_NO_FSYNC", "1")
                .stdout(self.log("etcd.log"))
                .stderr(self.log("etcd.log"))
                .stdin(Stdio::null())
                .spawn()
                .expect("etcd from KUBEBUILDER_ASSETS"),
        );
    }

    fn spawn_apiserver(&mut self) {
        let p = |f: &str| self.dir.path().join(f).to_string_lossy().into_owned();
        let child = Command::new(self.assets.join("kube-apiserver"))
            .args([
                format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_ports.0),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={}", self.port),
                format!("--tls-cert-file={}", p("serving.crt")),
                format!("--tls-private-key-file={}", p("serving.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--token-auth-file={}", p("tokens.csv")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                // Dual stack, as most clusters that need IPv6 run it.
                "--service-cluster-ip-range=10.96.0.0/16,fd00:10:96::/112".into(),
                "--authorization-mode=RBAC".into(),
                "--endpoint-reconciler-type=none".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                format!("--cert-dir={}", p("apiserver-certs")),
            ])
            .stdout(self.log("kube-apiserver.log"))
            .stderr(self.log("kube-apiserver.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("kube-apiserver from KUBEBUILDER_ASSETS");
        self.apiserver = Some(child);
    }

    fn kubeconfig_text(&self) -> String {
        self.kubeconfig_for(&self.token)
    }

    /// A kubeconfig for this server authenticating with `token`.
    fn kubeconfig_for(&self, token: &str) -> String {
        use std::io::Write as _;
        let ca = std::fs::read(self.dir.path().join("ca.crt")).unwrap();
        let mut b64 = Vec::new();
        // base64 without a dependency: through the openssl command.
        let mut child = Command::new("openssl")
            .args(["base64", "-A"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&ca).unwrap();
        let out = child.wait_with_output().unwrap();
        b64.extend_from_slice(&out.stdout);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lb-test\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n\
             users:\n- name: lb-test-admin\n  user:\n    token: {}\ncontexts:\n- name: lb-test\n  context: {{cluster: lb-test, user: lb-test-admin, namespace: default}}\n\
             current-context: lb-test\n",
            self.url,
            String::from_utf8(b64).unwrap().trim(),
            token
        )
    }

    /// A kubeconfig that acts as the ServiceAccount `namespace/name` (a
    /// token from the TokenRequest API): what its RBAC allows, and nothing
    /// more.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let token = self.run(|client| async move {
            let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(client, &namespace);
            accounts
                .create_token_request(&name, &kube::api::PostParams::default(), &request)
                .await
                .unwrap()
                .status
                .and_then(|s| s.token)
                .unwrap()
        });
        let path = self.dir.path().join(format!("kubeconfig-{}", rand_u64()));
        std::fs::write(&path, self.kubeconfig_for(&token)).unwrap();
        path
    }

    /// Waits (up to 90 s) until `/readyz` answers 200.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            for (child, name) in [(&mut self.etcd, "etcd"), (&mut self.apiserver, "kube-apiserver")] {
                if let Some(c) = child
                    && let Ok(Some(status)) = c.try_wait()
                {
                    let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    panic!(
                        "{name} exited ({status}); its log ends:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
            }
            if self.ready() {
                return;
            }
            assert!(Instant::now() < deadline, "kube-apiserver not ready in 90 s");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The kubeconfig file.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// A client for this server.
    pub fn client(&self) -> kube::Client {
        self.runtime.block_on(client_from(&self.kubeconfig()))
    }

    /// Whether `/readyz` answers `ok`.
    fn ready(&self) -> bool {
        let client = self.client();
        self.runtime.block_on(async move {
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            tokio::time::timeout(Duration::from_secs(2), client.request_text(req))
                .await
                .is_ok_and(|r| r.is_ok_and(|t| t.trim() == "ok"))
        })
    }

    /// Runs `f` with a client on this server's runtime.
    pub fn run<T, F: std::future::Future<Output = T>>(&self, f: impl FnOnce(kube::Client) -> F) -> T {
        let client = self.client();
        self.runtime.block_on(f(client))
    }

    /// Applies each object of a YAML or JSON stream (server-side apply).
    pub fn apply(&self, text: &str) {
        use kube::api::{Api, DynamicObject, Patch, PatchParams};
        for (_, doc) in lb_kube::source::file::split_documents(text) {
            let value = lb_kube::source::file::parse_document(doc).unwrap();
            if value.is_null() {
                continue;
            }
            let obj: DynamicObject = serde_json::from_value(value.clone()).unwrap();
            let types = obj.types.clone().expect("apiVersion and kind");
            let gvk = kube::core::GroupVersionKind::try_from(&types).unwrap();
            let name = obj.metadata.name.clone().unwrap();
            let namespace = obj.metadata.namespace.clone();
            self.run(|client| async move {
                // A CRD just created may take a moment to be served.
                let deadline = Instant::now() + Duration::from_secs(30);
                let (resource, caps) = loop {
                    match kube::discovery::pinned_kind(&client, &gvk).await {
                        Ok(found) => break found,
                        Err(e) if Instant::now() > deadline => panic!("{gvk:?}: {e}"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
                let api: Api<DynamicObject> = match caps.scope {
                    kube::discovery::Scope::Namespaced => {
                        Api::namespaced_with(client, namespace.as_deref().unwrap_or("default"), &resource)
                    }
                    kube::discovery::Scope::Cluster => Api::all_with(client, &resource),
                };
                api.patch(&name, &PatchParams::apply("lb-test").force(), &Patch::Apply(&value))
                    .await
                    .unwrap_or_else(|e| panic!("applying {name}: {e}"));
            });
        }
    }

    /// Stops the API server (etcd keeps its data) and starts it again on
    /// the same port, waiting until it is ready.
    pub fn restart_apiserver(&mut self) {
        self.stop_apiserver();
        self.spawn_apiserver();
        self.wait_ready();
    }

    /// Stops the API server only.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            stop(&mut c);
        }
    }
}

/// A client with the credentials of the kubeconfig at `path`.
pub async fn client_from(path: &std::path::Path) -> kube::Client {
    let file = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A random-enough token without a dependency.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// SIGTERM, then SIGKILL after 5 s; waits for the exit.
fn stop(child: &mut Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for c in [self.apiserver.take(), self.etcd.take()].into_iter().flatten() {
            let mut c = c;
            stop(&mut c);
        }
    }
}
