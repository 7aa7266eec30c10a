//! `flowtally run`: binds the sockets, starts the XDP data plane, flushes
//! aggregates to SQLite every interval, serves metrics, and on SIGINT or
//! SIGTERM stops receiving, flushes everything, and exits.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

pub mod clock;
pub mod flow_socket;
pub mod flush;
pub mod privileges;
pub mod radius_socket;
pub mod templates_file;

use anyhow::Context as _;
use tokio::{
    net::{TcpListener, UdpSocket},
    signal::unix::{Signal, SignalKind, signal},
    task::{JoinSet, block_in_place},
    time::{MissedTickBehavior, interval},
};

use self::{flow_socket::SocketPath, flush::Flusher};
use crate::{
    aggregate::Aggregator,
    associate::Associator,
    config::{Config, Mode},
    http,
    metrics::{Metrics, UserMetrics},
    netflow::Limits,
    radius::{clients::Clients, dedup::Dedup, limiter::Limiter},
    sessions::History,
    sink::{
        self,
        clickhouse::{ClickHouseMetrics, Deliverer, Spool, Stop},
    },
    subscribers::SubscriberNets,
    timestamp::Timestamp,
    xdp::{self, DataPlane, KernelConfig},
};

pub fn run(config: Config) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let metrics = Metrics {
        users: UserMetrics::new(config.user_metrics_top),
        clickhouse: config
            .clickhouse
            .url
            .is_some()
            .then(ClickHouseMetrics::default),
        ..Metrics::default()
    };
    let db = sink::sqlite::open(&config.db)?;
    let (run, gap) = sink::runs::begin(&db, clock::unix_ms())
        .with_context(|| format!("cannot record this run in {}", config.db.display()))?;
    if let Some(gap) = gap {
        metrics.unclean_stops.inc();
        metrics
            .last_gap_seconds
            .set(((gap.to_ms - gap.from_ms) / 1000) as i64);
        tracing::warn!(
            "the previous run stopped without its final flush (killed or crashed): usage it \
             held after its last flush at {} is lost; recorded as a gap until {} (`runs` table)",
            Timestamp(gap.from_ms),
            Timestamp(gap.to_ms)
        );
    }
    let waiting = sink::sqlite::read_pending(&db)
        .with_context(|| format!("cannot read the usage backlog of {}", config.db.display()))?;
    let retention_ms = config.radius.history_retention.0.as_millis() as u64;
    let history = sink::session_store::load_history(&db, retention_ms, clock::unix_ms())
        .with_context(|| format!("cannot read the session history of {}", config.db.display()))?;
    let history = Arc::new(Mutex::new(history));

    let sockets = flow_socket::bind(&config.netflow, config.socket_receive_buffer).await?;
    let netflow_addrs = sockets
        .iter()
        .map(|socket| socket.local_addr())
        .collect::<Result<Vec<SocketAddr>, _>>()?;

    let profile = config.aggregation.profile();
    let flags = config.aggregation.flags();
    let kernel_config = KernelConfig {
        collector_ports: netflow_addrs.iter().map(SocketAddr::port).collect(),
        subscriber_networks: config.subscriber_networks.clone(),
        exporters: config.exporters.clone(),
        billing_scope: config.scope_keys(),
        profile,
        flags,
        aggregate_entries: config.maps.aggregate_entries,
        overflow_ring_bytes: config.maps.overflow_ring_bytes,
    };
    let mut data_plane = start_data_plane(&config, &kernel_config)?;
    let mut tasks = JoinSet::new();
    let (kernel_stats, drainer, kernel_templates) = match data_plane.as_mut() {
        Some(plane) => {
            for attachment in plane.attachments() {
                metrics
                    .xdp_attached
                    .get_or_create(&[
                        ("iface", attachment.iface.clone()),
                        ("mode", attachment.mode.to_string()),
                    ])
                    .set(1);
            }
            metrics
                .aggregate_map_capacity
                .set(i64::from(config.maps.aggregate_entries));
            if let Some(logger) = plane.take_logger() {
                tasks.spawn(xdp::forward_kernel_logs(logger));
            }
            (
                Some(plane.take_stats()?),
                Some(plane.take_drainer()?),
                Some(plane.take_templates()?),
            )
        }
        None => (None, None, None),
    };
    let registry = Arc::new(metrics.registry(kernel_stats));

    let access = http::Access::load(&config.http)?;
    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http {}", config.http.listen))?;
    let http_addr = http_listener.local_addr()?;

    let aggregator = Aggregator::new(
        profile,
        flags,
        SubscriberNets::new(&config.subscriber_networks),
    )
    .with_scope(&config.scope_keys());
    let templates_file = config.templates_file();
    let limits = Limits {
        max_templates_per_exporter: config.templates.max_per_exporter,
        max_fields_per_template: config.templates.max_fields,
        max_template_bytes: config.templates.max_record_bytes,
        template_timeout_ms: config.templates.timeout.0.as_millis() as u64,
        ..Limits::default()
    };
    let cache = templates_file::restore(&templates_file, limits, clock::unix_ms())?;
    let socket_path = Arc::new(SocketPath::new(
        aggregator,
        cache,
        kernel_templates,
        &config.exporters,
        metrics.clone(),
    ));
    let radius_addr = start_radius(&config, &history, &metrics, &mut tasks).await?;
    let templates = Arc::clone(&socket_path);
    let shared = http::Shared {
        registry,
        db: config.db.clone(),
        access,
        tariffs: config.http.tariffs.clone(),
        orgs: config.http.orgs.clone(),
        metrics: metrics.clone(),
        templates: Box::new(move || templates.templates_per_exporter()),
        clock: || Timestamp(clock::unix_ms()),
        reads: tokio::sync::Semaphore::new(http::MAX_READS),
    };
    tasks.spawn(http::serve(http_listener, http::router(Arc::new(shared))));

    let mut receivers = JoinSet::new();
    for socket in sockets {
        receivers.spawn(flow_socket::receive(socket, Arc::clone(&socket_path)));
    }

    // Handlers go in before `ready`: a signal right after it must not find
    // the default action (terminate without flushing).
    let signal = wait_for_signal(
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );

    privileges::drop_after_setup()?;

    // What we listen on, for people and for scripts (one item per line).
    for addr in &netflow_addrs {
        println!("listen netflow udp {addr}");
    }
    if let Some(addr) = radius_addr {
        println!("listen radius udp {addr}");
    }
    println!("listen metrics http://{http_addr}/metrics");
    println!("listen http http://{http_addr}/");
    for attachment in data_plane.iter().flat_map(|plane| plane.attachments()) {
        println!("xdp {} {}", attachment.iface, attachment.mode);
    }
    println!("sink sqlite {}", config.db.display());
    let delivery = start_clickhouse(&config, &metrics)?;
    if let Some(url) = &config.clickhouse.url {
        println!("sink clickhouse {url} {}", config.clickhouse.database);
    }
    println!("ready");

    let mut associator = Associator::new(
        config.stop_grace.0.as_millis() as u64,
        config.late_window.0.as_millis() as u64,
    );
    associator.restore(waiting);
    let mut flusher = Flusher::new(
        drainer,
        Arc::clone(&history),
        associator,
        templates_file,
        socket_path,
        db,
        metrics,
        profile,
    );
    flusher = flusher.record_run(run);
    if let Some(delivery) = &delivery {
        flusher = flusher.notify_writes(delivery.waker());
    }
    let mut ticks = interval(config.flush_interval.0);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    tokio::pin!(signal);
    let signal = loop {
        tokio::select! {
            signal = &mut signal => break signal,
            _ = ticks.tick() => {
                match block_in_place(|| flusher.flush(false)) {
                    Ok(flushed) => tracing::info!("flush: {flushed}"),
                    Err(err) => tracing::error!("flush: {err:#}"),
                }
            }
        }
    };
    tracing::info!("{signal}: stopping intake, flushing");
    // Stop all intake first so that the last flush sees everything: the
    // links detach with the data plane, the sockets close with their tasks.
    drop(data_plane);
    receivers.shutdown().await;
    let flushed = block_in_place(|| flusher.flush(true)).context("final flush")?;
    tracing::info!("final flush: {flushed}");
    if let Some(delivery) = delivery {
        delivery.finish().await;
    }
    tasks.shutdown().await;
    Ok(())
}

/// The RADIUS accounting server, when some client can be trusted.
async fn start_radius(
    config: &Config,
    history: &Arc<Mutex<History>>,
    metrics: &Metrics,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Option<SocketAddr>> {
    let clients = Clients::new(&config.radius);
    if clients.is_empty() {
        tracing::info!("RADIUS accounting off: no secret (--radius-secret or [[radius.clients]])");
        return Ok(None);
    }
    let listen = config.radius.listen;
    let socket = UdpSocket::bind(listen)
        .await
        .with_context(|| format!("radius {listen}"))?;
    let addr = socket.local_addr()?;
    let db = sink::sqlite::open(&config.db)?;
    // An Accounting-Response promises the record is on disk (RFC 2866 §2).
    db.pragma_update(None, "synchronous", "FULL")?;
    {
        let history = history.lock().expect("history lock poisoned");
        metrics
            .radius
            .sessions_open
            .set(history.open_sessions() as i64);
        metrics.radius.sessions_in_memory.set(history.len() as i64);
    }
    let server = radius_socket::Server {
        socket,
        clients,
        history: Arc::clone(history),
        db,
        metrics: metrics.radius.clone(),
        limiter: Limiter::new(config.radius.rate_limit),
        silence_multiple: config.radius.silence_multiple,
        retention_ms: config.radius.history_retention.0.as_millis() as u64,
        default_interim_s: config.radius.default_interim.0.as_secs() as u32,
        dedup: Dedup::default(),
    };
    tasks.spawn(server.serve());
    Ok(Some(addr))
}

/// Delivery of what SQLite receives to ClickHouse, when configured.
fn start_clickhouse(config: &Config, metrics: &Metrics) -> anyhow::Result<Option<Stop>> {
    let (Some(url), Some(metrics)) = (&config.clickhouse.url, &metrics.clickhouse) else {
        return Ok(None);
    };
    let ch = &config.clickhouse;
    let deliverer = Deliverer {
        client: sink::clickhouse::client(
            url,
            &ch.database,
            ch.user.as_deref(),
            ch.password.as_deref(),
        ),
        database: ch.database.clone(),
        spool: Mutex::new(Spool::open(&config.db)?),
        batch_rows: ch.batch_rows,
        spool_max_rows: ch.spool_max_rows,
        sessions: ch.sessions,
        metrics: metrics.clone(),
        poll: config.flush_interval.0,
        shutdown_timeout: ch.shutdown_timeout.0,
    };
    Ok(Some(deliverer.spawn()))
}

/// The XDP data plane as `mode` asks: required, optional, or none.
fn start_data_plane(config: &Config, kernel: &KernelConfig) -> anyhow::Result<Option<DataPlane>> {
    match config.mode {
        Mode::Socket => Ok(None),
        Mode::Auto if config.interfaces.is_empty() => {
            tracing::info!("no --iface given: receiving flow exports on sockets only");
            Ok(None)
        }
        Mode::Xdp => Ok(Some(DataPlane::start(&config.interfaces, kernel)?)),
        Mode::Auto => match DataPlane::start(&config.interfaces, kernel) {
            Ok(plane) => Ok(Some(plane)),
            Err(err) => {
                tracing::warn!("XDP unavailable, falling back to sockets only: {err}");
                Ok(None)
            }
        },
    }
}

/// Resolves on SIGINT or SIGTERM, naming the signal.
async fn wait_for_signal(mut interrupt: Signal, mut terminate: Signal) -> &'static str {
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
