//! `flowtally audit` (sans-IO): from what the daemon recorded — export
//! health per flush, sFlow sources' figures, flow bytes per billed
//! interface, the interfaces' own octet counters — how complete the flow
//! data of a time range is, per exporter and per interface.
//!
//! - Per exporter stream: what arrived, what its sequence numbers say was
//!   lost (as a share of what was sent, and in bytes estimated at the
//!   average of what arrived), duplicates and restarts.
//! - Per interface and direction: the interface's octets in (or out)
//!   between its first and last counter reading in the range (the sum of
//!   the differences of consecutive readings; a counter that went back is
//!   a discontinuity, skipped) against the bytes of flow records that
//!   entered (or left) by it in that span (per-flush figures, prorated at
//!   the span's edges), plus a link-layer overhead per flow packet:
//!   interface counters count frames (an Ethernet header is 14 bytes),
//!   flows count IP bytes. A probe that reports one interface as both
//!   input and output (softflowd) has its records counted as input. Flows
//!   are exported after they end (active and inactive timeouts), so
//!   compare spans much longer than those.

use std::collections::BTreeMap;

use crate::report::render::{csv_field, json_string};

/// One `export_health` row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthRow {
    pub exporter: String,
    /// `v5`, `v9`, `ipfix`, `sflow`.
    pub protocol: &'static str,
    pub domain: u32,
    pub unit: String,
    pub exports: u64,
    pub records: u64,
    pub bytes: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub restarts: u64,
}

/// One `interface_flows` row: flows of `(from_ms, time_ms]`, in and out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRow {
    pub exporter: String,
    pub if_index: u32,
    pub from_ms: u64,
    pub time_ms: u64,
    pub bytes: [u64; 2],
    pub packets: [u64; 2],
}

/// One `interface_counters` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterRow {
    pub exporter: String,
    pub if_index: u32,
    pub time_ms: u64,
    pub in_octets: u64,
    pub out_octets: u64,
    pub source: String,
}

/// Everything the audit reads for its range.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub health: Vec<HealthRow>,
    pub flows: Vec<FlowRow>,
    pub counters: Vec<CounterRow>,
}

/// How the audit judges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    /// Link-layer bytes per packet that interface counters include.
    pub link_overhead: u64,
    /// How far a ratio may be from 1 and still be `ok`.
    pub tolerance: f64,
}

/// One exporter stream's line.
#[derive(Clone, Debug, PartialEq)]
pub struct ExporterLine {
    pub health: HealthRow,
    /// `lost / (received + lost)`.
    pub lost_share: f64,
    pub lost_bytes_estimate: u64,
    pub verdict: String,
}

/// One interface's line, for one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct InterfaceLine {
    pub exporter: String,
    pub if_index: u32,
    /// `in` or `out`.
    pub direction: &'static str,
    pub source: String,
    /// First and last counter reading compared.
    pub from_ms: u64,
    pub to_ms: u64,
    pub flow_bytes: u64,
    pub flow_packets: u64,
    /// The interface's octets in that direction over the span.
    pub interface_octets: u64,
    /// (flow bytes + overhead × packets) / interface octets.
    pub ratio: Option<f64>,
    pub discontinuities: u64,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Audit {
    pub exporters: Vec<ExporterLine>,
    pub interfaces: Vec<InterfaceLine>,
}

impl Audit {
    /// Estimated lost units across all exporters.
    pub fn lost(&self) -> u64 {
        self.exporters.iter().map(|e| e.health.lost).sum()
    }
}

pub fn compute(rows: &Rows, judgement: Judgement) -> Audit {
    Audit {
        exporters: exporters(&rows.health),
        interfaces: interfaces(rows, judgement),
    }
}

fn exporters(health: &[HealthRow]) -> Vec<ExporterLine> {
    let mut sums: BTreeMap<(String, &'static str, u32, String), HealthRow> = BTreeMap::new();
    for h in health {
        let key = (h.exporter.clone(), h.protocol, h.domain, h.unit.clone());
        let sum = sums.entry(key).or_insert_with(|| HealthRow {
            exporter: h.exporter.clone(),
            protocol: h.protocol,
            domain: h.domain,
            unit: h.unit.clone(),
            ..HealthRow::default()
        });
        sum.exports += h.exports;
        sum.records += h.records;
        sum.bytes += h.bytes;
        sum.received += h.received;
        sum.lost += h.lost;
        sum.duplicates += h.duplicates;
        sum.restarts += h.restarts;
    }
    sums.into_values()
        .map(|h| {
            let sent = h.received + h.lost;
            let lost_share = if sent == 0 {
                0.0
            } else {
                h.lost as f64 / sent as f64
            };
            let lost_bytes_estimate = if h.received == 0 {
                0
            } else {
                (u128::from(h.bytes) * u128::from(h.lost) / u128::from(h.received)) as u64
            };
            let mut verdict = Vec::new();
            if h.lost > 0 {
                verdict.push(format!("loss {:.2}%", 100.0 * lost_share));
            }
            if h.restarts > 0 {
                verdict.push("restarted".to_owned());
            }
            if h.duplicates > 0 {
                verdict.push("duplicates".to_owned());
            }
            ExporterLine {
                verdict: if verdict.is_empty() {
                    "ok".to_owned()
                } else {
                    verdict.join(", ")
                },
                lost_share,
                lost_bytes_estimate,
                health: h,
            }
        })
        .collect()
}

fn interfaces(rows: &Rows, judgement: Judgement) -> Vec<InterfaceLine> {
    let mut readings: BTreeMap<(String, u32, String), Vec<&CounterRow>> = BTreeMap::new();
    for c in &rows.counters {
        readings
            .entry((c.exporter.clone(), c.if_index, c.source.clone()))
            .or_default()
            .push(c);
    }
    let mut lines = Vec::new();
    for ((exporter, if_index, source), mut polls) in readings {
        polls.sort_by_key(|c| c.time_ms);
        let (first, last) = (polls[0].time_ms, polls[polls.len() - 1].time_ms);
        let mut octets = [0u64; 2];
        let mut discontinuities = 0;
        for pair in polls.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            match (
                b.in_octets.checked_sub(a.in_octets),
                b.out_octets.checked_sub(a.out_octets),
            ) {
                (Some(i), Some(o)) => {
                    octets[0] = octets[0].saturating_add(i);
                    octets[1] = octets[1].saturating_add(o);
                }
                // A counter that went back: the agent restarted or reset it.
                _ => discontinuities += 1,
            }
        }
        let (mut bytes, mut packets) = ([0f64; 2], [0f64; 2]);
        for f in rows
            .flows
            .iter()
            .filter(|f| f.exporter == exporter && f.if_index == if_index)
        {
            let share = overlap(f.from_ms, f.time_ms, first, last);
            for side in 0..2 {
                bytes[side] += f.bytes[side] as f64 * share;
                packets[side] += f.packets[side] as f64 * share;
            }
        }
        for (side, direction) in ["in", "out"].into_iter().enumerate() {
            let (flow_bytes, flow_packets) =
                (bytes[side].round() as u64, packets[side].round() as u64);
            let octets = octets[side];
            if flow_bytes == 0 && octets == 0 && polls.len() > 1 {
                continue;
            }
            let wire = flow_bytes + judgement.link_overhead * flow_packets;
            let ratio = (octets > 0).then(|| wire as f64 / octets as f64);
            let verdict = match ratio {
                _ if polls.len() < 2 => "one reading",
                None => "no counters",
                Some(_) if flow_bytes == 0 => "no flows",
                Some(r) if (r - 1.0).abs() <= judgement.tolerance => "ok",
                Some(r) if r < 1.0 => "flows short",
                Some(_) => "flows over",
            };
            lines.push(InterfaceLine {
                exporter: exporter.clone(),
                if_index,
                direction,
                source: source.clone(),
                from_ms: first,
                to_ms: last,
                flow_bytes,
                flow_packets,
                interface_octets: octets,
                ratio,
                discontinuities,
                verdict,
            });
        }
    }
    lines
}

/// The share of `(from, to]` inside `[start, end]`.
fn overlap(from: u64, to: u64, start: u64, end: u64) -> f64 {
    if to <= from {
        return f64::from(u8::from(to >= start && to <= end));
    }
    let inside = to.min(end).saturating_sub(from.max(start));
    inside as f64 / (to - from) as f64
}

/// The audit as a table, CSV or JSON (raw numbers).
pub fn render(audit: &Audit, format: crate::report::render::Format) -> String {
    use crate::report::render::Format;
    match format {
        Format::Table => table(audit),
        Format::Csv => csv(audit),
        Format::Json => json(audit),
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"))
}

fn table(audit: &Audit) -> String {
    let mut out = String::from("Exporters\n");
    let header = [
        "exporter",
        "protocol",
        "domain",
        "exports",
        "records",
        "bytes",
        "unit",
        "lost",
        "lost %",
        "lost bytes (est.)",
        "duplicates",
        "restarts",
        "verdict",
    ];
    let rows: Vec<Vec<String>> = audit
        .exporters
        .iter()
        .map(|e| {
            let h = &e.health;
            vec![
                h.exporter.clone(),
                h.protocol.to_owned(),
                h.domain.to_string(),
                h.exports.to_string(),
                h.records.to_string(),
                h.bytes.to_string(),
                h.unit.clone(),
                h.lost.to_string(),
                format!("{:.2}", 100.0 * e.lost_share),
                e.lost_bytes_estimate.to_string(),
                h.duplicates.to_string(),
                h.restarts.to_string(),
                e.verdict.clone(),
            ]
        })
        .collect();
    out.push_str(&grid(&header, &rows));
    out.push_str("\nInterfaces\n");
    let header = [
        "exporter",
        "ifindex",
        "counters",
        "from",
        "to",
        "flow bytes",
        "flow packets",
        "interface octets",
        "ratio",
        "discontinuities",
        "verdict",
    ];
    let rows: Vec<Vec<String>> = audit
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.exporter.clone(),
                i.if_index.to_string(),
                i.direction.to_owned(),
                i.source.clone(),
                crate::timestamp::Timestamp(i.from_ms).to_string(),
                crate::timestamp::Timestamp(i.to_ms).to_string(),
                i.flow_bytes.to_string(),
                i.flow_packets.to_string(),
                i.interface_octets.to_string(),
                ratio(i.ratio),
                i.discontinuities.to_string(),
                i.verdict.to_owned(),
            ]
        })
        .collect();
    out.push_str(&grid(&header, &rows));
    out
}

/// Left-aligned text, right-aligned numbers, columns as wide as their
/// widest cell.
fn grid(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| {
                if cell.parse::<f64>().is_ok() {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        text.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn csv(audit: &Audit) -> String {
    let mut out = String::from(
        "kind,exporter,protocol_or_source,domain_or_ifindex,exports,records,bytes,unit,lost,\
         lost_share,lost_bytes_estimate,duplicates,restarts,direction,from_ms,to_ms,\
         flow_bytes,flow_packets,interface_octets,ratio,discontinuities,verdict\n",
    );
    for e in &audit.exporters {
        let h = &e.health;
        out.push_str(&format!(
            "exporter,{},{},{},{},{},{},{},{},{:.6},{},{},{},,,,,,,,,{}\n",
            csv_field(&h.exporter),
            h.protocol,
            h.domain,
            h.exports,
            h.records,
            h.bytes,
            h.unit,
            h.lost,
            e.lost_share,
            e.lost_bytes_estimate,
            h.duplicates,
            h.restarts,
            csv_field(&e.verdict),
        ));
    }
    for i in &audit.interfaces {
        out.push_str(&format!(
            "interface,{},{},{},,,,,,,,,,{},{},{},{},{},{},{},{},{}\n",
            csv_field(&i.exporter),
            csv_field(&i.source),
            i.if_index,
            i.direction,
            i.from_ms,
            i.to_ms,
            i.flow_bytes,
            i.flow_packets,
            i.interface_octets,
            i.ratio.map_or(String::new(), |r| format!("{r:.6}")),
            i.discontinuities,
            i.verdict,
        ));
    }
    out
}

fn json(audit: &Audit) -> String {
    let exporters: Vec<String> = audit
        .exporters
        .iter()
        .map(|e| {
            let h = &e.health;
            format!(
                "{{\"exporter\":{},\"protocol\":\"{}\",\"domain\":{},\"exports\":{},\
                 \"records\":{},\"bytes\":{},\"unit\":{},\"received\":{},\"lost\":{},\
                 \"lost_share\":{:.6},\"lost_bytes_estimate\":{},\"duplicates\":{},\
                 \"restarts\":{},\"verdict\":{}}}",
                json_string(&h.exporter),
                h.protocol,
                h.domain,
                h.exports,
                h.records,
                h.bytes,
                json_string(&h.unit),
                h.received,
                h.lost,
                e.lost_share,
                e.lost_bytes_estimate,
                h.duplicates,
                h.restarts,
                json_string(&e.verdict),
            )
        })
        .collect();
    let interfaces: Vec<String> = audit
        .interfaces
        .iter()
        .map(|i| {
            format!(
                "{{\"exporter\":{},\"ifindex\":{},\"direction\":\"{}\",\"source\":{},\"from_ms\":{},\"to_ms\":{},\
                 \"flow_bytes\":{},\"flow_packets\":{},\"interface_octets\":{},\"ratio\":{},\
                 \"discontinuities\":{},\"verdict\":\"{}\"}}",
                json_string(&i.exporter),
                i.if_index,
                i.direction,
                json_string(&i.source),
                i.from_ms,
                i.to_ms,
                i.flow_bytes,
                i.flow_packets,
                i.interface_octets,
                i.ratio.map_or("null".to_owned(), |r| format!("{r:.6}")),
                i.discontinuities,
                i.verdict,
            )
        })
        .collect();
    format!(
        "{{\"exporters\":[{}],\"interfaces\":[{}]}}\n",
        exporters.join(","),
        interfaces.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUDGEMENT: Judgement = Judgement {
        link_overhead: 14,
        tolerance: 0.02,
    };

    fn health(exporter: &str, received: u64, lost: u64, restarts: u64) -> HealthRow {
        HealthRow {
            exporter: exporter.to_owned(),
            protocol: "v5",
            unit: "records".to_owned(),
            exports: received / 30,
            records: received,
            bytes: received * 1000,
            received,
            lost,
            restarts,
            ..HealthRow::default()
        }
    }

    fn poll(time_ms: u64, in_octets: u64, out_octets: u64) -> CounterRow {
        CounterRow {
            exporter: "198.18.0.1".to_owned(),
            if_index: 3,
            time_ms,
            in_octets,
            out_octets,
            source: "snmp".to_owned(),
        }
    }

    /// Flows in by the interface.
    fn flows(from_ms: u64, time_ms: u64, bytes: u64, packets: u64) -> FlowRow {
        FlowRow {
            exporter: "198.18.0.1".to_owned(),
            if_index: 3,
            from_ms,
            time_ms,
            bytes: [bytes, 0],
            packets: [packets, 0],
        }
    }

    #[test]
    fn exporter_figures_add_up_over_flushes_with_loss_as_a_share_of_what_was_sent() {
        let rows = Rows {
            health: vec![
                health("198.18.0.1", 600, 0, 0),
                health("198.18.0.1", 300, 100, 1),
                health("198.18.0.2", 90, 0, 0),
            ],
            ..Rows::default()
        };
        let audit = compute(&rows, JUDGEMENT);
        assert_eq!(audit.exporters.len(), 2);
        let a = &audit.exporters[0];
        assert_eq!(
            (a.health.received, a.health.lost, a.health.restarts),
            (900, 100, 1)
        );
        assert!((a.lost_share - 0.1).abs() < 1e-9);
        assert_eq!(
            a.lost_bytes_estimate,
            100 * 1000,
            "at the average record size"
        );
        assert_eq!(a.verdict, "loss 10.00%, restarted");
        assert_eq!(audit.exporters[1].verdict, "ok");
        assert_eq!(audit.lost(), 100);
    }

    #[test]
    fn interface_octets_are_compared_with_flow_bytes_and_link_overhead() {
        let rows = Rows {
            counters: vec![
                poll(10_000, 1_000, 50),
                poll(20_000, 101_000, 50),
                poll(30_000, 201_400, 50),
            ],
            // 100 packets of 986 IP bytes per 10 s: 1000 bytes a frame.
            flows: vec![
                flows(5_000, 15_000, 98_600, 100),  // half inside
                flows(15_000, 25_000, 98_600, 100), // inside
                flows(25_000, 35_000, 98_600, 100), // half inside
                flows(35_000, 45_000, 98_600, 100), // after
            ],
            ..Rows::default()
        };
        let audit = compute(&rows, JUDGEMENT);
        let i = &audit.interfaces[0];
        assert_eq!(i.interface_octets, 200_400);
        assert_eq!((i.flow_bytes, i.flow_packets), (197_200, 200));
        let r = i.ratio.unwrap();
        assert!((r - 200_000.0 / 200_400.0).abs() < 1e-9, "{r}");
        assert_eq!(i.verdict, "ok");
    }

    #[test]
    fn a_counter_that_went_back_is_skipped_as_a_discontinuity() {
        let rows = Rows {
            counters: vec![
                poll(0, 5_000, 0),
                poll(10_000, 15_000, 0),
                poll(20_000, 700, 0),
                poll(30_000, 10_700, 0),
            ],
            flows: vec![flows(0, 30_000, 10_000, 0)],
            ..Rows::default()
        };
        let i = &compute(&rows, JUDGEMENT).interfaces[0];
        assert_eq!((i.interface_octets, i.discontinuities), (20_000, 1));
        assert_eq!(i.verdict, "flows short");
    }

    #[test]
    fn every_format_carries_the_verdicts() {
        let rows = Rows {
            health: vec![health("198.18.0.1", 300, 30, 0)],
            counters: vec![poll(0, 0, 0), poll(10_000, 1000, 0)],
            flows: vec![flows(0, 10_000, 986, 1)],
        };
        let audit = compute(&rows, JUDGEMENT);
        use crate::report::render::Format;
        let table = render(&audit, Format::Table);
        assert!(
            table.contains("loss 9.09%") && table.contains("1.000"),
            "{table}"
        );
        let csv = render(&audit, Format::Csv);
        assert_eq!(csv.lines().count(), 3, "{csv}");
        assert!(
            csv.contains("interface,198.18.0.1,snmp,3,,,,,,,,,,in,"),
            "{csv}"
        );
        let json = render(&audit, Format::Json);
        assert!(
            json.contains("\"lost\":30") && json.contains("\"ratio\":1.000000"),
            "{json}"
        );
    }
}
