//! A report as a table for people, CSV or JSON. All three carry the same
//! figures: CSV and JSON raw (bytes, seconds with milliseconds, costs with
//! 4 decimals), the table in the [`Units`] asked for (each volume in its own
//! unit with `auto`, else B, or KB, MB, GB of 10^3, 10^6, 10^9 bytes with 3
//! decimals) and h:mm:ss.
//!
//! Besides the groups, every format has the total and the transit traffic
//! (no subscriber: bytes, packets and flows only). In tables and CSV they
//! are rows named `(total)` and `(transit)`: like `(unattributed)` and
//! `(none)`, names in parentheses are flowtally's.

use std::fmt::Write as _;

use super::{
    Line, Report,
    group::Key,
    percentile::{Burst, INTERVAL_MS, bps},
};
use crate::timestamp::Timestamp;

/// The `--format` choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// The `--units` choices: how the table writes volumes. CSV and JSON are
/// always in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Units {
    /// Each volume in the largest unit that keeps it at 1 or more
    /// (`512 B`, `1.234 MB`): small users read as what they used.
    Auto,
    #[value(name = "B")]
    B,
    #[value(name = "KB")]
    Kb,
    #[value(name = "MB")]
    Mb,
    #[value(name = "GB")]
    Gb,
}

impl Units {
    /// The unit's name and size in bytes; none for `auto`.
    fn fixed(self) -> Option<(&'static str, u64)> {
        match self {
            Self::Auto => None,
            Self::B => Some(("B", 1)),
            Self::Kb => Some(("KB", 1_000)),
            Self::Mb => Some(("MB", 1_000_000)),
            Self::Gb => Some(("GB", 1_000_000_000)),
        }
    }

    /// A volume as the table shows it.
    fn volume(self, bytes: u64) -> String {
        match self.fixed() {
            Some((_, 1)) => bytes.to_string(),
            Some((_, size)) => decimal(bytes, size),
            None => {
                let (name, size) = [
                    ("TB", 1_000_000_000_000),
                    ("GB", 1_000_000_000),
                    ("MB", 1_000_000),
                    ("KB", 1_000),
                ]
                .into_iter()
                .find(|&(_, size)| bytes >= size)
                .unwrap_or(("B", 1));
                if size == 1 {
                    format!("{bytes} B")
                } else {
                    format!("{} {name}", decimal(bytes, size))
                }
            }
        }
    }
}

pub fn render(report: &Report, format: Format, units: Units) -> String {
    match format {
        Format::Table => table(report, units),
        Format::Csv => csv(report),
        Format::Json => json(report),
    }
}

const TOTAL: &str = "(total)";
const TRANSIT: &str = "(transit)";

fn period_names(report: &Report) -> Vec<&str> {
    report
        .tariff
        .iter()
        .flat_map(|t| &t.periods)
        .map(|p| p.name.as_str())
        .collect()
}

/// How table and CSV write figures: bytes, time online in ms, bit/s.
struct Cells {
    bytes: Box<dyn Fn(u64) -> String>,
    time: fn(u64) -> String,
    rate: fn(u64) -> String,
}

/// The rows of table and CSV after the header: the groups, then `(total)`
/// and `(transit)`; key cells first, as `name` gives them.
fn rows(report: &Report, units: &Cells, name: fn(&str) -> String) -> Vec<Vec<String>> {
    let figures = |mut cells: Vec<String>, line: &Line, burst: Burst| {
        cells.extend([
            (units.bytes)(line.bytes_up),
            (units.bytes)(line.bytes_down),
            (units.bytes)(line.bytes()),
            line.packets.to_string(),
            line.flows.to_string(),
            (units.time)(line.online_ms),
        ]);
        if report.percentiles.is_some() {
            cells.extend(
                [burst.in_bytes, burst.out_bytes, burst.max_bytes()].map(|b| (units.rate)(bps(b))),
            );
        }
        if report.tariff.is_some() {
            cells.extend(line.periods.iter().map(|p| p.cost.to_string()));
            cells.push(line.cost().to_string());
        }
        cells
    };
    let ours = |label: &str| {
        let mut cells = vec![String::new(); report.columns.len()];
        cells[0] = label.to_owned();
        cells
    };
    let burst = |key: &Key| {
        report
            .percentiles
            .as_ref()
            .and_then(|p| p.groups.get(key).copied())
            .unwrap_or_default()
    };
    let mut rows: Vec<Vec<String>> = report
        .groups
        .iter()
        .map(|(key, line)| {
            figures(
                key.cells().iter().map(|n| name(n)).collect(),
                line,
                burst(key),
            )
        })
        .collect();
    let total_burst = report
        .percentiles
        .as_ref()
        .map(|p| p.total)
        .unwrap_or_default();
    rows.push(figures(ours(TOTAL), &report.total, total_burst));
    let mut transit = ours(TRANSIT);
    transit.extend([
        String::new(),
        String::new(),
        (units.bytes)(report.transit.bytes),
        report.transit.packets.to_string(),
        report.transit.flows.to_string(),
    ]);
    rows.push(transit);
    rows
}

/// The percentile columns' names, `p95 in` or `p95_in_bps` (by `name`).
fn percentile_header(report: &Report, name: fn(&str, &str) -> String) -> Vec<String> {
    report.percentiles.as_ref().map_or_else(Vec::new, |p| {
        let p = format!("p{}", p.percentile);
        ["in", "out", "max"]
            .iter()
            .map(|way| name(&p, way))
            .collect()
    })
}

fn table(report: &Report, units: Units) -> String {
    let mut header: Vec<String> = report.columns.iter().map(|c| c.to_string()).collect();
    match units.fixed() {
        Some((unit, _)) => {
            header.extend([format!("up {unit}"), format!("down {unit}"), unit.into()])
        }
        None => header.extend(["up", "down", "bytes"].map(String::from)),
    }
    header.extend(["packets", "flows", "online"].map(String::from));
    header.extend(percentile_header(report, |p, way| format!("{p} {way}")));
    if let Some(tariff) = &report.tariff {
        let currency = &tariff.currency;
        header.extend(
            period_names(report)
                .iter()
                .map(|p| format!("{p} {currency}")),
        );
        header.push(format!("total {currency}"));
    }
    let keys = report.columns.len();
    let cells = Cells {
        bytes: Box::new(move |bytes| units.volume(bytes)),
        time: hms,
        rate,
    };
    let rows = rows(report, &cells, printable);
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            [&header]
                .into_iter()
                .chain(&rows)
                .filter_map(|cells| cells.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!(
        "usage from {} to {}",
        Timestamp(report.from_ms),
        Timestamp(report.to_ms)
    );
    if let Some(tariff) = &report.tariff {
        write!(
            out,
            ", prices in {}, periods at UTC{}",
            tariff.currency, tariff.timezone
        )
        .unwrap();
    }
    if let Some(p) = &report.percentiles {
        write!(
            out,
            ", {}th percentile of {} 5-minute rates (in: down, out: up)",
            p.percentile, p.intervals
        )
        .unwrap();
    }
    out.push_str("\n\n");
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            let pad = " ".repeat(width - cell.chars().count());
            match i {
                0 => write!(text, "{cell}{pad}"),
                i if i < keys => write!(text, "  {cell}{pad}"),
                _ => write!(text, "  {pad}{cell}"),
            }
            .unwrap();
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    let (groups, ours) = rows.split_at(rows.len() - 2);
    line(&header);
    for cells in groups {
        line(cells);
    }
    line(&widths.iter().map(|&w| "-".repeat(w)).collect::<Vec<_>>());
    for cells in ours {
        line(cells);
    }
    out
}

fn csv(report: &Report) -> String {
    let mut header: Vec<String> = report.columns.iter().map(|c| c.to_string()).collect();
    header.extend(
        [
            "bytes_up",
            "bytes_down",
            "bytes",
            "packets",
            "flows",
            "online_s",
        ]
        .map(String::from),
    );
    header.extend(percentile_header(report, |p, way| format!("{p}_{way}_bps")));
    if report.tariff.is_some() {
        header.extend(period_names(report).iter().map(|p| format!("cost_{p}")));
        header.push("cost".into());
    }
    let width = header.len();
    let mut out = String::new();
    let raw = Cells {
        bytes: Box::new(|bytes| bytes.to_string()),
        time: seconds,
        rate: |bps| bps.to_string(),
    };
    for cells in [header].iter().chain(&rows(report, &raw, str::to_owned)) {
        let fields: Vec<String> = cells.iter().map(|cell| csv_field(cell)).collect();
        out.push_str(&fields.join(","));
        // The transit row ends early: fill it to the header's width.
        out.push_str(&",".repeat(width - fields.len()));
        out.push_str("\r\n");
    }
    out
}

fn json(report: &Report) -> String {
    let percentile_names = percentile_header(report, |p, way| format!("{p}_{way}_bps"));
    let line = |line: &Line, burst: Burst| {
        let mut fields = vec![
            format!("\"bytes_up\": {}", line.bytes_up),
            format!("\"bytes_down\": {}", line.bytes_down),
            format!("\"bytes\": {}", line.bytes()),
            format!("\"packets\": {}", line.packets),
            format!("\"flows\": {}", line.flows),
            format!("\"online_s\": {}", seconds(line.online_ms)),
        ];
        let rates = [burst.in_bytes, burst.out_bytes, burst.max_bytes()];
        for (name, bytes) in percentile_names.iter().zip(rates) {
            fields.push(format!("\"{name}\": {}", bps(bytes)));
        }
        if report.tariff.is_some() {
            let by_period: Vec<String> = period_names(report)
                .iter()
                .zip(&line.periods)
                .map(|(name, p)| format!("{}: {}", json_string(name), p.cost))
                .collect();
            fields.push(format!("\"cost_by_period\": {{{}}}", by_period.join(", ")));
            fields.push(format!("\"cost\": {}", line.cost()));
        }
        fields
    };
    let groups: Vec<String> = report
        .groups
        .iter()
        .map(|(key, l)| {
            let mut fields: Vec<String> = report
                .columns
                .iter()
                .zip(key.cells())
                .map(|(column, name)| format!("\"{column}\": {}", json_string(&name)))
                .collect();
            let burst = report
                .percentiles
                .as_ref()
                .and_then(|p| p.groups.get(key).copied())
                .unwrap_or_default();
            fields.extend(line(l, burst));
            format!("    {{{}}}", fields.join(", "))
        })
        .collect();
    let mut out = String::from("{\n");
    writeln!(out, "  \"from\": \"{}\",", Timestamp(report.from_ms)).unwrap();
    writeln!(out, "  \"to\": \"{}\",", Timestamp(report.to_ms)).unwrap();
    if let Some(tariff) = &report.tariff {
        let periods: Vec<String> = period_names(report)
            .iter()
            .map(|p| json_string(p))
            .collect();
        writeln!(out, "  \"currency\": {},", json_string(&tariff.currency)).unwrap();
        writeln!(out, "  \"timezone\": \"{}\",", tariff.timezone).unwrap();
        writeln!(out, "  \"periods\": [{}],", periods.join(", ")).unwrap();
    }
    if let Some(p) = &report.percentiles {
        writeln!(out, "  \"percentile\": {},", p.percentile).unwrap();
        writeln!(out, "  \"rate_interval_s\": {},", INTERVAL_MS / 1000).unwrap();
        writeln!(out, "  \"intervals\": {},", p.intervals).unwrap();
    }
    if groups.is_empty() {
        out.push_str("  \"groups\": [],\n");
    } else {
        writeln!(out, "  \"groups\": [\n{}\n  ],", groups.join(",\n")).unwrap();
    }
    let total_burst = report
        .percentiles
        .as_ref()
        .map(|p| p.total)
        .unwrap_or_default();
    writeln!(
        out,
        "  \"totals\": {{{}}},",
        line(&report.total, total_burst).join(", ")
    )
    .unwrap();
    let t = report.transit;
    writeln!(
        out,
        "  \"transit\": {{\"bytes\": {}, \"packets\": {}, \"flows\": {}}}",
        t.bytes, t.packets, t.flows
    )
    .unwrap();
    out.push_str("}\n");
    out
}

/// `bytes` in units of `size` (a power of 10 of at least 1000), rounded
/// half up to 3 decimals: `1.500` GB for 1 499 500 000 bytes.
fn decimal(bytes: u64, size: u64) -> String {
    let step = size / 1000;
    let thousandths = bytes / step + u64::from(bytes % step >= step.div_ceil(2));
    format!("{}.{:03}", thousandths / 1000, thousandths % 1000)
}

/// A rate in bit/s as the table shows it: `512 bit/s`, `1.234 Mbit/s`.
fn rate(bps: u64) -> String {
    let units = [
        ("Tbit/s", 1_000_000_000_000),
        ("Gbit/s", 1_000_000_000),
        ("Mbit/s", 1_000_000),
        ("kbit/s", 1_000),
    ];
    match units.into_iter().find(|&(_, size)| bps >= size) {
        Some((name, size)) => format!("{} {name}", decimal(bps, size)),
        None => format!("{bps} bit/s"),
    }
}

/// `5400.250` seconds.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// `1:30:00` for 5 400 999 ms: whole seconds.
fn hms(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Names come from RADIUS clients: control characters would break the
/// table's lines or drive the terminal.
fn printable(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// RFC 4180: quoted when it holds a comma, quote or line break, with
/// quotes doubled.
pub(crate) fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// RFC 8259: quotes, backslashes and control characters escaped.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{
        PeriodLine, Traffic,
        group::{Key, Name},
        tariff::{Cost, Tariff},
    };

    fn report() -> Report {
        let tariff = Tariff::parse(
            "currency = \"EUR\"\n[[period]]\nname = \"all, day\"\nprice_per_gb = 1\nprice_per_hour = 0\n",
        )
        .unwrap();
        let line = |bytes_down, cost| Line {
            bytes_down,
            packets: 3,
            flows: 1,
            online_ms: 5_400_250,
            periods: vec![PeriodLine {
                bytes: bytes_down,
                online_ms: 5_400_250,
                cost: Cost(cost),
            }],
            ..Line::default()
        };
        Report {
            from_ms: 0,
            to_ms: 1_000,
            columns: &["user"],
            tariff: Some(tariff),
            groups: vec![
                (
                    Key::User(Name::Known("o\"brien, jr".into())),
                    line(1_499_500_000, 14_995),
                ),
                (Key::User(Name::Known("eve\n\u{1b}[2J".into())), line(1, 0)),
                (Key::User(Name::Unknown), line(0, 0)),
            ],
            total: line(1_499_500_001, 14_995),
            transit: Traffic {
                bytes: 7,
                packets: 2,
                flows: 1,
            },
            percentiles: None,
        }
    }

    #[test]
    fn csv_quotes_names_and_prints_raw_numbers() {
        assert_eq!(
            render(&report(), Format::Csv, Units::Auto),
            "user,bytes_up,bytes_down,bytes,packets,flows,online_s,\"cost_all, day\",cost\r\n\
             \"o\"\"brien, jr\",0,1499500000,1499500000,3,1,5400.250,1.4995,1.4995\r\n\
             \"eve\n\u{1b}[2J\",0,1,1,3,1,5400.250,0.0000,0.0000\r\n\
             (unattributed),0,0,0,3,1,5400.250,0.0000,0.0000\r\n\
             (total),0,1499500001,1499500001,3,1,5400.250,1.4995,1.4995\r\n\
             (transit),,,7,2,1,,,\r\n"
        );
    }

    #[test]
    fn json_escapes_names() {
        let json = render(&report(), Format::Json, Units::Auto);
        assert!(
            json.contains(r#"{"user": "o\"brien, jr", "bytes_up": 0,"#),
            "{json}"
        );
        assert!(json.contains(r#""user": "eve\n\u001b[2J""#), "{json}");
        assert!(
            json.contains(
                r#""online_s": 5400.250, "cost_by_period": {"all, day": 1.4995}, "cost": 1.4995}"#
            ),
            "{json}"
        );
        assert!(
            json.contains(r#""transit": {"bytes": 7, "packets": 2, "flows": 1}"#),
            "{json}"
        );
    }

    #[test]
    fn auto_units_show_each_volume_in_its_own_unit() {
        assert_eq!(
            render(&report(), Format::Table, Units::Auto),
            "usage from 1970-01-01T00:00:00.000Z to 1970-01-01T00:00:01.000Z, prices in EUR, periods at UTC+00:00\n\
             \n\
             user             up      down     bytes  packets  flows   online  all, day EUR  total EUR\n\
             o\"brien, jr     0 B  1.500 GB  1.500 GB        3      1  1:30:00        1.4995     1.4995\n\
             eve\\n\\u{1b}[2J  0 B       1 B       1 B        3      1  1:30:00        0.0000     0.0000\n\
             (unattributed)  0 B       0 B       0 B        3      1  1:30:00        0.0000     0.0000\n\
             --------------  ---  --------  --------  -------  -----  -------  ------------  ---------\n\
             (total)         0 B  1.500 GB  1.500 GB        3      1  1:30:00        1.4995     1.4995\n\
             (transit)                           7 B        2      1\n"
        );
    }

    #[test]
    fn fixed_units_round_half_up_to_three_decimals() {
        assert_eq!(Units::Auto.volume(999), "999 B");
        assert_eq!(Units::Auto.volume(1_200_000), "1.200 MB");
        assert_eq!(Units::Auto.volume(1_234_567), "1.235 MB");
        assert_eq!(Units::Auto.volume(7_000_000_000_000), "7.000 TB");
        assert_eq!(Units::Kb.volume(1_499), "1.499");
        assert_eq!(Units::Kb.volume(1_500), "1.500");
        assert_eq!(Units::Mb.volume(1_200_000), "1.200");
        assert_eq!(Units::Mb.volume(500), "0.001");
        assert_eq!(Units::Mb.volume(499), "0.000");
        assert_eq!(Units::Gb.volume(1_499_500_000), "1.500");
        assert_eq!(Units::B.volume(1_234_567), "1234567");
    }

    #[test]
    fn the_table_aligns_numbers_right_in_human_units() {
        assert_eq!(
            render(&report(), Format::Table, Units::Gb),
            "usage from 1970-01-01T00:00:00.000Z to 1970-01-01T00:00:01.000Z, prices in EUR, periods at UTC+00:00\n\
             \n\
             user            up GB  down GB     GB  packets  flows   online  all, day EUR  total EUR\n\
             o\"brien, jr     0.000    1.500  1.500        3      1  1:30:00        1.4995     1.4995\n\
             eve\\n\\u{1b}[2J  0.000    0.000  0.000        3      1  1:30:00        0.0000     0.0000\n\
             (unattributed)  0.000    0.000  0.000        3      1  1:30:00        0.0000     0.0000\n\
             --------------  -----  -------  -----  -------  -----  -------  ------------  ---------\n\
             (total)         0.000    1.500  1.500        3      1  1:30:00        1.4995     1.4995\n\
             (transit)                       0.000        2      1\n"
        );
    }
}
