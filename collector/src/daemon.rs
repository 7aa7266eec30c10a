//! `flowtally run`: binds the sockets, starts the XDP data plane, serves
//! metrics, and shuts everything down on SIGINT/SIGTERM.

use std::{collections::BTreeSet, sync::Arc};

use anyhow::Context as _;
use prometheus_client::collector::Collector;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    task::JoinSet,
};

use crate::{
    config::{Config, Mode},
    flow_socket,
    metrics::{self, Metrics},
    sink,
    xdp::DataPlane,
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
    let metrics = Metrics::default();
    let _db = sink::sqlite::open(&config.db)?;

    let sockets = flow_socket::bind(&config.netflow).await?;
    let mut netflow_addrs = Vec::with_capacity(sockets.len());
    for socket in &sockets {
        netflow_addrs.push(socket.local_addr()?);
    }
    let ports: BTreeSet<u16> = netflow_addrs.iter().map(|addr| addr.port()).collect();

    let mut data_plane = start_data_plane(&config, &ports)?;
    let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
    if let Some(plane) = data_plane.as_mut() {
        collectors.push(Box::new(plane.stats_collector()?));
        for attachment in plane.attachments() {
            metrics
                .xdp_attached
                .get_or_create(&[
                    ("iface", attachment.iface.clone()),
                    ("mode", attachment.mode.to_string()),
                ])
                .set(1);
        }
    }
    let registry = Arc::new(metrics.registry(collectors));

    let metrics_listener = TcpListener::bind(config.metrics)
        .await
        .with_context(|| format!("metrics {}", config.metrics))?;
    let metrics_addr = metrics_listener.local_addr()?;

    let mut tasks = JoinSet::new();
    for socket in sockets {
        tasks.spawn(flow_socket::receive(socket, metrics.clone()));
    }
    tasks.spawn(metrics::http::serve(metrics_listener, registry));

    // What we listen on, for people and for scripts (one item per line).
    for addr in &netflow_addrs {
        println!("listen netflow udp {addr}");
    }
    println!("listen metrics http://{metrics_addr}/metrics");
    for attachment in data_plane.iter().flat_map(|plane| plane.attachments()) {
        println!("xdp {} {}", attachment.iface, attachment.mode);
    }
    println!("sink sqlite {}", config.db.display());
    println!("ready");

    let signal = wait_for_signal();
    match data_plane.as_mut() {
        Some(plane) => {
            tokio::select! {
                signal = signal => tracing::info!("{}: shutting down", signal?),
                () = plane.forward_kernel_logs() => unreachable!("forwards until dropped"),
            }
        }
        None => tracing::info!("{}: shutting down", signal.await?),
    }
    tasks.shutdown().await;
    // Dropping the data plane closes the link fds: the kernel detaches.
    drop(data_plane);
    Ok(())
}

/// The XDP data plane as `mode` asks: required, optional, or none.
fn start_data_plane(config: &Config, ports: &BTreeSet<u16>) -> anyhow::Result<Option<DataPlane>> {
    match config.mode {
        Mode::Socket => Ok(None),
        Mode::Auto if config.interfaces.is_empty() => {
            tracing::info!("no --iface given: receiving flow exports on sockets only");
            Ok(None)
        }
        Mode::Xdp => Ok(Some(DataPlane::start(&config.interfaces, ports)?)),
        Mode::Auto => match DataPlane::start(&config.interfaces, ports) {
            Ok(plane) => Ok(Some(plane)),
            Err(err) => {
                tracing::warn!("XDP unavailable, falling back to sockets only: {err}");
                Ok(None)
            }
        },
    }
}

/// Resolves on SIGINT or SIGTERM, naming the signal.
async fn wait_for_signal() -> anyhow::Result<&'static str> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    })
}
