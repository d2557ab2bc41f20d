//! Well-behaved users and an abusive one hit an axum service that sits
//! behind [`floodgate_client::RateLimitLayer`]; a live bar chart per user
//! shows their 200s and 429s, then a summary.
//!
//! ```sh
//! cargo run --release -p floodgate-client --example demo       # 6 s, Floodgate embedded
//! cargo run --release -p floodgate-client --example demo -- 10 http://127.0.0.1:8081
//! cargo run --release -p floodgate-client --example demo -- sale-day  # capacity protection
//! ```
//!
//! Arguments: `sale-day` (optional), seconds (default 6), and a Floodgate
//! endpoint; without one the demo runs Floodgate in-process on the memory
//! store with the rules below.
//!
//! - Default: each `user` may make 10 requests a second (domain `demo`);
//!   alice sends 5 a second, mallory 200.
//! - `sale-day`: the checkout service takes 100 requests a second in all
//!   (a `capacity` rule, domain `shop`), shared among the users who call
//!   it, with priority classes from an `x-priority` header. alice and bob
//!   send 15 a second each as `default`, carol 15 as `sheddable`; mallory
//!   floods with 500 a second and claims `critical`. Every user is
//!   guaranteed its part of 80% of the capacity (20 a second among four)
//!   whatever class it claims, so the three well-behaved users get all they
//!   ask; mallory gets its guarantee and the priority part that is left,
//!   never the others' guarantees.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodgate_client::{Client, Descriptor, RateLimitLayer};
use http_body_util::Empty;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;

const RULES: &str = "\
domain: demo
descriptors:
  - key: user
    rate_limit: {unit: second, requests_per_unit: 10}
";

const SALE_DAY_RULES: &str = "\
domain: shop
descriptors:
  - key: service
    value: checkout
    capacity:
      requests_per_unit: 100
      unit: second
      share_by: user
      priority_by: priority
      classes:
        - name: critical
        - name: default
          max_share: 0.9
        - name: sheddable
          max_share: 0.5
";

/// What the demo runs: its rules, how a request becomes a descriptor, and
/// who sends how much.
struct Scenario {
    domain: &'static str,
    rules: &'static str,
    /// The descriptor's entries before the user's.
    entries: &'static [(&'static str, &'static str)],
    limit: &'static str,
    users: Vec<Arc<User>>,
}

impl Scenario {
    fn per_user() -> Self {
        Scenario {
            domain: "demo",
            rules: RULES,
            entries: &[],
            limit: "10 requests/s per user",
            users: vec![User::new("alice", 5), User::new("mallory", 200)],
        }
    }

    fn sale_day() -> Self {
        Scenario {
            domain: "shop",
            rules: SALE_DAY_RULES,
            entries: &[("service", "checkout")],
            limit: "checkout takes 100 requests/s in all; 80 of them guaranteed, split among the users",
            users: vec![
                User::new("alice", 15).claiming("default"),
                User::new("bob", 15).claiming("default"),
                User::new("carol", 15).claiming("sheddable"),
                User::new("mallory", 500).claiming("critical"),
            ],
        }
    }
}

/// A user of the demo: name, requests per second, the priority class it
/// claims (if any), counts of answers.
struct User {
    name: &'static str,
    per_second: u32,
    priority: Option<&'static str>,
    ok: AtomicU64,
    limited: AtomicU64,
    failed: AtomicU64,
}

impl User {
    fn new(name: &'static str, per_second: u32) -> Arc<Self> {
        Arc::new(User {
            name,
            per_second,
            priority: None,
            ok: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The same user, sending `x-priority: <class>`.
    fn claiming(self: Arc<Self>, class: &'static str) -> Arc<Self> {
        Arc::new(User {
            name: self.name,
            per_second: self.per_second,
            priority: Some(class),
            ok: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let scenario = if args.peek().is_some_and(|a| a == "sale-day") {
        args.next();
        Scenario::sale_day()
    } else {
        Scenario::per_user()
    };
    let seconds: u64 = match args.next() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("seconds: expected a number, got {s:?}"))?,
        None => 6,
    };
    let (endpoint, embedded) = match args.next() {
        Some(endpoint) => (endpoint, None),
        None => {
            let (endpoint, server) = embedded_floodgate(&scenario).await?;
            (endpoint, Some(server))
        }
    };

    // The service: one route, behind the rate-limit layer, keyed by x-user.
    let client = Client::builder([endpoint.as_str()]).build()?;
    let entries = scenario.entries;
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello\n" }))
        .layer(RateLimitLayer::new(
            client.clone(),
            scenario.domain,
            move |head: &http::request::Parts| match head.headers.get("x-user") {
                Some(user) => {
                    let descriptor = entries
                        .iter()
                        .fold(Descriptor::new(), |d, (k, v)| d.entry(*k, *v))
                        .entry("user", user.to_str().unwrap_or("?"));
                    // The class, as the caller claims it (the header is
                    // the caller's: see the README's trust boundary).
                    vec![match head.headers.get("x-priority") {
                        Some(class) => descriptor.entry("priority", class.to_str().unwrap_or("?")),
                        None => descriptor,
                    }]
                }
                None => Vec::new(),
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    println!(
        "Floodgate at {endpoint}; the service at {url}; {seconds} s; limit: {}",
        scenario.limit
    );
    let users = scenario.users;
    let http = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let mut load = JoinSet::new();
    for user in &users {
        load.spawn(drive(
            http.clone(),
            url.clone(),
            user.clone(),
            Duration::from_secs(seconds),
        ));
    }

    // The live chart, until the load ends.
    let terminal = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_millis(if terminal { 200 } else { 1_000 }));
    let mut drawn = false;
    while !load.is_empty() {
        tokio::select! {
            _ = tick.tick() => {
                draw(&users, terminal, drawn);
                drawn = true;
            }
            Some(done) = load.join_next() => done?,
        }
    }
    draw(&users, terminal, drawn);

    let stats = client.stats();
    println!();
    println!("summary after {seconds} s:");
    for u in &users {
        let ok = u.ok.load(Ordering::Relaxed);
        println!(
            "  {:<8} sent {:>5}/s: {:>5} answered 200 ({:.0}/s), {:>5} answered 429, {} failed",
            u.name,
            u.per_second,
            ok,
            ok as f64 / seconds.max(1) as f64,
            u.limited.load(Ordering::Relaxed),
            u.failed.load(Ordering::Relaxed),
        );
    }
    println!(
        "  the client: {} calls reached Floodgate; {} answered by the over-limit memo, {} by adaptive throttling, {} by the failure policy",
        stats.service_calls, stats.memo_answers, stats.throttled, stats.failure_policy
    );
    let _ = stop_tx.send(());
    service.await??;
    if let Some((stop, server)) = embedded {
        let _ = stop.send(());
        server.await??;
    }
    Ok(())
}

/// Sends `user.per_second` requests a second for `duration`, each in its own
/// task (an open loop: a slow answer does not slow the user down).
async fn drive(
    http: HttpClient<hyper_util::client::legacy::connect::HttpConnector, Empty<bytes::Bytes>>,
    url: String,
    user: Arc<User>,
    duration: Duration,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1) / user.per_second);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = tokio::time::Instant::now() + duration;
    let mut requests = JoinSet::new();
    while every.tick().await < end {
        let (http, url, user) = (http.clone(), url.clone(), user.clone());
        requests.spawn(async move {
            let mut request = http::Request::get(url).header("x-user", user.name);
            if let Some(class) = user.priority {
                request = request.header("x-priority", class);
            }
            let request = request.body(Empty::new());
            let counter = match request {
                Ok(request) => match http.request(request).await {
                    Ok(r) if r.status() == http::StatusCode::OK => &user.ok,
                    Ok(r) if r.status() == http::StatusCode::TOO_MANY_REQUESTS => &user.limited,
                    _ => &user.failed,
                },
                Err(_) => &user.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        });
        // Reap finished requests as we go: the set stays small.
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
}

/// One line per user: a bar of 200s (#) and 429s (x), scaled to 50 columns.
/// On a terminal each chart replaces the last; elsewhere they follow.
fn draw(users: &[Arc<User>], terminal: bool, drawn: bool) {
    let mut out = std::io::stdout().lock();
    let clear = if terminal { "\x1b[2K" } else { "" };
    if terminal && drawn {
        // Back up over the previous chart.
        let _ = write!(out, "\x1b[{}A", users.len());
    }
    let total = users
        .iter()
        .map(|u| u.ok.load(Ordering::Relaxed) + u.limited.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
        .max(1);
    for u in users {
        let (ok, limited) = (
            u.ok.load(Ordering::Relaxed),
            u.limited.load(Ordering::Relaxed),
        );
        let bar = |n: u64| ((n * 50).div_ceil(total)) as usize;
        let _ = writeln!(
            out,
            "{clear}{:<8} 200 {:>5} 429 {:>5} |{}{}",
            u.name,
            ok,
            limited,
            "#".repeat(bar(ok)),
            "x".repeat(bar(limited)),
        );
    }
    let _ = out.flush();
}

type Embedded = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), floodgate_server::RunError>>,
);

/// Floodgate in-process on loopback, memory store, the scenario's rules.
async fn embedded_floodgate(
    scenario: &Scenario,
) -> Result<(String, Embedded), Box<dyn std::error::Error>> {
    let rules = tempfile::tempdir()?;
    std::fs::write(
        rules.path().join(format!("{}.yaml", scenario.domain)),
        scenario.rules,
    )?;
    let config = floodgate_server::config::Config {
        rules: rules.path().to_path_buf(),
        ..floodgate_server::config::Config::default()
    };
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", grpc.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // The rules are read at startup; the directory lives until then.
        let _rules = rules;
        floodgate_server::run(
            config,
            floodgate_server::Listeners {
                grpc,
                http,
                admin: None,
                metrics: None,
            },
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    Ok((endpoint, (stop, server)))
}
