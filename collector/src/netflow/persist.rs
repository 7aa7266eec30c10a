//! Saving and restoring the template cache, so that data arriving right
//! after a restart parses at once instead of waiting up to a template
//! refresh interval. The form is line-based text, one domain's options
//! state or one template per line, described by the comments it starts with.
//! Pending data is not saved.

use std::{fmt::Write, net::IpAddr, str::FromStr};

use flowtally_common::template::TemplateKey;

use super::{
    options::{DomainKey, DomainState},
    sets::{self, FieldSpec, IPFIX, TemplateRecord, V9},
    template::{Limits, Rejection, Report, TemplateCache},
};
use crate::ip::{to_addr, to_ip};

const MAGIC: &str = "flowtally template cache 1";
const DESCRIPTION: &str = "\
# domain VERSION EXPORTER DOMAIN REFRESHED_MS SAMPLING|- SYSTEM_INIT_MS|- [SAMPLER_ID=SAMPLING ...]
# template VERSION EXPORTER DOMAIN TEMPLATE_ID REFRESHED_MS SCOPE_FIELDS|- IE:LENGTH[:ENTERPRISE] ...
";

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("not UTF-8 text")]
    NotText,
    #[error("the first line is not `{MAGIC}`")]
    BadHeader,
    #[error("line {line}: expected {expected}")]
    Syntax { line: usize, expected: &'static str },
    #[error("line {line}: template rejected: {reason}")]
    Rejected { line: usize, reason: Rejection },
    #[error("line {line}: more samplers than the limit")]
    TooManySamplers { line: usize },
}

impl TemplateCache {
    /// Every live template and domain's options state with its last
    /// refresh time.
    pub fn save(&self) -> Vec<u8> {
        let mut out = format!("{MAGIC}\n{DESCRIPTION}");
        for (scope, d) in &self.domains {
            let _ = write!(
                out,
                "domain {} {} {} {} {} {}",
                scope.version,
                to_addr(&scope.exporter),
                scope.domain,
                d.refreshed_ms,
                optional(d.sampling),
                optional(d.system_init_ms),
            );
            for (id, sampling) in &d.samplers {
                let _ = write!(out, " {id}={sampling}");
            }
            out.push('\n');
        }
        for (key, t) in &self.templates {
            let _ = write!(
                out,
                "template {} {} {} {} {} {}",
                key.version,
                to_addr(&key.exporter),
                key.domain,
                key.template_id,
                t.refreshed_ms,
                optional(t.def.scope_fields),
            );
            for f in &t.def.fields {
                let _ = write!(out, " {}:{}", f.ie, f.len);
                if let Some(pen) = f.enterprise {
                    let _ = write!(out, ":{pen}");
                }
            }
            out.push('\n');
        }
        out.into_bytes()
    }

    /// A cache holding what `save` wrote, under `limits`; what has expired
    /// by `now_ms` is left out. Anything that is not exactly that form, or
    /// that the limits would reject, is an error.
    pub fn restore(bytes: &[u8], limits: Limits, now_ms: u64) -> Result<Self, RestoreError> {
        let text = std::str::from_utf8(bytes).map_err(|_| RestoreError::NotText)?;
        let mut lines = text.lines().enumerate().map(|(i, line)| (i + 1, line));
        if lines.next().map(|(_, line)| line) != Some(MAGIC) {
            return Err(RestoreError::BadHeader);
        }
        let mut cache = Self::new(limits);
        // Templates compile against their domain's state: domains first.
        let mut templates = Vec::new();
        for (line, text) in lines {
            let mut words = Words {
                line,
                words: text.split_whitespace(),
            };
            match words.words.next() {
                None => {}
                Some(comment) if comment.starts_with('#') => {}
                Some("domain") => {
                    let (scope, state) = words.domain()?;
                    if state.samplers.len() > limits.max_samplers_per_domain {
                        return Err(RestoreError::TooManySamplers { line });
                    }
                    cache.domains.insert(scope, state);
                }
                Some("template") => templates.push(words),
                Some(_) => return Err(words.expected("`domain` or `template`")),
            }
        }
        for mut words in templates {
            let line = words.line;
            let (key, refreshed_ms, def) = words.template()?;
            cache
                .define(key, def, refreshed_ms, &mut Report::default())
                .map_err(|reason| RestoreError::Rejected { line, reason })?;
        }
        cache.expire(now_ms);
        // The kernel map is loaded from `compiled()`, not from changes.
        cache.take_changes();
        Ok(cache)
    }
}

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The words of one line after its tag.
struct Words<'a> {
    line: usize,
    words: std::str::SplitWhitespace<'a>,
}

impl Words<'_> {
    fn expected(&self, expected: &'static str) -> RestoreError {
        RestoreError::Syntax {
            line: self.line,
            expected,
        }
    }

    fn parse<T: FromStr>(&mut self, expected: &'static str) -> Result<T, RestoreError> {
        let word = self.words.next().ok_or(self.expected(expected))?;
        word.parse().map_err(|_| self.expected(expected))
    }

    fn optional<T: FromStr>(&mut self, expected: &'static str) -> Result<Option<T>, RestoreError> {
        match self.words.clone().next() {
            Some("-") => {
                self.words.next();
                Ok(None)
            }
            _ => self.parse(expected).map(Some),
        }
    }

    fn scope(&mut self) -> Result<DomainKey, RestoreError> {
        let version = self.parse("a version")?;
        if version != V9 && version != IPFIX {
            return Err(self.expected("version 9 or 10"));
        }
        let exporter: IpAddr = self.parse("an exporter address")?;
        Ok(DomainKey {
            exporter: to_ip(exporter),
            domain: self.parse("a domain id")?,
            version,
        })
    }

    fn domain(&mut self) -> Result<(DomainKey, DomainState), RestoreError> {
        let scope = self.scope()?;
        let mut state = DomainState {
            refreshed_ms: self.parse("a refresh time")?,
            sampling: self.optional("a sampling interval or -")?,
            system_init_ms: self.optional("a system init time or -")?,
            ..DomainState::default()
        };
        for word in self.words.clone() {
            let sampler = word
                .split_once('=')
                .and_then(|(id, n)| Some((id.parse().ok()?, n.parse().ok()?)));
            let (id, n) = sampler.ok_or(self.expected("SAMPLER_ID=SAMPLING"))?;
            state.samplers.insert(id, n);
        }
        Ok((scope, state))
    }

    fn template(&mut self) -> Result<(TemplateKey, u64, sets::Definition), RestoreError> {
        let scope = self.scope()?;
        let template_id = self.parse("a template id")?;
        let refreshed_ms = self.parse("a refresh time")?;
        let scope_fields = self.optional("a scope field count or -")?;
        let mut fields = Vec::new();
        for word in self.words.clone() {
            let mut parts = word.split(':');
            let mut number = || parts.next().and_then(|p| p.parse::<u32>().ok());
            let spec = match (number(), number(), number(), number()) {
                (Some(ie), Some(len), pen, None) => u16::try_from(ie)
                    .ok()
                    .zip(u16::try_from(len).ok())
                    .map(|(ie, len)| FieldSpec {
                        ie,
                        len,
                        enterprise: pen,
                    }),
                _ => None,
            };
            fields.push(spec.ok_or(self.expected("IE:LENGTH[:ENTERPRISE]"))?);
        }
        let key = TemplateKey {
            exporter: scope.exporter,
            domain: scope.domain,
            template_id,
            version: scope.version,
        };
        match sets::define(template_id, scope_fields, fields) {
            Ok(TemplateRecord::Define(_, def)) => Ok((key, refreshed_ms, def)),
            _ => Err(RestoreError::Rejected {
                line: self.line,
                reason: Rejection::Malformed,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use flowtally_common::template::ie;

    use super::*;
    use crate::netflow::{
        encode::{self, OptionsTemplate, Set, Template},
        sets::{Header, VARLEN},
    };

    const NOW: u64 = 1_700_000_000_000;

    fn exporter() -> flowtally_common::agg::Ip {
        to_ip("198.18.0.1".parse().unwrap())
    }

    /// A cache with a compiled IPFIX template whose uptime times count from
    /// the system init time, a variable-length one, and v9 sampler state.
    fn learned() -> TemplateCache {
        let mut cache = TemplateCache::new(Limits::default());
        let ipfix = Header {
            version: IPFIX,
            unix_secs: (NOW / 1000) as u32,
            domain: 3,
            ..Header::default()
        };
        let domain_wide = OptionsTemplate {
            id: 300,
            scope: vec![FieldSpec::iana(149, 4)],
            options: vec![
                FieldSpec::iana(ie::SAMPLING_INTERVAL, 4),
                FieldSpec::iana(ie::SYSTEM_INIT_TIME_MILLISECONDS, 8),
            ],
        };
        let per_sampler = OptionsTemplate {
            id: 301,
            scope: vec![FieldSpec::iana(ie::SELECTOR_ID, 4)],
            options: vec![FieldSpec::iana(ie::SAMPLING_INTERVAL, 4)],
        };
        let mut domain_record = vec![0, 0, 0, 3, 0, 0, 0, 10];
        domain_record.extend_from_slice(&(NOW - 60_000).to_be_bytes());
        let datagram = encode::export(
            &ipfix,
            &[
                Set::OptionsTemplates(vec![domain_wide, per_sampler]),
                Set::Data {
                    id: 300,
                    records: vec![domain_record],
                },
                Set::Data {
                    id: 301,
                    records: vec![vec![0, 0, 0, 7, 0, 0, 0, 100]],
                },
                Set::Templates(vec![
                    Template {
                        id: 256,
                        fields: [8, 12, 1, 21].map(|id| FieldSpec::iana(id, 4)).to_vec(),
                    },
                    Template {
                        id: 257,
                        fields: vec![FieldSpec::iana(8, 4), FieldSpec::enterprise(1, VARLEN, 9)],
                    },
                ]),
            ],
            true,
        );
        cache
            .decode(&exporter(), &datagram, NOW, 0, &mut Vec::new())
            .unwrap();
        cache
    }

    #[test]
    fn a_restored_cache_is_the_saved_one() {
        let cache = learned();
        assert_eq!(cache.compiled().count(), 1);
        let restored = TemplateCache::restore(&cache.save(), Limits::default(), NOW + 1).unwrap();
        assert_eq!(restored.domains, cache.domains);
        assert_eq!(
            restored.compiled().collect::<Vec<_>>(),
            cache.compiled().collect::<Vec<_>>()
        );
        let defs = |c: &TemplateCache| {
            c.templates
                .iter()
                .map(|(k, t)| (*k, t.def.clone(), t.refreshed_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(defs(&restored), defs(&cache));
        assert_eq!(restored.save(), cache.save());
    }

    #[test]
    fn what_expired_in_the_meantime_is_left_out() {
        let timeout = Limits::default().template_timeout_ms;
        let restored =
            TemplateCache::restore(&learned().save(), Limits::default(), NOW + timeout + 1)
                .unwrap();
        assert!(restored.templates.is_empty() && restored.domains.is_empty());
    }

    #[test]
    fn garbage_is_an_error() {
        let good = String::from_utf8(learned().save()).unwrap();
        let restore = |text: &str| TemplateCache::restore(text.as_bytes(), Limits::default(), NOW);
        assert_eq!(
            TemplateCache::restore(&[0xff, 0xfe], Limits::default(), NOW).unwrap_err(),
            RestoreError::NotText
        );
        assert_eq!(restore("").unwrap_err(), RestoreError::BadHeader);
        assert_eq!(restore("hello\n").unwrap_err(), RestoreError::BadHeader);
        let line = good.lines().count() + 1;
        let with = |extra: &str| restore(&format!("{good}{extra}\n")).unwrap_err();
        let syntax = |expected| RestoreError::Syntax { line, expected };
        assert_eq!(with("bogus"), syntax("`domain` or `template`"));
        assert_eq!(
            with("template 5 1.2.3.4 0 256 0 - 8:4"),
            syntax("version 9 or 10")
        );
        assert_eq!(
            with("template 9 nowhere 0 256 0 - 8:4"),
            syntax("an exporter address")
        );
        assert_eq!(
            with("template 9 1.2.3.4 0 256 0 - 8:x"),
            syntax("IE:LENGTH[:ENTERPRISE]")
        );
        assert_eq!(
            with("template 9 1.2.3.4 0 256 0 - 8:4:1:1"),
            syntax("IE:LENGTH[:ENTERPRISE]")
        );
        assert_eq!(
            with("template 9 1.2.3.4 0 70000 0 - 8:4"),
            syntax("a template id")
        );
        assert_eq!(
            with("domain 9 1.2.3.4 0 0 - - 1=x"),
            syntax("SAMPLER_ID=SAMPLING")
        );
        let malformed = RestoreError::Rejected {
            line,
            reason: Rejection::Malformed,
        };
        assert_eq!(with("template 9 1.2.3.4 0 255 0 - 8:4"), malformed);
        assert_eq!(with("template 9 1.2.3.4 0 256 0 -"), malformed);
        assert_eq!(
            with("template 9 1.2.3.4 0 256 0 2 8:4"),
            malformed,
            "scope past the fields"
        );
    }

    #[test]
    fn the_limits_apply_as_when_decoding() {
        let saved = learned().save();
        let tight = Limits {
            max_fields_per_template: 3,
            ..Limits::default()
        };
        assert!(matches!(
            TemplateCache::restore(&saved, tight, NOW),
            Err(RestoreError::Rejected {
                reason: Rejection::TooManyFields,
                ..
            })
        ));
        let few = Limits {
            max_templates_per_exporter: 3,
            ..Limits::default()
        };
        assert!(matches!(
            TemplateCache::restore(&saved, few, NOW),
            Err(RestoreError::Rejected {
                reason: Rejection::TooManyTemplates,
                ..
            })
        ));
        let no_samplers = Limits {
            max_samplers_per_domain: 0,
            ..Limits::default()
        };
        assert!(matches!(
            TemplateCache::restore(&saved, no_samplers, NOW),
            Err(RestoreError::TooManySamplers { .. })
        ));
    }
}
