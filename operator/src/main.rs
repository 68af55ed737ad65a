//! `hybrid-operator`: reconciles Corpus, Adapter, ServingPolicy and HybridModel resources.

use anyhow::Context as _;
use clap::Parser;
use hybrid_crds::{Adapter, Corpus, HybridModel, ServingPolicy};
use hybrid_operator::admin::{self, AdminState};
use hybrid_operator::cluster::caches;
use hybrid_operator::context::{Context, Settings};
use hybrid_operator::metrics::Metrics;
use hybrid_operator::{autoscaler, hybridmodel, revisioned, servingpolicy};
use kube::api::ListParams;
use kube::{Api, Client};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

/// jemalloc, with the options `.cargo/config.toml` compiles in (`JEMALLOC_SYS_WITH_MALLOC_CONF`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const INSTALL_CRDS: &str = "kubectl apply --server-side -f charts/hybrid-operator/crds/";
const LEASE_NAME: &str = "hybrid-operator";
/// How long reconciles in flight may run on after SIGTERM, and how long releasing the Lease may
/// take: twice this fits in the kubelet's default 30 s grace period.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(name = "hybrid-operator", version, about)]
struct Args {
    /// Image of hybrid-runtime used by index Jobs, training Jobs and serving pods.
    #[arg(long, env = "HYBRID_RUNTIME_IMAGE")]
    runtime_image: String,
    /// The runtime's CUDA build, for index Jobs, training Jobs and serving pods that request
    /// GPUs. Default: the runtime image with `-cuda` appended to its tag.
    #[arg(long, env = "HYBRID_RUNTIME_CUDA_IMAGE")]
    runtime_cuda_image: Option<String>,
    /// Port of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, env = "HYBRID_ADMIN_PORT", default_value_t = 8080)]
    admin_port: u16,
    /// Namespace of the leader election Lease (the operator's own namespace).
    #[arg(
        long,
        env = "HYBRID_LEADER_ELECTION_NAMESPACE",
        required_unless_present = "no_leader_election"
    )]
    leader_election_namespace: Option<String>,
    /// Run the controllers without leader election (a single replica only).
    #[arg(long, env = "HYBRID_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// How often the latency autoscaler reads Prometheus and decides (e.g. `2s`).
    #[arg(long, env = "HYBRID_AUTOSCALER_TICK", default_value = "2s", value_parser = parse_duration)]
    autoscaler_tick: std::time::Duration,
    /// Rate window of the autoscaler's Prometheus queries; a few scrape intervals (docs/autoscaler.md).
    #[arg(long, env = "HYBRID_AUTOSCALER_WINDOW", default_value = "30s", value_parser = parse_duration)]
    autoscaler_window: std::time::Duration,
    /// Do not run the latency autoscaler (ServingPolicies with autoscaling stay at their decisions).
    #[arg(long, env = "HYBRID_NO_AUTOSCALER")]
    no_autoscaler: bool,
    /// Reconciles of each kind run at once (0: no limit). Bounds memory and the requests in
    /// flight when every object is reconciled at once, as after a start.
    #[arg(long, env = "HYBRID_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Log format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Threads of the async runtime (default: one per core, at most 4). The operator mostly
    /// waits on the apiserver (at 1,000 models it used under one core on average,
    /// BENCHMARKS.md), and each thread adds a stack and an allocator cache to its memory.
    #[arg(long, env = "HYBRID_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.unwrap_or(cores.min(4)).max(1))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outcome = runtime.block_on(run(args));
    // Dropping the runtime would wait for every blocking task without limit (a DNS lookup of
    // an unreachable Prometheus host, say); the process is exiting, so bound that wait.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    outcome
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Two rustls crypto providers are linked (kube: ring, reqwest: aws-lc-rs); pick ring for
    // every client before any TLS connection. Err means one was installed already: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
    // Listen before anything else: a SIGTERM that came before a listener would kill the
    // process without releasing the Lease.
    let shutdown = CancellationToken::new();
    stop_on_signals(shutdown.clone())?;

    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    check_crds(&client).await?;
    let service_monitors = service_monitor_crd(&client).await;
    tracing::info!(
        service_monitors,
        "ServiceMonitors for serving pods: {}",
        if service_monitors {
            "monitoring.coreos.com/v1 is served"
        } else {
            "not created (no monitoring.coreos.com/v1 ServiceMonitor CRD; restart after installing it)"
        }
    );

    let metrics = Metrics::new().context("registering metrics")?;
    let autoscaler_metrics = autoscaler::Metrics::register(&metrics.registry)
        .context("registering autoscaler metrics")?;
    let ready = Arc::new(AtomicBool::new(false));
    let admin = tokio::spawn(admin::serve(
        args.admin_port,
        AdminState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
    ));

    let ctx = Context::new(
        client.clone(),
        Settings {
            runtime_image: args.runtime_image.clone(),
            runtime_cuda_image: args
                .runtime_cuda_image
                .clone()
                .unwrap_or_else(|| hybrid_operator::objects::cuda_image_of(&args.runtime_image)),
            service_monitors,
            concurrency: args.concurrency,
        },
        metrics,
        args.pod_name.clone(),
        reqwest::Client::builder()
            .connect_timeout(hybrid_operator::revisioned::sources::HTTP_TIMEOUT)
            .build()
            .context("building the HTTP client for HTTP sources")?,
        shutdown.clone(),
    );

    // Standby replicas are ready too: they serve metrics and take over when the lease frees.
    ready.store(true, Ordering::Relaxed);
    let mut leadership = match (&args.leader_election_namespace, args.no_leader_election) {
        (_, true) | (None, _) => None,
        (Some(ns), false) => {
            let identity = args
                .pod_name
                .clone()
                .unwrap_or_else(|| format!("hybrid-operator-{}", std::process::id()));
            let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
                .with_namespace(ns.clone())
                .with_identity(identity)
                .build()
                .await
                .context("creating the leader election lease manager")?;
            let (mut rx, task) = manager.watch().await;
            tracing::info!(namespace = %ns, lease = LEASE_NAME, "waiting for leadership");
            while !*rx.borrow_and_update() {
                tokio::select! {
                    changed = rx.changed() => changed.context("lease manager stopped")?,
                    _ = shutdown.cancelled() => {
                        tracing::info!("stopped before acquiring leadership");
                        return Ok(());
                    }
                }
            }
            tracing::info!("acquired leadership");
            Some((rx, task))
        }
    };

    let autoscaler_settings = autoscaler::Settings {
        tick: args.autoscaler_tick,
        window: args.autoscaler_window,
    };
    // Kinds two controllers (or the autoscaler) read are watched and cached once (caches::shared).
    let [models, models_for_policies, models_for_autoscaler] = caches::shared(
        Api::<HybridModel>::all(client.clone()),
        caches::watch(),
        caches::keep,
    );
    let [policies, policies_for_autoscaler] = caches::shared(
        Api::<ServingPolicy>::all(client.clone()),
        caches::watch(),
        caches::keep,
    );
    let scaling_caches =
        autoscaler::Caches::from_feeds(models_for_autoscaler, policies_for_autoscaler);
    let autoscaling = async {
        if args.no_autoscaler {
            tracing::info!("latency autoscaler disabled (--no-autoscaler)");
        } else {
            autoscaler::run(
                ctx.clone(),
                autoscaler_settings,
                autoscaler_metrics,
                scaling_caches,
            )
            .await;
        }
    };
    // Loops that never end on their own (the autoscaler's ticks, two watches): they stop when
    // the controllers do, on SIGTERM, so the lease is released at once.
    let background = async {
        tokio::join!(
            hybrid_operator::revisioned::stored::report_retention_jobs(ctx.clone()),
            hybrid_operator::cluster::deletions::run(ctx.clone()),
            autoscaling,
        );
    };
    let [corpora, corpora_for_models] = caches::shared(
        Api::<Corpus>::all(client.clone()),
        caches::watch(),
        caches::keep,
    );
    let [adapters, adapters_for_models] = caches::shared(
        Api::<Adapter>::all(client.clone()),
        caches::watch(),
        caches::keep,
    );
    let [corpus_sources, adapter_sources] = caches::source_config_maps(&client);
    let controllers = async {
        tokio::select! {
            _ = async {
                tokio::join!(
                    revisioned::run(ctx.clone(), corpora, corpus_sources),
                    revisioned::run(ctx.clone(), adapters, adapter_sources),
                    servingpolicy::run(ctx.clone(), models_for_policies),
                    hybridmodel::run(
                        ctx.clone(),
                        models,
                        policies,
                        corpora_for_models,
                        adapters_for_models,
                    ),
                )
            } => {}
            _ = background => {}
        }
    };
    let lost = async {
        match leadership.as_mut() {
            Some((rx, _)) => loop {
                if rx.changed().await.is_err() || !*rx.borrow_and_update() {
                    return;
                }
            },
            None => std::future::pending().await,
        }
    };
    // Reconciles in flight get a bounded time to finish: the kubelet kills the pod 30 s after
    // SIGTERM (the default grace period), and the Lease must be released before that.
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let outcome = tokio::select! {
        _ = controllers => {
            tracing::info!("controllers stopped");
            Ok(())
        }
        _ = grace_over => {
            tracing::warn!(
                "reconciles still running {SHUTDOWN_GRACE:?} after the signal; stopping without them"
            );
            Ok(())
        }
        // Exiting is the safe answer to a lost lease: another replica reconciles now, and the
        // restart rejoins as a standby.
        _ = lost => Err(anyhow::anyhow!("lost leadership")),
        res = admin => Err(anyhow::anyhow!("admin server stopped: {res:?}")),
    };
    // Hand the lease over at once instead of letting a standby wait for it to expire.
    if let Some((rx, task)) = leadership {
        drop(rx);
        // The lease manager's task releases the Lease when its channel closes, then returns.
        let release = async { task.await?.map(drop).map_err(anyhow::Error::from) };
        match tokio::time::timeout(SHUTDOWN_GRACE, release).await {
            Ok(Ok(())) => tracing::info!("released the lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
            Err(_) => tracing::warn!("releasing the lease took over {SHUTDOWN_GRACE:?}; gave up"),
        }
    }
    outcome
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT, so the controllers finish their reconciles
/// and the Lease is released; a second signal exits at once. The listeners are registered before
/// this returns, not when first polled.
fn stop_on_signals(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    tokio::spawn(async move {
        for first in [true, false] {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if first {
                tracing::info!("{name}: stopping the controllers (send it again to exit at once)");
                shutdown.cancel();
            } else {
                tracing::warn!("second {name}: exiting without waiting for reconciles in flight");
                std::process::exit(1);
            }
        }
    });
    Ok(())
}

/// Whether the Prometheus Operator's ServiceMonitor kind is served (discovery needs no RBAC).
async fn service_monitor_crd(client: &Client) -> bool {
    match kube::discovery::group(client, "monitoring.coreos.com").await {
        Ok(group) => group
            .versioned_resources("v1")
            .iter()
            .any(|(r, _)| r.kind == "ServiceMonitor"),
        Err(_) => false,
    }
}

/// Fails fast, with the command that fixes it, when a CRD is missing.
async fn check_crds(client: &Client) -> anyhow::Result<()> {
    let lp = ListParams::default().limit(1);
    let checks = [
        (
            "corpora.hybrid.dev",
            Api::<Corpus>::all(client.clone()).list(&lp).await.err(),
        ),
        (
            "adapters.hybrid.dev",
            Api::<Adapter>::all(client.clone()).list(&lp).await.err(),
        ),
        (
            "servingpolicies.hybrid.dev",
            Api::<ServingPolicy>::all(client.clone())
                .list(&lp)
                .await
                .err(),
        ),
        (
            "hybridmodels.hybrid.dev",
            Api::<HybridModel>::all(client.clone())
                .list(&lp)
                .await
                .err(),
        ),
    ];
    let mut missing = Vec::new();
    for (crd, err) in checks {
        match err {
            None => {}
            Some(kube::Error::Api(s)) if s.code == 404 => missing.push(crd),
            Some(e) => {
                return Err(anyhow::anyhow!(e).context(format!(
                    "cannot list {crd}: check the API server and the operator's RBAC"
                )));
            }
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "CRDs not installed: {}. Install them with `{INSTALL_CRDS}`",
            missing.join(", ")
        );
    }
    Ok(())
}

/// `250ms`, `2s`, `1m`: the units the autoscaler flags take.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("{s:?}: give a unit (ms, s or m), e.g. 2s"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a number then ms, s or m"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?}: unknown unit {unit:?}; use ms, s or m")),
    }
    .and_then(|d| {
        if d.is_zero() {
            Err(format!("{s:?}: must be greater than zero"))
        } else {
            Ok(d)
        }
    })
}
