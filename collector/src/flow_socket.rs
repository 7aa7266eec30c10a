//! The socket path: UDP sockets on the `--netflow` addresses. Every flow
//! export the XDP program passes up (or all of them, without XDP) arrives
//! here.

use std::{io, net::SocketAddr};

use tokio::net::UdpSocket;

use crate::metrics::{Metrics, SOCKET_PATH};

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

/// Receives datagrams until the task is dropped.
pub async fn receive(socket: UdpSocket, metrics: Metrics) {
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, _exporter)) => {
                metrics.packets.get_or_create(&SOCKET_PATH).inc();
                metrics
                    .packet_bytes
                    .get_or_create(&SOCKET_PATH)
                    .inc_by(len as u64);
            }
            // ICMP errors surface on UDP sockets as transient errors; keep going.
            Err(err) => tracing::debug!("netflow socket: {err}"),
        }
    }
}
