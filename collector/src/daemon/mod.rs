//! The I/O shell of `flowtally run`: everything that touches sockets, the
//! kernel, files and the clock, around the sans-IO cores. `serve` runs the
//! steps in order: open the store, bind the flow sockets, start the XDP data
//! plane, start the socket path, serve HTTP (metrics, API, console), start
//! the RADIUS server, drop
//! privileges, announce, then flush every interval until SIGINT or SIGTERM,
//! when it stops all intake, flushes everything, and exits.

pub mod clock;
mod enforce;
pub mod flow_socket;
pub mod flush;
mod flush_log;
pub mod privileges;
pub mod radius_socket;
pub mod receive;
pub mod snmp_poll;
pub mod templates_file;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use flowtally_common::agg::Profile;
use rusqlite::Connection;
use tokio::{
    net::{TcpListener, UdpSocket},
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc::unbounded_channel,
    task::{JoinSet, block_in_place},
    time::{MissedTickBehavior, interval},
};

use self::{
    enforce::Enforcer,
    flow_socket::SocketPath,
    flush::{FlushParts, Flusher},
    flush_log::FlushLog,
    receive::Receivers,
};
use crate::{
    aggregate::Aggregator,
    associate::{Associator, Waiting},
    classes::Classes,
    config::{Config, Mode},
    http,
    metrics::{Metrics, UserMetrics},
    nat::Bindings,
    netflow::Limits,
    quota::Quotas,
    radius::{self, clients::Clients, limiter::Limiter, nas_bounds::NasBounds},
    sessions::History,
    sink::{
        self,
        clickhouse::{ClickHouseMetrics, Deliverer, Spool, Stop},
        nat_store,
    },
    subscribers::SubscriberNets,
    timestamp::Timestamp,
    xdp::{
        self, DataPlane, Drainer, KernelConfig, KernelIntegrity, KernelSflow, KernelStats,
        KernelTemplates,
    },
};

/// Sequence gaps wait at least this long for a late export (the socket
/// path may lag the kernel by a few seconds under load).
const MIN_SEQUENCE_HOLD_MS: u64 = 2_000;

pub fn run(config: Config) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let metrics = new_metrics(&config);
    // Read once: both paths and the flush must agree on the numbers.
    let classes = config.classes()?;
    // Every writer of the database takes its turn here (sink::Gate).
    let gate = sink::WriteGate::default();
    let store = open_store(&config, &gate, &metrics)?;
    let threads = receive::thread_count(config.socket_receive_threads);
    let buffer = config.socket_receive_buffer;
    let mut sockets = flow_socket::bind("netflow", &config.netflow, buffer, threads)?;
    let netflow_addrs = group_addrs(&sockets)?;
    let sflow_sockets = flow_socket::bind("sflow", &config.sflow, buffer, threads)?;
    let sflow_addrs = group_addrs(&sflow_sockets)?;
    sockets.extend(sflow_sockets);
    let mut tasks = JoinSet::new();
    let flow_addrs = [&netflow_addrs[..], &sflow_addrs[..]].concat();
    let mut kernel = start_kernel(&config, &classes, &flow_addrs, &metrics, &mut tasks)?;
    let socket_path = Arc::new(start_socket_path(
        &config,
        &classes,
        &metrics,
        kernel.templates.take(),
        &store.bindings,
    )?);
    let http_addr = serve_http(
        &config,
        &metrics,
        kernel.stats.take(),
        &socket_path,
        &mut tasks,
    )
    .await?;
    let radius_addr = start_radius(&config, &store.history, &gate, &metrics, &mut tasks).await?;
    let receivers = Receivers::start(sockets.into_iter().flatten().collect(), &socket_path)?;
    let mut overflow = JoinSet::new();
    if let Some(drainer) = &kernel.drainer {
        let path = Arc::clone(&socket_path);
        overflow.spawn(xdp::read_overflow(
            drainer.overflow_reader(),
            move |key, value| {
                path.aggregator
                    .lock()
                    .expect("aggregator lock poisoned")
                    .absorb(key, value);
            },
        ));
    }
    if let Some(integrity) = &kernel.integrity {
        socket_path.set_kernel_exports(Arc::clone(&integrity.ring));
        let path = Arc::clone(&socket_path);
        overflow.spawn(xdp::read_exports(&integrity.ring, move || {
            path.read_kernel_exports(clock::unix_ms());
        }));
    }
    if !config.snmp.agents.is_empty() {
        tasks.spawn(snmp_poll::run(
            snmp_poll::Poller::new(&config, Arc::clone(&gate))?,
            metrics.integrity.clone(),
        ));
    }
    // Handlers go in before `ready`: a signal right after it must not find
    // the default action (terminate without flushing).
    let signal = wait_for_signal(
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    privileges::drop_after_setup()?;
    let delivery = start_clickhouse(&config, &gate, &metrics)?;

    // What we listen on, for people and for scripts (one item per line).
    let mut lines: Vec<String> = Vec::new();
    for addr in &netflow_addrs {
        lines.push(format!("listen netflow udp {addr}"));
    }
    for addr in &sflow_addrs {
        lines.push(format!("listen sflow udp {addr}"));
    }
    if let Some(addr) = radius_addr {
        lines.push(format!("listen radius udp {addr}"));
    }
    lines.push(format!("listen metrics http://{http_addr}/metrics"));
    lines.push(format!("listen http http://{http_addr}/"));
    for attachment in kernel.plane.iter().flat_map(|plane| plane.attachments()) {
        lines.push(format!("xdp {} {}", attachment.iface, attachment.mode));
    }
    lines.push(format!("sink sqlite {}", config.db.display()));
    if let Some(url) = &config.clickhouse.url {
        lines.push(format!(
            "sink clickhouse {url} {}",
            config.clickhouse.database
        ));
    }
    lines.push("ready".to_owned());
    announce(&lines);

    let mut associator = Associator::new(
        config.stop_grace.0.as_millis() as u64,
        config.late_window.0.as_millis() as u64,
    )
    .with_nat_pools(config.cgnat.pools.clone());
    associator.restore(store.waiting);
    let mut flusher = Flusher::new(FlushParts {
        drainer: kernel.drainer.take(),
        history: Arc::clone(&store.history),
        bindings: Arc::clone(&store.bindings),
        nat_retention_ms: config.cgnat.retention.map(|span| span.0.as_millis() as u64),
        associator,
        templates_file: config.templates_file(),
        socket: socket_path,
        db: store.db,
        gate,
        metrics,
        profile: config.aggregation.profile(),
        classes,
        run: store.run,
        written: delivery.as_ref().map(Stop::waker),
        kernel_sflow: kernel.sflow.take(),
        integrity: kernel.integrity.take(),
        hold_ms: (config.flush_interval.0.as_millis() as u64).max(MIN_SEQUENCE_HOLD_MS),
        since_ms: store.started_ms,
        max_held_rows: config.max_held_rows,
        enforcer: store.enforcer,
    });
    let signal = flush_until(&mut flusher, &config, signal).await;

    tracing::info!("{signal}: stopping intake, flushing");
    // Stop all intake first so that the last flush sees everything: the
    // links detach with the data plane, the sockets close with their tasks
    // (and the overflow ring's reader stops; the last drain reads the rest).
    drop(kernel.plane);
    block_in_place(|| receivers.stop());
    overflow.shutdown().await;
    let flushed =
        block_in_place(|| flusher.flush(clock::unix_ms(), true)).context("final flush")?;
    tracing::info!("final flush: {flushed}");
    if let Some(delivery) = delivery {
        delivery.finish().await;
    }
    tasks.shutdown().await;
    Ok(())
}

/// Prints `lines` on stdout. A reader that went away (a script that read
/// the address it wanted and closed the pipe) is no reason to stop:
/// `println!` would panic on the broken pipe and take the daemon, with its
/// RADIUS server, down (the cause of `benches/radius.rs`' unanswered
/// requests under load).
fn announce(lines: &[String]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = lines
        .iter()
        .try_for_each(|line| writeln!(out, "{line}"))
        .and_then(|()| out.flush());
    if let Err(err) = written {
        tracing::info!("announcing the listening addresses on stdout: {err}");
    }
}

fn new_metrics(config: &Config) -> Metrics {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    Metrics {
        users: UserMetrics::new(config.user_metrics_top),
        clickhouse: config
            .clickhouse
            .url
            .is_some()
            .then(ClickHouseMetrics::default),
        ..Metrics::default()
    }
}

/// What the database holds for this run to go on from.
struct Store {
    db: Connection,
    /// This run's row in `runs`.
    run: i64,
    started_ms: u64,
    /// Usage rows a previous run left waiting for a late session.
    waiting: Vec<Waiting>,
    history: Arc<Mutex<History>>,
    /// NAT bindings ended within `cgnat.memory_retention`, and open ones.
    bindings: Arc<Mutex<Bindings>>,
    /// With quotas: their usage this period and the actions taken.
    enforcer: Option<Enforcer>,
}

/// Opens the database, records this run (and the gap an unclean stop of the
/// previous one left), and reads back the backlog, the session history and
/// the NAT bindings.
fn open_store(config: &Config, gate: &sink::WriteGate, metrics: &Metrics) -> anyhow::Result<Store> {
    let db = sink::sqlite::open(&config.db)?;
    // Checkpoints come after each flush's write (sink::checkpoint).
    db.pragma_update(None, "wal_autocheckpoint", 0)?;
    db.busy_timeout(sink::WRITER_BUSY_TIMEOUT)?;
    let started_ms = clock::unix_ms();
    let (run, gap) = sink::runs::begin(&db, started_ms)
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
    let bindings = nat_store::load(&db, config.nat_limits(), clock::unix_ms())
        .with_context(|| format!("cannot read the NAT bindings of {}", config.db.display()))?;
    metrics.nat.bindings_in_memory.set(bindings.len() as i64);
    let enforcer = start_enforcer(config, &db, gate, metrics)?;
    Ok(Store {
        db,
        run,
        started_ms,
        waiting,
        history: Arc::new(Mutex::new(history)),
        bindings: Arc::new(Mutex::new(bindings)),
        enforcer,
    })
}

/// Quotas restored from the database (this period's usage and actions),
/// and the task that sends their requests to the NASes; `None` without
/// quotas.
fn start_enforcer(
    config: &Config,
    db: &Connection,
    gate: &sink::WriteGate,
    metrics: &Metrics,
) -> anyhow::Result<Option<Enforcer>> {
    if config.quotas.is_empty() {
        return Ok(None);
    }
    let mut quotas = Quotas::from_config(&config.quotas);
    sink::quota_store::restore(db, &mut quotas, clock::unix_ms())
        .with_context(|| format!("cannot read quota usage from {}", config.db.display()))?;
    let (jobs, queue) = unbounded_channel();
    tokio::spawn(enforce::serve(
        config.radius.nas.clone(),
        sink::sqlite::open(&config.db)?,
        Arc::clone(gate),
        queue,
        metrics.quota.clone(),
    ));
    tracing::info!(
        "{} quotas, enforced at {} NASes",
        config.quotas.len(),
        config.radius.nas.len()
    );
    Ok(Some(Enforcer {
        quotas,
        jobs,
        metrics: metrics.quota.clone(),
    }))
}

/// The XDP data plane and the handles the other steps take from it; all
/// `None` without XDP.
struct Kernel {
    plane: Option<DataPlane>,
    stats: Option<KernelStats>,
    drainer: Option<Drainer>,
    templates: Option<KernelTemplates>,
    sflow: Option<KernelSflow>,
    integrity: Option<KernelIntegrity>,
}

/// The address each group of sockets is bound to (port 0 resolved).
fn group_addrs(groups: &[Vec<std::net::UdpSocket>]) -> std::io::Result<Vec<SocketAddr>> {
    groups.iter().map(|group| group[0].local_addr()).collect()
}

/// `flow_addrs`: every NetFlow and sFlow address, whose ports the XDP
/// program looks for.
fn start_kernel(
    config: &Config,
    classes: &Classes,
    flow_addrs: &[SocketAddr],
    metrics: &Metrics,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Kernel> {
    let kernel_config = KernelConfig {
        collector_ports: flow_addrs.iter().map(SocketAddr::port).collect(),
        subscriber_networks: config.subscriber_nets(),
        classes: classes.networks().collect(),
        exporters: config.exporters.clone(),
        billing_scope: config.scope_keys(),
        profile: config.aggregation.profile(),
        flags: config.flags(),
        aggregate_entries: config.maps.aggregate_entries,
        aggregate_entries_v6: config.maps.aggregate_entries_v6,
        overflow_ring_bytes: config.maps.overflow_ring_bytes,
        interfaces: config.reconciled_interfaces(),
        log_level: crate::xdp::kernel_log_level(),
    };
    let Some(mut plane) = start_data_plane(config, &kernel_config)? else {
        return Ok(Kernel {
            plane: None,
            stats: None,
            drainer: None,
            templates: None,
            sflow: None,
            integrity: None,
        });
    };
    for (program, count) in plane.verified_instructions() {
        if let Some(count) = count {
            tracing::info!(
                "XDP program {program}: {count} instructions verified (the kernel's limit is 1000000)"
            );
        }
    }
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
    Ok(Kernel {
        stats: Some(plane.take_stats()?),
        drainer: Some(plane.take_drainer()?),
        templates: Some(plane.take_templates()?),
        sflow: Some(plane.take_sflow()?),
        integrity: Some(plane.take_integrity()?),
        plane: Some(plane),
    })
}

/// Binds the HTTP listener and serves `/metrics`, the API and the console
/// on it; returns its address.
async fn serve_http(
    config: &Config,
    metrics: &Metrics,
    kernel_stats: Option<KernelStats>,
    socket_path: &Arc<SocketPath>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<SocketAddr> {
    let access = http::Access::load(&config.http)?;
    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    let templates = Arc::clone(socket_path);
    let shared = http::Shared {
        registry: Arc::new(metrics.registry(kernel_stats)),
        db: config.db.clone(),
        access,
        tariffs: config.http.tariffs.clone(),
        orgs: config.http.orgs.clone(),
        metrics: metrics.clone(),
        templates: Box::new(move || templates.templates_per_exporter()),
        clock: || Timestamp(clock::unix_ms()),
        reads: tokio::sync::Semaphore::new(http::MAX_READS),
    };
    tasks.spawn(http::serve(listener, http::router(Arc::new(shared))));
    Ok(addr)
}

/// The socket path's decoding state, with the templates saved by the last
/// run (installed in the kernel too, when there is one).
fn start_socket_path(
    config: &Config,
    classes: &Classes,
    metrics: &Metrics,
    kernel_templates: Option<KernelTemplates>,
    bindings: &Arc<Mutex<Bindings>>,
) -> anyhow::Result<SocketPath> {
    let profile: Profile = config.aggregation.profile();
    let aggregator = Aggregator::new(
        profile,
        config.flags(),
        SubscriberNets::new(&config.subscriber_nets()),
    )
    .with_scope(&config.scope_keys())
    .with_classes(classes.lookup())
    .with_interfaces(&config.reconciled_interfaces());
    let limits = Limits {
        max_templates_per_exporter: config.templates.max_per_exporter,
        max_fields_per_template: config.templates.max_fields,
        max_template_bytes: config.templates.max_record_bytes,
        template_timeout_ms: config.templates.timeout.0.as_millis() as u64,
        ..Limits::default()
    };
    let cache = templates_file::restore(&config.templates_file(), limits, clock::unix_ms())?;
    Ok(SocketPath::new(
        aggregator,
        cache,
        kernel_templates,
        &config.exporters,
        Arc::clone(bindings),
        metrics.clone(),
    ))
}

/// Flushes every `flush_interval` until a signal comes; returns its name.
async fn flush_until(
    flusher: &mut Flusher,
    config: &Config,
    signal: impl Future<Output = &'static str>,
) -> &'static str {
    let mut log = FlushLog::new(config.log_summary.0.as_millis() as u64, clock::unix_ms());
    let mut ticks = interval(config.flush_interval.0);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await;
    tokio::pin!(signal);
    loop {
        tokio::select! {
            signal = &mut signal => return signal,
            _ = ticks.tick() => {
                let now_ms = clock::unix_ms();
                match block_in_place(|| flusher.flush(now_ms, false)) {
                    Ok(flushed) => {
                        tracing::debug!("flush: {flushed}");
                        if let Some(line) = log.flushed(now_ms, &flushed) {
                            tracing::info!("{line}");
                        }
                    }
                    Err(err) => tracing::error!("flush: {err:#}"),
                }
            }
        }
    }
}

/// The RADIUS accounting server, when some client can be trusted.
async fn start_radius(
    config: &Config,
    history: &Arc<Mutex<History>>,
    gate: &sink::WriteGate,
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
    // The flush checkpoints (sink::checkpoint), not a commit before its answer.
    db.pragma_update(None, "wal_autocheckpoint", 0)?;
    db.busy_timeout(sink::WRITER_BUSY_TIMEOUT)?;
    metrics.storage.set_ok(radius_socket::WRITER, true);
    {
        let history = history.lock().expect("history lock poisoned");
        metrics
            .radius
            .sessions_open
            .set(history.open_sessions() as i64);
        metrics.radius.sessions_in_memory.set(history.len() as i64);
    }
    let server = radius_socket::RadiusSocket {
        socket,
        server: radius::server::Server::new(
            clients,
            Limiter::new(config.radius.rate_limit),
            config.radius.silence_multiple,
            config.radius.default_interim.0.as_secs() as u32,
        )
        .with_nas_bounds(NasBounds::new(
            config.radius.nas_max_open_sessions,
            config.radius.nas_new_sessions_per_minute,
        )),
        history: Arc::clone(history),
        db,
        gate: Arc::clone(gate),
        metrics: metrics.radius.clone(),
        storage: metrics.storage.clone(),
        outage: Default::default(),
        retention_ms: config.radius.history_retention.0.as_millis() as u64,
        unwritten: Vec::new(),
    };
    tasks.spawn(server.serve());
    Ok(Some(addr))
}

/// Delivery of what SQLite receives to ClickHouse, when configured.
fn start_clickhouse(
    config: &Config,
    gate: &sink::WriteGate,
    metrics: &Metrics,
) -> anyhow::Result<Option<Stop>> {
    let (Some(url), Some(metrics)) = (&config.clickhouse.url, &metrics.clickhouse) else {
        return Ok(None);
    };
    let ch = &config.clickhouse;
    let deliverer = Deliverer {
        client: sink::clickhouse::client(&sink::clickhouse::Endpoint {
            url,
            database: &ch.database,
            user: ch.user.as_deref(),
            password: ch.password.as_ref().map(crate::config::Secret::expose),
            ca_file: ch.ca_file.as_deref(),
        })?,
        database: ch.database.clone(),
        spool: Mutex::new(Spool::open(&config.db)?),
        gate: Arc::clone(gate),
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
