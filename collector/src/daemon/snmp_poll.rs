//! Polls IF-MIB ifHCInOctets and ifHCOutOctets (the 64-bit octet counters)
//! of every billed interface, over SNMPv2c or SNMPv3 (USM), and stores them
//! in `interface_counters` for `flowtally audit`. I/O shell: the audit
//! computes deltas and ratios from the rows.
//!
//! The client is the `snmp2` crate: maintained, SNMPv1/v2c/v3 with USM
//! authentication and privacy in pure Rust (RustCrypto), async on tokio.

use std::{net::SocketAddr, time::Duration};

use rusqlite::Connection;
use snmp2::{AsyncSession, Oid, Value, v3};
use tokio::time::{MissedTickBehavior, interval, timeout};

use super::clock;
use crate::{
    config::{Config, SnmpAgent},
    integrity::audit::CounterRow,
    metrics::IntegrityMetrics,
    sink::{WriteGate, integrity::write_counters, sqlite},
};

/// IF-MIB ifXTable columns (RFC 2863): ifHCInOctets, ifHCOutOctets.
const IF_HC_IN_OCTETS: [u64; 11] = [1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6];
const IF_HC_OUT_OCTETS: [u64; 11] = [1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 10];
/// Interfaces per request (two variables each).
const INTERFACES_PER_REQUEST: usize = 16;

/// The USM security of a v3 agent, from its configuration.
pub fn security(agent: &SnmpAgent) -> Result<v3::Security, String> {
    let user = agent.user.as_deref().unwrap_or_default();
    let password = agent.auth_password.as_ref().map_or("", |s| s.expose());
    let protocol = match agent.auth_protocol.as_deref().unwrap_or("sha1") {
        "md5" => v3::AuthProtocol::Md5,
        "sha1" => v3::AuthProtocol::Sha1,
        "sha224" => v3::AuthProtocol::Sha224,
        "sha256" => v3::AuthProtocol::Sha256,
        "sha384" => v3::AuthProtocol::Sha384,
        "sha512" => v3::AuthProtocol::Sha512,
        other => return Err(format!("unknown auth_protocol {other:?}")),
    };
    let auth = match (
        agent.privacy_protocol.as_deref(),
        agent.privacy_password.as_ref().map(|s| s.expose()),
    ) {
        (None, None) => v3::Auth::AuthNoPriv,
        (Some(cipher), Some(password)) => v3::Auth::AuthPriv {
            cipher: match cipher {
                "des" => v3::Cipher::Des,
                "aes128" | "aes" => v3::Cipher::Aes128,
                "aes192" => v3::Cipher::Aes192,
                "aes256" => v3::Cipher::Aes256,
                other => return Err(format!("unknown privacy_protocol {other:?}")),
            },
            privacy_password: password.as_bytes().to_vec(),
        },
        _ => return Err("privacy_protocol and privacy_password go together".to_owned()),
    };
    Ok(v3::Security::new(user.as_bytes(), password.as_bytes())
        .with_auth_protocol(protocol)
        .with_auth(auth))
}

/// How an agent is spoken to.
enum Credentials {
    V2c(Vec<u8>),
    V3(Box<v3::Security>),
}

struct Agent {
    exporter: String,
    address: SocketAddr,
    interfaces: Vec<u32>,
    credentials: Credentials,
    session: Option<AsyncSession>,
    /// The last poll failed (warn once per outage).
    failing: bool,
}

/// Every agent, and where their counters go.
pub struct Poller {
    agents: Vec<Agent>,
    every: Duration,
    timeout: Duration,
    db: Connection,
    /// Taken for each write (`sink::Gate`).
    gate: WriteGate,
    request_id: i32,
}

impl Poller {
    pub fn new(config: &Config, gate: WriteGate) -> anyhow::Result<Self> {
        let agents = config
            .snmp
            .agents
            .iter()
            .map(|agent| {
                let credentials = match agent.version.as_str() {
                    "3" => Credentials::V3(Box::new(security(agent).map_err(anyhow::Error::msg)?)),
                    _ => Credentials::V2c(
                        agent
                            .community
                            .as_ref()
                            .map_or(Vec::new(), |s| s.expose().as_bytes().to_vec()),
                    ),
                };
                Ok(Agent {
                    exporter: agent.exporter.to_string(),
                    address: agent.address(),
                    interfaces: config.snmp_interfaces(agent),
                    credentials,
                    session: None,
                    failing: false,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            agents,
            every: config.snmp.interval.0,
            timeout: config.snmp.timeout.0,
            db: sqlite::open(&config.db)?,
            gate,
            request_id: 1,
        })
    }
}

/// Polls every agent every interval, until the task is dropped.
pub async fn run(mut poller: Poller, metrics: IntegrityMetrics) {
    let mut ticks = interval(poller.every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let mut rows = Vec::new();
        for agent in &mut poller.agents {
            poller.request_id = poller.request_id.wrapping_add(1000);
            match poll(agent, poller.request_id, poller.timeout).await {
                Ok(polled) => {
                    if agent.failing {
                        tracing::info!("SNMP agent {} answers again", agent.address);
                    }
                    agent.failing = false;
                    metrics.polled(&agent.exporter, true);
                    rows.extend(polled);
                }
                Err(err) => {
                    if !agent.failing {
                        tracing::warn!("SNMP agent {}: {err}", agent.address);
                    }
                    agent.failing = true;
                    agent.session = None;
                    metrics.polled(&agent.exporter, false);
                }
            }
        }
        if !rows.is_empty()
            && let Err(err) = tokio::task::block_in_place(|| {
                let _turn = poller.gate.lock();
                write_counters(&mut poller.db, &rows)
            })
        {
            tracing::warn!("writing SNMP interface counters: {err}");
        }
    }
}

/// One agent's counters, all interfaces, at one moment.
async fn poll(
    agent: &mut Agent,
    request_id: i32,
    limit: Duration,
) -> Result<Vec<CounterRow>, String> {
    if agent.session.is_none() {
        agent.session = Some(connect(agent, request_id, limit).await?);
    }
    let session = agent.session.as_mut().expect("just connected");
    let mut rows = Vec::with_capacity(agent.interfaces.len());
    for chunk in agent.interfaces.chunks(INTERFACES_PER_REQUEST) {
        let oids: Vec<Oid> = chunk
            .iter()
            .flat_map(|&ifindex| {
                [
                    oid(&IF_HC_IN_OCTETS, ifindex),
                    oid(&IF_HC_OUT_OCTETS, ifindex),
                ]
            })
            .collect::<Result<_, _>>()?;
        let refs: Vec<&Oid> = oids.iter().collect();
        let pdu = timeout(limit, session.get_many(&refs))
            .await
            .map_err(|_| format!("no answer within {limit:?}"))?
            .map_err(|err| format!("{err:?}"))?;
        if pdu.error_status != 0 {
            return Err(format!(
                "error status {} at variable {}",
                pdu.error_status, pdu.error_index
            ));
        }
        let mut seen = Vec::new();
        let values: Vec<Option<u64>> = pdu
            .varbinds
            .map(|(_, value)| match value {
                Value::Counter64(n) => Some(n),
                other => {
                    seen.push(format!("{other:?}"));
                    None
                }
            })
            .collect();
        let time_ms = clock::unix_ms();
        for (i, &if_index) in chunk.iter().enumerate() {
            let (Some(Some(in_octets)), Some(Some(out_octets))) =
                (values.get(2 * i).copied(), values.get(2 * i + 1).copied())
            else {
                return Err(format!(
                    "no 64-bit octet counters for ifIndex {if_index} ({} values, {seen:?})",
                    values.len()
                ));
            };
            rows.push(CounterRow {
                exporter: agent.exporter.clone(),
                if_index,
                time_ms,
                in_octets,
                out_octets,
                source: "snmp".to_owned(),
            });
        }
    }
    Ok(rows)
}

async fn connect(agent: &Agent, request_id: i32, limit: Duration) -> Result<AsyncSession, String> {
    let io = |err: std::io::Error| err.to_string();
    match &agent.credentials {
        Credentials::V2c(community) => AsyncSession::new_v2c(agent.address, community, request_id)
            .await
            .map_err(io),
        Credentials::V3(security) => {
            let mut session = AsyncSession::new_v3(agent.address, request_id, (**security).clone())
                .await
                .map_err(io)?;
            // Engine discovery (RFC 3414 §4), then the keys localised to it.
            timeout(limit, session.init())
                .await
                .map_err(|_| format!("no answer to engine discovery within {limit:?}"))?
                .map_err(|err| format!("engine discovery: {err:?}"))?;
            Ok(session)
        }
    }
}

fn oid(column: &[u64], ifindex: u32) -> Result<Oid<'static>, String> {
    let mut arcs = column.to_vec();
    arcs.push(u64::from(ifindex));
    Oid::from(&arcs).map_err(|err| format!("OID: {err:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_counter_oids_are_the_if_mib_ones() {
        assert_eq!(
            oid(&IF_HC_IN_OCTETS, 7).unwrap().to_id_string(),
            "1.3.6.1.2.1.31.1.1.1.6.7"
        );
        assert_eq!(
            oid(&IF_HC_OUT_OCTETS, 7).unwrap().to_id_string(),
            "1.3.6.1.2.1.31.1.1.1.10.7"
        );
    }
}
