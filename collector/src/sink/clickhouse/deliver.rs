//! The delivery task: reads undelivered rows from the SQLite spool, inserts
//! them into ClickHouse in batches and records how far it got; on failure
//! it backs off and retries, checking what a failed batch left behind.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clickhouse::{Client, RowOwned, RowWrite};
use tokio::{
    sync::{Notify, watch},
    task::{JoinHandle, block_in_place},
    time::timeout,
};

use super::{
    ClickHouseMetrics,
    rows::UsageRecord,
    schema,
    spool::{Source, Spool},
};

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// For sending one batch and for ClickHouse to commit it.
const INSERT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Deliverer {
    pub client: Client,
    pub database: String,
    /// Behind a lock only so that the task is `Send`; nothing else uses it.
    pub spool: Mutex<Spool>,
    /// Taken for each write to the spool's database (`sink::Gate`).
    pub gate: crate::sink::WriteGate,
    pub batch_rows: usize,
    pub spool_max_rows: u64,
    /// Whether this instance delivers `sessions` and `session_addresses`.
    pub sessions: bool,
    pub metrics: ClickHouseMetrics,
    /// How often the spool is looked at without being woken.
    pub poll: Duration,
    pub shutdown_timeout: Duration,
}

/// The running task: wake it when rows were written, stop it at shutdown.
pub struct Stop {
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
    shutdown_timeout: Duration,
}

impl Stop {
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Delivers what is spooled, for at most `shutdown_timeout`; the rest
    /// stays in SQLite for the next start.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        self.wake.notify_one();
        // The task keeps its own deadline; this one covers a request that
        // ignores its timeout.
        if timeout(self.shutdown_timeout * 2, self.task).await.is_err() {
            tracing::error!("ClickHouse delivery did not stop in time; the rest stays spooled");
        }
    }
}

impl Deliverer {
    pub fn spawn(self) -> Stop {
        let (stop, stopped) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let shutdown_timeout = self.shutdown_timeout;
        let task = tokio::spawn(self.run(stopped, Arc::clone(&wake)));
        Stop {
            stop,
            wake,
            task,
            shutdown_timeout,
        }
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>, wake: Arc<Notify>) {
        // After a start or a failure the last batch may have landed anyway
        // (and it may have been larger than ours, with other settings).
        let mut recheck = true;
        let mut schema_ready = false;
        let mut failing = false;
        let mut backoff = MIN_BACKOFF;
        let mut deadline = None;
        loop {
            if *stopped.borrow() && deadline.is_none() {
                deadline = Some(Instant::now() + self.shutdown_timeout);
            }
            let result = async {
                if !schema_ready {
                    // The spool's figures and bound hold while the tables
                    // cannot be made (ClickHouse unreachable since start).
                    for source in self.sources() {
                        block_in_place(|| self.enforce_limit(source))?;
                    }
                    schema::create(&self.client, &self.database)
                        .await
                        .context("creating the tables")?;
                    schema_ready = true;
                }
                self.deliver_some(&mut recheck).await
            }
            .await;
            let idle = match result {
                Ok(moved) => {
                    self.metrics.up.set(1);
                    if failing {
                        tracing::info!("ClickHouse answers again: delivering the spool");
                        failing = false;
                    }
                    backoff = MIN_BACKOFF;
                    moved == 0
                }
                Err(err) => {
                    self.metrics.errors.inc();
                    self.metrics.up.set(0);
                    if !failing {
                        tracing::warn!(
                            "ClickHouse: {err:#}{}; rows stay spooled in SQLite until it answers",
                            super::connect::tls_hint(&err)
                        );
                        failing = true;
                    }
                    recheck = true;
                    true
                }
            };
            if let Some(deadline) = deadline {
                if idle && !failing {
                    return;
                }
                if Instant::now() >= deadline {
                    tracing::error!(
                        "ClickHouse delivery stopped at shutdown with rows still spooled; \
                         they are delivered after the next start"
                    );
                    return;
                }
            }
            if idle {
                let pause = if failing { backoff } else { self.poll };
                // A backoff never outlasts the shutdown deadline.
                let pause = deadline.map_or(pause, |deadline| {
                    pause.min(deadline.saturating_duration_since(Instant::now()))
                });
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = wake.notified(), if !failing => {}
                    _ = stopped.changed(), if deadline.is_none() => {}
                }
                if failing {
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One batch of each source; how many rows it moved past. While
    /// `recheck`, usage batches are checked against what ClickHouse has; it
    /// ends with the first batch of which ClickHouse had nothing, since
    /// batches are sent in order.
    async fn deliver_some(&mut self, recheck: &mut bool) -> anyhow::Result<u64> {
        let mut moved = 0;
        for source in self.sources() {
            moved += self.deliver_batch(source, recheck).await?;
        }
        Ok(moved)
    }

    /// What this instance delivers: usage, and sessions unless another
    /// instance does.
    fn sources(&self) -> impl Iterator<Item = Source> + use<> {
        let sessions = self.sessions;
        Source::ALL
            .into_iter()
            .filter(move |&source| source == Source::Usage || sessions)
    }

    async fn deliver_batch(&mut self, source: Source, recheck: &mut bool) -> anyhow::Result<u64> {
        let (delivered, newest) = block_in_place(|| self.enforce_limit(source))?;
        let table = source.table();
        let (upto, sent) = match source {
            Source::Usage => {
                let mut rows = block_in_place(|| self.spool().usage(delivered, self.batch_rows))?;
                let Some(upto) = rows.last().map(|row| row.local_id) else {
                    return Ok(0);
                };
                let batch = rows.len();
                if *recheck {
                    let present = self.present(&rows).await?;
                    rows.retain(|row| !present.contains(&row.local_id));
                    self.metrics
                        .already_present_rows
                        .inc_by((batch - rows.len()) as u64);
                    *recheck = !present.is_empty();
                }
                self.insert(table, &rows).await?;
                (upto, rows.len())
            }
            Source::Sessions => {
                let rows = block_in_place(|| self.spool().sessions(delivered, self.batch_rows))?;
                match self.insert_states(table, rows).await? {
                    Some(done) => done,
                    None => return Ok(0),
                }
            }
            Source::SessionAddresses => {
                let rows = block_in_place(|| self.spool().addresses(delivered, self.batch_rows))?;
                match self.insert_states(table, rows).await? {
                    Some(done) => done,
                    None => return Ok(0),
                }
            }
        };
        block_in_place(|| {
            let spool = self.spool();
            let _turn = self.gate.lock();
            spool.set_delivered(source, upto)
        })?;
        self.metrics
            .delivered_rows
            .get_or_create(&[("table", table)])
            .inc_by(sent as u64);
        // Rows written since `newest` was read show at the next batch.
        self.metrics
            .spool_rows
            .get_or_create(&[("table", table)])
            .set((newest - upto).max(0));
        Ok(upto.abs_diff(delivered))
    }

    fn spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().expect("spool lock poisoned")
    }

    /// Where delivery of `source` stands, after giving up the oldest rows
    /// if more than `spool_max_rows` wait, and its newest number.
    fn enforce_limit(&self, source: Source) -> anyhow::Result<(i64, i64)> {
        let spool = self.spool();
        let delivered = spool.delivered(source)?;
        let newest = spool.newest(source)?;
        let table = source.table();
        self.metrics
            .spool_rows
            .get_or_create(&[("table", table)])
            .set(newest - delivered);
        let limit = i64::try_from(self.spool_max_rows).unwrap_or(i64::MAX);
        if newest - delivered <= limit {
            return Ok((delivered, newest));
        }
        let upto = newest - limit;
        let given_up = spool.count(source, delivered, upto)?;
        let _turn = self.gate.lock();
        spool.set_delivered(source, upto)?;
        drop(_turn);
        self.metrics
            .discarded_rows
            .get_or_create(&[("table", table)])
            .inc_by(given_up);
        tracing::error!(
            "ClickHouse spool over clickhouse.spool_max_rows ({limit}): {given_up} {table} rows \
             (SQLite {table} numbers {}..={upto}) will not be delivered; they remain in SQLite",
            delivered + 1
        );
        Ok((upto, newest))
    }

    /// Inserts session or address states, numbered by their change; `None`
    /// when there are none, else the last number and how many were sent.
    /// States need no check before a resend: a copy folds into its original.
    async fn insert_states<T>(
        &self,
        table: &str,
        rows: Vec<(i64, T)>,
    ) -> anyhow::Result<Option<(i64, usize)>>
    where
        T: RowOwned + RowWrite,
    {
        let Some(&(upto, _)) = rows.last() else {
            return Ok(None);
        };
        let rows: Vec<T> = rows.into_iter().map(|(_, row)| row).collect();
        self.insert(table, &rows).await?;
        Ok(Some((upto, rows.len())))
    }

    /// The `local_id`s of `rows` that ClickHouse already has.
    async fn present(&self, rows: &[UsageRecord]) -> anyhow::Result<HashSet<i64>> {
        let writer = self.spool().writer.clone();
        let ids = rows.iter().map(|row| row.local_id);
        let buckets = rows.iter().map(|row| row.bucket_start_ms);
        // The bucket range lets ClickHouse skip other months' partitions.
        let present = self
            .client
            .query(
                "SELECT local_id FROM usage WHERE writer = ? AND local_id BETWEEN ? AND ?
                 AND bucket_start_ms BETWEEN ? AND ?",
            )
            .bind(writer)
            .bind(ids.clone().min().unwrap_or(0))
            .bind(ids.max().unwrap_or(0))
            .bind(buckets.clone().min().unwrap_or(0))
            .bind(buckets.max().unwrap_or(0))
            .fetch_all::<i64>()
            .await
            .context("checking which rows of a retried batch arrived")?;
        Ok(present.into_iter().collect())
    }

    async fn insert<T>(&self, table: &str, rows: &[T]) -> anyhow::Result<()>
    where
        T: RowOwned + RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .client
            .insert::<T>(table)
            .await?
            .with_timeouts(Some(INSERT_TIMEOUT), Some(INSERT_TIMEOUT));
        for row in rows {
            insert.write(row).await?;
        }
        insert
            .end()
            .await
            .with_context(|| format!("inserting {} rows into {table}", rows.len()))
    }
}
