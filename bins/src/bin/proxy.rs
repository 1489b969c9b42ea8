//! lb-proxy: routes HTTP(S) by Kubernetes Ingress rules. This release has
//! `explain`: where a URL goes, and why, without sending traffic.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use lb_bins::{LogFormat, init_logging};
use lb_kube::proxy;
use lb_kube::source::Severity;

/// Routes HTTP and HTTPS by Kubernetes Ingress rules (spec-exact matching,
/// ingress-nginx annotations), reading Ingresses, IngressClasses and
/// Services from a directory of manifests.
#[derive(Parser, Debug)]
#[command(
    name = "lb-proxy",
    version,
    after_help = "Examples:\n  lb-proxy explain --manifests examples/ --url http://shop.example.com/cart --output json\n  lb-proxy explain --manifests examples/ --url http://10.0.0.1/ --header 'Host: shop.example.com'"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print where a request for URL would go (Ingress, Service, port,
    /// upstream path) or what the proxy would answer instead, and why.
    Explain(ExplainArgs),
}

#[derive(clap::Args, Debug)]
struct ExplainArgs {
    /// Directory of Kubernetes manifests (YAML/JSON, multi-document) that is the cluster.
    #[arg(long, value_name = "DIR")]
    manifests: PathBuf,
    /// The request URL, http:// or https://.
    #[arg(long, value_name = "URL")]
    url: String,
    /// A request header, NAME:VALUE (repeatable); a Host header overrides the URL's host.
    #[arg(long = "header", value_name = "K:V")]
    headers: Vec<String>,
    /// The request method (OPTIONS with Origin and
    /// Access-Control-Request-Method headers explains a CORS preflight).
    #[arg(long, value_name = "METHOD", default_value = "GET")]
    method: String,
    /// The client's address, for whitelist-source-range and denylist-source-range.
    #[arg(long, value_name = "IP")]
    client_ip: Option<std::net::IpAddr>,
    /// Serve Ingresses whose class is NAME even without an IngressClass of ours.
    #[arg(long, value_name = "NAME", default_value = "lb")]
    ingress_class: String,
    /// Also serve Ingresses that name no class at all.
    #[arg(long)]
    watch_ingress_without_class: bool,
    /// How Ingresses are matched unless their IngressClass says otherwise
    /// (annotation lb.io/route-mode): the Kubernetes spec, or
    /// ingress-nginx's behaviour for users migrating from it.
    #[arg(long, value_enum, default_value_t = RouteMode::Strict)]
    route_mode: RouteMode,
    /// What an encoded slash (%2F, %5C) in a request path does: 400, kept
    /// as data, or decoded into a separator (as nginx does).
    #[arg(long, value_enum, default_value_t = EncodedSlashArg::Reject)]
    encoded_slash: EncodedSlashArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RouteMode {
    Strict,
    IngressNginx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EncodedSlashArg {
    Reject,
    Keep,
    Decode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let Command::Explain(args) = cli.command;
    let config = lb_route::Config::default()
        .with_classes(
            lb_route::ClassConfig::default()
                .with_class(args.ingress_class.clone())
                .with_watch_without_class(args.watch_ingress_without_class)
                .with_mode(match args.route_mode {
                    RouteMode::Strict => lb_route::Mode::Strict,
                    RouteMode::IngressNginx => lb_route::Mode::IngressNginx,
                }),
        )
        .with_path_policy(
            lb_route::PathPolicy::default().with_encoded_slash(match args.encoded_slash {
                EncodedSlashArg::Reject => lb_route::EncodedSlash::Reject,
                EncodedSlashArg::Keep => lb_route::EncodedSlash::Keep,
                EncodedSlashArg::Decode => lb_route::EncodedSlash::Decode,
            }),
        );
    let Ok(method) = http::Method::from_bytes(args.method.as_bytes()) else {
        eprintln!("error: --method {:?} is not an HTTP method", args.method);
        return ExitCode::from(2);
    };
    let ask = proxy::Ask {
        method,
        client: args.client_ip,
        ..proxy::Ask::get(&args.url, &args.headers)
    };
    let (answer, problems) = match proxy::explain(&args.manifests, &ask, &config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut errors = false;
    for p in &problems {
        errors |= p.severity == Severity::Error;
        eprintln!("{p}");
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer).expect("answer serializes")),
        Output::Text => {
            let target = match (&answer.service, answer.port, &answer.location) {
                (Some(s), Some(p), _) => format!("{s}:{p} {}", answer.upstream_path.as_deref().unwrap_or_default()),
                (_, _, Some(l)) => format!("-> {l}"),
                _ => "-".to_owned(),
            };
            println!("{}\t{}\t{}", answer.status, target, answer.why);
        }
    }
    if errors { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
