//! Tariff files: a price per GB and per hour online for each period of the
//! week, and what usage costs under them.
//!
//! ```toml
//! currency = "EUR"
//! timezone = "+01:00"      # top-level, so above the first [[period]]
//!
//! [[period]]
//! name = "peak"
//! days = ["mon", "tue", "wed", "thu", "fri"]
//! from = "08:00"
//! to = "20:00"
//! price_per_gb = 0.50
//! price_per_hour = 0.10
//!
//! [[period]]
//! name = "off-peak"        # no days, from or to: the rest of the week
//! price_per_gb = 0.20
//! price_per_hour = 0.0
//!
//! [classes.local]          # destination classes priced apart
//! price_per_gb = 0         # in every period
//!
//! [classes.ix]
//! price_per_gb = { peak = 0.10 }   # per period; the others keep theirs
//! ```
//!
//! A class's price replaces the period's price per GB for the bytes of
//! that class (`usage.class`); time online is priced by period only.

use std::{collections::BTreeMap, fmt, iter::Sum, ops::Add};

use serde::{Deserialize, de::IgnoredAny};

use super::periods::{Clock, Day, Offset, Rule, Week, WeekError};

/// What the file says, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    currency: String,
    #[serde(default)]
    timezone: Offset,
    period: Vec<PeriodFile>,
    #[serde(default)]
    classes: BTreeMap<String, ClassFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassFile {
    price_per_gb: ClassPrice,
}

/// One price for every period, or prices by period name.
#[derive(Deserialize)]
#[serde(untagged)]
enum ClassPrice {
    All(Price),
    ByPeriod(BTreeMap<String, Price>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodFile {
    name: String,
    days: Option<Vec<Day>>,
    from: Option<Clock>,
    to: Option<Clock>,
    price_per_gb: Price,
    price_per_hour: Price,
    /// Accepted only to say where it belongs: written after a `[[period]]`
    /// header, TOML puts a top-level key into that period.
    timezone: Option<IgnoredAny>,
}

/// A price in millionths of the currency unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "f64")]
pub struct Price(pub u64);

/// Keeps cost arithmetic within `u128` for any byte count SQLite can hold.
const MAX_PRICE: f64 = 1e9;

impl TryFrom<f64> for Price {
    type Error = String;

    fn try_from(price: f64) -> Result<Self, String> {
        let micros = price * 1e6;
        // Beyond 6 decimals the price would be silently rounded; the slack
        // only absorbs binary floating point (0.1 is not exact).
        if (0.0..=MAX_PRICE).contains(&price) && (micros - micros.round()).abs() < 1e-3 {
            Ok(Self(micros.round() as u64))
        } else {
            Err(format!(
                "{price} is not a price from 0 to {MAX_PRICE} with at most 6 decimals"
            ))
        }
    }
}

/// An amount in ten-thousandths of the currency unit: the precision of
/// every cost a report prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cost(pub u128);

impl Add for Cost {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self(self.0 + other.0)
    }
}

impl Sum for Cost {
    fn sum<I: Iterator<Item = Self>>(costs: I) -> Self {
        costs.fold(Self::default(), Add::add)
    }
}

impl fmt::Display for Cost {
    /// `12.3400`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:04}", self.0 / 10_000, self.0 % 10_000)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    pub name: String,
    /// Per 10^9 bytes, up and down alike.
    pub price_per_gb: Price,
    pub price_per_hour: Price,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tariff {
    pub currency: String,
    /// Of the periods' clock times.
    pub timezone: Offset,
    pub periods: Vec<Period>,
    pub week: Week,
    /// Destination classes priced apart: each with its price per GB in
    /// each period (in the periods' order).
    pub classes: Vec<(String, Vec<Price>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TariffError {
    #[error("{0}")]
    Toml(Box<toml::de::Error>),
    #[error("`currency` must not be empty")]
    NoCurrency,
    #[error("`period` is empty: a tariff needs at least one period")]
    NoPeriods,
    #[error("period {0}: `name` must not be empty")]
    NoName(usize),
    #[error("period {0:?} is defined twice")]
    DuplicateName(String),
    #[error("class {class:?}: no period {period:?} to price")]
    UnknownPeriod { class: String, period: String },
    #[error("period {period:?}: `{key}` {message}")]
    Invalid {
        period: String,
        key: &'static str,
        message: &'static str,
    },
    #[error(transparent)]
    Week(#[from] WeekError),
}

impl Tariff {
    pub fn parse(text: &str) -> Result<Self, TariffError> {
        let file: File = toml::from_str(text).map_err(|e| TariffError::Toml(Box::new(e)))?;
        if file.currency.trim().is_empty() {
            return Err(TariffError::NoCurrency);
        }
        if file.period.is_empty() {
            return Err(TariffError::NoPeriods);
        }
        let mut rules = Vec::with_capacity(file.period.len());
        for (index, p) in file.period.iter().enumerate() {
            if p.name.is_empty() {
                return Err(TariffError::NoName(index + 1));
            }
            if file.period[..index].iter().any(|q| q.name == p.name) {
                return Err(TariffError::DuplicateName(p.name.clone()));
            }
            rules.push(p.rule()?);
        }
        let layout: Vec<(&str, Option<&Rule>)> = file
            .period
            .iter()
            .zip(&rules)
            .map(|(p, rule)| (p.name.as_str(), rule.as_ref()))
            .collect();
        let week = Week::new(&layout, file.timezone)?;
        let mut classes = Vec::with_capacity(file.classes.len());
        for (class, prices) in file.classes {
            let mut by_period: Vec<Price> = file.period.iter().map(|p| p.price_per_gb).collect();
            match prices.price_per_gb {
                ClassPrice::All(price) => by_period.fill(price),
                ClassPrice::ByPeriod(prices) => {
                    for (period, price) in prices {
                        let index = file.period.iter().position(|p| p.name == period).ok_or(
                            TariffError::UnknownPeriod {
                                class: class.clone(),
                                period,
                            },
                        )?;
                        by_period[index] = price;
                    }
                }
            }
            classes.push((class, by_period));
        }
        Ok(Self {
            classes,
            currency: file.currency,
            timezone: file.timezone,
            periods: file
                .period
                .into_iter()
                .map(|p| Period {
                    name: p.name,
                    price_per_gb: p.price_per_gb,
                    price_per_hour: p.price_per_hour,
                })
                .collect(),
            week,
        })
    }

    /// What `bytes` and `online_ms` in `period` cost, rounded half up to a
    /// [`Cost`] unit. Computed exactly from integers: 1 Cost unit is 100
    /// millionths, so cost = (bytes × µprice/GB ÷ 10^9 + ms × µprice/h ÷
    /// 3.6·10^6) ÷ 100, put over the common denominator 9·10^11.
    pub fn cost(&self, period: usize, bytes: u64, online_ms: u64) -> Cost {
        self.cost_by_class(period, &[bytes], online_ms)
    }

    /// Where a class's bytes are priced: 0 for the period's own price (no
    /// class, or one the tariff does not name), `i` for `classes[i - 1]`.
    pub fn price_slot(&self, class: Option<&str>) -> usize {
        class
            .and_then(|class| self.classes.iter().position(|(name, _)| name == class))
            .map_or(0, |index| index + 1)
    }

    /// [`Tariff::cost`] of bytes by [`Tariff::price_slot`] (`bytes[slot]`),
    /// still rounded once.
    pub fn cost_by_class(&self, period: usize, bytes: &[u64], online_ms: u64) -> Cost {
        const DENOMINATOR: u128 = 900_000_000_000;
        let p = &self.periods[period];
        let price = |slot: usize| match slot {
            0 => p.price_per_gb,
            slot => self.classes[slot - 1].1[period],
        };
        let volume: u128 = bytes
            .iter()
            .enumerate()
            .map(|(slot, &bytes)| u128::from(bytes) * u128::from(price(slot).0) * 9)
            .sum();
        let numerator = volume + u128::from(online_ms) * u128::from(p.price_per_hour.0) * 2_500;
        Cost((numerator + DENOMINATOR / 2) / DENOMINATOR)
    }
}

impl PeriodFile {
    /// When the period applies; `None` for the default period.
    fn rule(&self) -> Result<Option<Rule>, TariffError> {
        let invalid = |key, message| TariffError::Invalid {
            period: self.name.clone(),
            key,
            message,
        };
        if self.timezone.is_some() {
            return Err(invalid(
                "timezone",
                "is a top-level key: put it above the first [[period]]",
            ));
        }
        let (from, to) = match (self.from, self.to) {
            (None, None) if self.days.is_none() => return Ok(None),
            (None, None) => (Clock::MIDNIGHT, Clock::END_OF_DAY),
            (Some(_), None) => return Err(invalid("to", "is missing: `from` needs it")),
            (None, Some(_)) => return Err(invalid("from", "is missing: `to` needs it")),
            (Some(from), Some(to)) => (from, to),
        };
        if from == Clock::END_OF_DAY {
            return Err(invalid(
                "from",
                "cannot be 24:00: write 00:00 of the next day",
            ));
        }
        let days = match &self.days {
            None => vec![
                Day::Mon,
                Day::Tue,
                Day::Wed,
                Day::Thu,
                Day::Fri,
                Day::Sat,
                Day::Sun,
            ],
            Some(days) if days.is_empty() => {
                return Err(invalid("days", "is empty: leave it out for every day"));
            }
            Some(days) => days.clone(),
        };
        Ok(Some(Rule { days, from, to }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Timestamp;

    const EXAMPLE: &str = r#"
        currency = "EUR"
        timezone = "+01:00"

        [[period]]
        name = "peak"
        days = ["mon", "tue", "wed", "thu", "fri"]
        from = "08:00"
        to = "20:00"
        price_per_gb = 0.50
        price_per_hour = 0.10

        [[period]]
        name = "off-peak"
        price_per_gb = 0.20
        price_per_hour = 0
    "#;

    fn error(text: &str) -> String {
        Tariff::parse(text).unwrap_err().to_string()
    }

    /// `EXAMPLE` with `line` replaced.
    fn example_with(line: &str, replacement: &str) -> String {
        assert!(EXAMPLE.contains(line), "{line}");
        EXAMPLE.replacen(line, replacement, 1)
    }

    #[test]
    fn the_documented_example_parses() {
        let tariff = Tariff::parse(EXAMPLE).unwrap();
        assert_eq!(tariff.currency, "EUR");
        assert_eq!(tariff.timezone, Offset(60));
        assert_eq!(
            tariff.periods,
            [
                Period {
                    name: "peak".into(),
                    price_per_gb: Price(500_000),
                    price_per_hour: Price(100_000),
                },
                Period {
                    name: "off-peak".into(),
                    price_per_gb: Price(200_000),
                    price_per_hour: Price(0),
                },
            ]
        );
        // Monday 07:30Z is 08:30 at +01:00.
        let monday = "2026-11-23T07:30:00Z".parse::<Timestamp>().unwrap().0;
        assert_eq!(
            tariff.week.split(monday, monday + 1).collect::<Vec<_>>(),
            [(0, 1)]
        );
    }

    #[test]
    fn costs_are_exact_and_rounded_half_up_to_four_decimals() {
        let tariff = Tariff::parse(EXAMPLE).unwrap();
        let hour = 3_600_000;
        assert_eq!(tariff.cost(0, 1_000_000_000, 0).to_string(), "0.5000");
        assert_eq!(tariff.cost(0, 0, hour).to_string(), "0.1000");
        assert_eq!(
            tariff.cost(0, 3_000_000_000, 90 * 60_000).to_string(),
            "1.6500"
        );
        assert_eq!(
            tariff.cost(1, 3_000_000_000, 10 * hour).to_string(),
            "0.6000"
        );
        // 0.5 per GB is 0.0001 per 200 kB: 100 kB is half a unit.
        assert_eq!(tariff.cost(0, 99_999, 0), Cost(0));
        assert_eq!(tariff.cost(0, 100_000, 0), Cost(1));
        // 0.1 per hour is 0.0001 per 3.6 s.
        assert_eq!(tariff.cost(0, 0, 1_799), Cost(0));
        assert_eq!(tariff.cost(0, 0, 1_800), Cost(1));
        assert_eq!(
            tariff.cost(0, i64::MAX as u64, 0).to_string(),
            "4611686018.4274"
        );
    }

    #[test]
    fn prices_keep_six_decimals_exactly() {
        let text = example_with("price_per_gb = 0.50", "price_per_gb = 0.123456");
        assert_eq!(
            Tariff::parse(&text).unwrap().periods[0].price_per_gb,
            Price(123_456)
        );
        for bad in ["0.1234567", "-1", "nan", "2e9"] {
            let err = error(&example_with(
                "price_per_gb = 0.50",
                &format!("price_per_gb = {bad}"),
            ));
            assert!(err.contains("price_per_gb"), "{err}");
            assert!(err.contains("at most 6 decimals"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = error(&example_with("price_per_gb = 0.50", "price_per_gig = 0.50"));
        assert!(err.contains("unknown field `price_per_gig`"), "{err}");
        let err = error(&example_with(
            "currency = \"EUR\"",
            "currency = \"EUR\"\nvat = 0.2",
        ));
        assert!(err.contains("unknown field `vat`"), "{err}");
    }

    #[test]
    fn missing_prices_are_named() {
        let err = error(&example_with("price_per_hour = 0.10", ""));
        assert!(err.contains("missing field `price_per_hour`"), "{err}");
    }

    #[test]
    fn a_timezone_below_a_period_header_is_explained() {
        let text = EXAMPLE.replace("timezone = \"+01:00\"", "") + "timezone = \"+01:00\"\n";
        assert_eq!(
            error(&text),
            "period \"off-peak\": `timezone` is a top-level key: put it above the first [[period]]"
        );
    }

    #[test]
    fn bad_days_times_and_zones_are_named() {
        let cases = [
            (("\"fri\"]", "\"friday\"]"), "unknown variant `friday`"),
            (
                ("from = \"08:00\"", "from = \"8:00\""),
                "\"8:00\" is not a clock time",
            ),
            (("to = \"20:00\"", ""), "period \"peak\": `to` is missing"),
            (
                ("from = \"08:00\"", "from = \"24:00\""),
                "`from` cannot be 24:00",
            ),
            (
                (
                    "days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
                    "days = []",
                ),
                "`days` is empty",
            ),
            (("\"+01:00\"", "\"CET\""), "\"CET\" is not a UTC offset"),
            (
                ("name = \"off-peak\"", "name = \"peak\""),
                "period \"peak\" is defined twice",
            ),
            (
                ("name = \"off-peak\"", "name = \"\""),
                "period 2: `name` must not be empty",
            ),
            (
                ("currency = \"EUR\"", "currency = \"\""),
                "`currency` must not be empty",
            ),
        ];
        for ((line, replacement), expected) in cases {
            let err = error(&example_with(line, replacement));
            assert!(err.contains(expected), "{line} → {replacement}: {err}");
        }
        assert!(error("currency = \"EUR\"\nperiod = []").contains("at least one period"));
        assert!(error("currency = \"EUR\"").contains("missing field `period`"));
    }

    #[test]
    fn without_a_default_every_moment_must_be_covered() {
        let text = example_with(
            "name = \"off-peak\"",
            "name = \"off-peak\"\ndays = [\"sat\", \"sun\"]",
        );
        let err = error(&text);
        assert!(
            err.starts_with("no period covers mon 00:00–08:00, mon 20:00–tue 08:00"),
            "{err}"
        );
    }

    #[test]
    fn classes_take_one_price_or_prices_by_period() {
        let text = format!(
            "{EXAMPLE}\n[classes.local]\nprice_per_gb = 0\n[classes.ix]\nprice_per_gb = {{ \"off-peak\" = 0.05 }}\n"
        );
        let tariff = Tariff::parse(&text).unwrap();
        assert_eq!(
            tariff.classes,
            [
                ("ix".to_owned(), vec![Price(500_000), Price(50_000)]),
                ("local".to_owned(), vec![Price(0), Price(0)]),
            ]
        );
        assert_eq!(tariff.price_slot(Some("local")), 2);
        assert_eq!(tariff.price_slot(Some("ix")), 1);
        assert_eq!(tariff.price_slot(Some("elsewhere")), 0);
        assert_eq!(tariff.price_slot(None), 0);
        // 2 GB at the period's 0.20, 1 GB ix at 0.05, 5 GB local free.
        let cost = tariff.cost_by_class(1, &[2_000_000_000, 1_000_000_000, 5_000_000_000], 0);
        assert_eq!(cost.to_string(), "0.4500");
        let bad = format!("{EXAMPLE}\n[classes.ix]\nprice_per_gb = {{ night = 0.05 }}\n");
        assert_eq!(error(&bad), "class \"ix\": no period \"night\" to price");
        let bad = format!("{EXAMPLE}\n[classes.ix]\nprice_per_gb = 0\nprice = 1\n");
        assert!(
            error(&bad).contains("unknown field `price`"),
            "{}",
            error(&bad)
        );
    }

    #[test]
    fn a_period_with_only_days_covers_them_whole() {
        let text = r#"
            currency = "EUR"
            [[period]]
            name = "weekdays"
            days = ["mon", "tue", "wed", "thu", "fri"]
            price_per_gb = 0.5
            price_per_hour = 0
            [[period]]
            name = "weekend"
            days = ["sat", "sun"]
            price_per_gb = 0.1
            price_per_hour = 0
        "#;
        let tariff = Tariff::parse(text).unwrap();
        let friday_end = "2026-11-28T00:00:00Z".parse::<Timestamp>().unwrap().0;
        assert_eq!(
            tariff
                .week
                .split(friday_end - 1, friday_end + 1)
                .collect::<Vec<_>>(),
            [(0, 1), (1, 1)]
        );
    }
}
