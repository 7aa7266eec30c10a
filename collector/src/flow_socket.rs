//! The socket path: UDP sockets on the `--netflow` addresses. Every flow
//! export the XDP program passes up (or all of them, without XDP) arrives
//! here and is decoded and aggregated with the same rules as in the kernel.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use flowtally_common::{agg::Ip, v5};
use tokio::net::UdpSocket;

use crate::{aggregate::Aggregator, ip::to_ip, metrics::Metrics};

/// Largest UDP payload; exports are never larger.
const MAX_DATAGRAM: usize = 65_535;

/// Binds every address; port 0 gets a free port (see `local_addr`).
pub async fn bind(addrs: &[SocketAddr]) -> io::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|err| io::Error::new(err.kind(), format!("netflow {addr}: {err}")))?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Decoding state shared by all sockets.
#[derive(Debug)]
pub struct SocketPath {
    pub aggregator: Mutex<Aggregator>,
    /// Allowed exporters; `None` allows any.
    exporters: Option<HashSet<Ip>>,
    metrics: Metrics,
}

impl SocketPath {
    pub fn new(aggregator: Aggregator, exporters: &[IpAddr], metrics: Metrics) -> Self {
        Self {
            aggregator: Mutex::new(aggregator),
            exporters: (!exporters.is_empty())
                .then(|| exporters.iter().copied().map(to_ip).collect()),
            metrics,
        }
    }

    /// Decodes and aggregates one datagram, counting it either way.
    pub fn handle(&self, from: IpAddr, datagram: &[u8]) {
        self.metrics.socket.packets.inc();
        let exporter = to_ip(from);
        if let Some(allowed) = &self.exporters
            && !allowed.contains(&exporter)
        {
            return self.reject("unknown_exporter");
        }
        let version = datagram.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        if version != Some(v5::VERSION) {
            // NetFlow v9 and IPFIX are not decoded yet.
            return self.reject(if version.is_none() {
                v5::Invalid::Truncated.as_str()
            } else {
                "unsupported_version"
            });
        }
        let added = self
            .aggregator
            .lock()
            .expect("aggregator lock poisoned")
            .add_v5(&exporter, datagram);
        match added {
            Ok(added) => {
                self.metrics.socket.records.inc_by(added.records);
                self.metrics.socket.record_bytes.inc_by(added.bytes);
            }
            Err(invalid) => self.reject(invalid.as_str()),
        }
    }

    fn reject(&self, reason: &'static str) {
        self.metrics
            .rejected_packets
            .get_or_create(&[("reason", reason)])
            .inc();
    }
}

/// Receives datagrams until the task is dropped.
pub async fn receive(socket: UdpSocket, path: Arc<SocketPath>) {
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, from)) => path.handle(from.ip(), &buf[..len]),
            // ICMP errors surface on UDP sockets as transient errors; keep going.
            Err(err) => tracing::debug!("netflow socket: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use flowtally_common::{agg::Profile, v5::Header};

    use super::*;
    use crate::{
        netflow::v5::{Record, encode},
        subscribers::SubscriberNets,
    };

    fn path(exporters: &[IpAddr]) -> (SocketPath, Metrics) {
        let metrics = Metrics::default();
        let aggregator = Aggregator::new(
            Profile {
                keep: 0,
                bucket_ms: 60_000,
            },
            0,
            SubscriberNets::new(&[]),
        );
        (
            SocketPath::new(aggregator, exporters, metrics.clone()),
            metrics,
        )
    }

    fn rejected(metrics: &Metrics, reason: &'static str) -> u64 {
        metrics
            .rejected_packets
            .get_or_create(&[("reason", reason)])
            .get()
    }

    #[test]
    fn every_datagram_is_either_aggregated_or_rejected_by_reason() {
        let allowed: IpAddr = "198.18.0.1".parse().unwrap();
        let (path, metrics) = path(&[allowed]);
        let header = Header {
            version: 5,
            ..Header::default()
        };
        let export = encode(&header, &[Record::default(); 3]);
        path.handle(allowed, &export);
        path.handle("198.18.0.9".parse().unwrap(), &export);
        path.handle(allowed, &export[..30]);
        path.handle(allowed, &[0, 10, 0, 0]);
        path.handle(allowed, &[5]);
        assert_eq!(metrics.socket.packets.get(), 5);
        assert_eq!(metrics.socket.records.get(), 3);
        assert_eq!(rejected(&metrics, "unknown_exporter"), 1);
        assert_eq!(rejected(&metrics, "v5_length_mismatch"), 1);
        assert_eq!(rejected(&metrics, "unsupported_version"), 1);
        assert_eq!(rejected(&metrics, "v5_truncated"), 1);
    }
}
