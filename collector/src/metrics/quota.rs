//! Metrics of quotas and their enforcement over RADIUS (RFC 5176).

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::quota::Crossing;

type Named = [(&'static str, String); 2];
type Fixed = [(&'static str, &'static str); 2];

#[derive(Clone, Debug, Default)]
pub struct QuotaMetrics {
    /// By quota and threshold (a `notify_at` fraction, or 1 for the quota).
    crossings: Family<Named, Counter>,
    /// Requests decided, by quota and action.
    actions: Family<Named, Counter>,
    /// Users over some quota in its current period, at the last flush.
    pub users_over: Gauge,
    /// Requests by kind and how they ended.
    requests: Family<Fixed, Counter>,
    pub retransmissions: Counter,
    /// Datagrams that did not answer a request, by reason.
    bad_responses: Family<[(&'static str, &'static str); 1], Counter>,
}

impl QuotaMetrics {
    pub fn crossed(&self, crossing: &Crossing) {
        self.crossings
            .get_or_create(&[
                ("quota", crossing.quota.clone()),
                ("threshold", crossing.threshold.to_string()),
            ])
            .inc();
    }

    pub fn decided(&self, quota: &str, action: &'static str) {
        self.actions
            .get_or_create(&[("quota", quota.to_owned()), ("action", action.to_owned())])
            .inc();
    }

    pub fn request(&self, kind: &'static str, result: &'static str) {
        self.requests
            .get_or_create(&[("kind", kind), ("result", result)])
            .inc();
    }

    pub fn bad_response(&self, reason: &'static str) {
        self.bad_responses
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "quota_crossings",
            "Quota thresholds crossed, once per user and period: notify_at fractions and the \
             quota itself (threshold 1)",
            self.crossings.clone(),
        );
        r.register(
            "quota_actions",
            "Disconnect- and CoA-Requests decided, one per session, quota and period, and restoring CoAs",
            self.actions.clone(),
        );
        r.register(
            "quota_users_over",
            "Users over some quota in its current period, at the last flush",
            self.users_over.clone(),
        );
        r.register(
            "coa_requests",
            "RFC 5176 requests by kind (disconnect, coa, restore: a CoA lifting one of an earlier period) and result: ack, nak, timeout, no_nas \
             (no radius.nas for the session's NAS), error (could not be sent)",
            self.requests.clone(),
        );
        r.register(
            "coa_retransmissions",
            "RFC 5176 requests sent again after a timeout",
            self.retransmissions.clone(),
        );
        r.register(
            "coa_bad_responses",
            "Datagrams received for RFC 5176 requests that answer none of them, by reason \
             (e.g. radius_bad_authenticator: another secret)",
            self.bad_responses.clone(),
        );
    }
}
