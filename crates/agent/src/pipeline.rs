//! The pipeline worker: moves each job in the outbox through the life of a
//! sale (design.md): `queued -create-> created -submit-> submitted -pdf->
//! pdf_saved -> done`, committing each step's result with the job's new
//! stage, so that a kill at any instant leaves every job at a step that is
//! safe to do again:
//!
//! - **create** is made safe by the backend's unique `invoice_number`: a 422
//!   "already been taken" after an attempt whose answer was lost means that
//!   attempt got through. The invoice is then found by a configured lookup
//!   path or by reading the ids after the highest one the agent had seen
//!   before its first attempt, and adopted only if this agent had sent a
//!   create that may have reached the backend *and* the invoice is this
//!   sale line by line (description, quantity, unit price) and customer.
//!   Otherwise the number belongs to another sale (another till, the old
//!   connector) and the job is parked with the found id.
//! - **submit** reaches JoFotara at most once. The backend has no guard
//!   against resubmitting and finishes a submit after its client has gone,
//!   so a status read right after a lost answer can say `draft` while the
//!   first submit is still running. Each attempt's start is written to the
//!   outbox before it is sent (`store::submits`); after a lost answer the
//!   job waits until `pipeline.submit_settle_seconds` have passed since
//!   that start (across restarts), then reads the status, and only a
//!   status still `draft` allows another submit. Submits answering `error`
//!   (or 5xx) `pipeline.max_submit_errors` times in a row park the job:
//!   the backend's JoFotara integration is then probably broken.
//! - **pdf** downloads to a temporary name and renames when complete, under
//!   a name no other invoice can have (its number and its backend id).
//!
//! Failures are sorted: the backend as a whole is unavailable (a 429, a
//! sign-in failing, or a failed call *and* a failed probe): every worker
//! waits behind one global backoff instead of each hammering it, and a
//! single probe decides when work resumes; this job failed (its call failed
//! while the probe answers: a poisoned sale, a slow JoFotara): it gets its
//! own backoff, forever, capped, and the others go on; a person must act
//! (JoFotara rejected it, the vendor is disabled, the data is invalid): the
//! job is parked with the reason. A sign-in that needs a person holds all
//! work without charging the jobs.
//!
//! Order: due jobs are taken oldest first, except that with two slots or
//! more one slot always takes the newest due job. After a day offline the
//! backlog drains oldest first while a sale rung up now is done in seconds
//! (it would otherwise wait behind thousands).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::{self, JoinSet};
use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};
use crate::clock::Clock;
use crate::config::Config;
use crate::intake::sale::Sale;
use crate::laravel::model::sale_difference;
use crate::laravel::{ApiError, CreateOutcome, DocumentKind, InvoiceStatus, LaravelClient};
use crate::retry::RetryPolicy;
use crate::store::{Job, OutboxHandle, Stage, StepResult, StoreError};
use crate::token::TokenError;

/// Attempts at one read of a lost-create scan before the scan gives up
/// (and the job is retried later like any other).
const SCAN_READ_ATTEMPTS: usize = 5;

/// A probe's answer is reused this long by jobs failing at the same time,
/// so a burst of failures costs one probe, not one each.
const PROBE_FRESH: Duration = Duration::from_secs(2);

/// How the worker behaves; from config.json's `pipeline.*` and neighbours.
#[derive(Debug, Clone)]
pub(crate) struct PipelineSettings {
    /// Jobs worked on at once (`pipeline.concurrency`).
    pub(crate) concurrency: usize,
    /// Submit to JoFotara after create (`auto_submit_jofotara`); else a
    /// job stops at `created`.
    pub(crate) auto_submit: bool,
    pub(crate) pdf_dir: PathBuf,
    /// A backend route answering an invoice by number, `{invoice_number}`
    /// standing for it (`pipeline.lookup_path`); replaces the id scan.
    pub(crate) lookup_path: Option<String>,
    /// At most this many ids are read when looking for a lost create.
    pub(crate) scan_limit: u32,
    /// An unknown id followed by this many more unknown ones is the end of
    /// the ids (fewer could be a gap left by a deleted invoice).
    pub(crate) scan_confirm: u32,
    /// Job and global backoff: exponential with jitter (never sooner than
    /// the schedule), from `first` up to `max`
    /// (`pipeline.max_backoff_seconds`), forever.
    pub(crate) backoff: Backoff,
    /// Without news, the outbox is re-read this often (for jobs released
    /// by `queue retry` from another process).
    pub(crate) idle_poll: Duration,
    /// On shutdown, in-flight steps get this long to finish; then they are
    /// abandoned (safe: the outbox still holds them at their last step).
    pub(crate) shutdown_grace: Duration,
    /// The vendor this agent signs in as; an invoice found by the scan that
    /// belongs to another vendor is not ours.
    pub(crate) vendor_id: Option<u64>,
    /// After a submit whose answer was lost, how long from its start the
    /// backend may still be working on it (`pipeline.submit_settle_seconds`).
    pub(crate) submit_settle: Duration,
    /// Submits answering `error` (or 5xx) in a row before the job is parked
    /// (`pipeline.max_submit_errors`).
    pub(crate) max_submit_errors: u32,
}

impl PipelineSettings {
    pub(crate) fn from_config(cfg: &Config) -> PipelineSettings {
        PipelineSettings {
            concurrency: cfg.pipeline.concurrency,
            auto_submit: cfg.auto_submit_jofotara,
            pdf_dir: cfg.pdf_dir.clone(),
            lookup_path: cfg.pipeline.lookup_path.clone(),
            scan_limit: cfg.pipeline.scan_limit,
            scan_confirm: 5,
            backoff: Backoff::new(
                Duration::from_secs(2).min(cfg.pipeline.max_backoff),
                cfg.pipeline.max_backoff,
                Jitter::Up,
            ),
            idle_poll: Duration::from_secs(30),
            shutdown_grace: cfg.pipeline.shutdown_grace,
            vendor_id: cfg.vendor_id,
            submit_settle: cfg.pipeline.submit_settle,
            max_submit_errors: cfg.pipeline.max_submit_errors,
        }
    }
}

/// Why a step did not complete.
#[derive(Debug)]
enum Failure {
    /// The backend as a whole is unavailable for sure (429, sign-in
    /// failing transiently): everyone waits.
    BackendDown {
        error: String,
        retry_after: Option<Duration>,
    },
    /// A call failed in a way that may be the backend's as a whole (5xx,
    /// network, unreadable answer) or this job's alone (a sale the backend
    /// chokes on): a probe decides. `submit_error`: a submit answered 5xx
    /// (counts towards `max_submit_errors` when it is the job's alone).
    Unclear {
        error: String,
        retry_after: Option<Duration>,
        submit_error: bool,
    },
    /// This job failed; retry it later with its own backoff.
    Transient(String),
    /// This job failed and must not be tried again before `at`.
    RetryAt { error: String, at: DateTime<Utc> },
    /// Not a failure: the job waits until `until` without being charged.
    Wait {
        reason: String,
        until: DateTime<Utc>,
    },
    /// A submit answered `error` (or a 5xx while the backend answers
    /// others): retried with the job's backoff, parked at
    /// `max_submit_errors` in a row. `settles`: the attempt on that backend
    /// id whose outcome this is, settled once it is recorded (a 5xx leaves
    /// the attempt unsettled: the status is read before the next submit).
    SubmitError { error: String, settles: Option<u64> },
    /// A person must act on this job.
    Park(String),
    /// A person must act; the submit attempt on `laravel_id` is settled
    /// once this is recorded (its outcome, `rejected`, is known).
    ParkSubmit { reason: String, laravel_id: u64 },
    /// Signing in needs a person: hold all work, do not charge the job.
    SignIn(String),
    /// The outbox could not record the step.
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

fn classify(e: ApiError) -> Failure {
    match e {
        ApiError::RateLimited { retry_after } => Failure::BackendDown {
            error: e.to_string(),
            retry_after,
        },
        ApiError::Token(TokenError::Unavailable { retry_after, .. }) => Failure::BackendDown {
            error: e.to_string(),
            retry_after,
        },
        ApiError::Server { retry_after, .. } => Failure::Unclear {
            error: e.to_string(),
            retry_after,
            submit_error: false,
        },
        ApiError::Transport { .. } | ApiError::Parse { .. } | ApiError::Unexpected { .. } => {
            Failure::Unclear {
                error: e.to_string(),
                retry_after: None,
                submit_error: false,
            }
        }
        ApiError::Token(TokenError::NeedsPerson { .. })
        | ApiError::InvalidCredentials { .. }
        | ApiError::Unauthenticated { .. } => Failure::SignIn(e.to_string()),
        ApiError::AccountDisabled { .. }
        | ApiError::Forbidden { .. }
        | ApiError::NotFound { .. }
        | ApiError::Validation { .. }
        | ApiError::DuplicateInvoiceNumber { .. } => Failure::Park(e.to_string()),
        ApiError::SubmitUnavailable { .. } => Failure::Unclear {
            error: e.to_string(),
            retry_after: None,
            submit_error: true,
        },
        ApiError::NotADocument { .. } | ApiError::File { .. } => Failure::Transient(e.to_string()),
    }
}

/// One backoff for the whole backend: when it is down, every worker waits
/// here instead of each job probing it on its own schedule.
#[derive(Debug, Default)]
struct BackendGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    closed_until: Option<Instant>,
    failures: u32,
    down_since: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

impl GateState {
    /// Keeps the gate closed at least `wait` from now (never shortens it).
    fn extend(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        self.closed_until = Some(self.closed_until.map_or(until, |u| u.max(until)));
    }

    fn is_closed(&self) -> bool {
        self.closed_until.is_some_and(|u| u > Instant::now())
    }
}

/// The backend gate as people see it (`/api/health`, the status page).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GateView {
    /// All work waits for the backend.
    pub(crate) closed: bool,
    /// Since when calls and probes have been failing.
    pub(crate) down_since: DateTime<Utc>,
    /// Failed probes in a row.
    pub(crate) failures: u32,
    pub(crate) last_error: Option<String>,
    /// When the next probe goes out (while closed).
    pub(crate) next_probe_in_seconds: Option<u64>,
}

impl BackendGate {
    /// Records a backend-wide failure; returns how long the gate is closed.
    /// Failures while it is already closed belong to the same outage: they
    /// may lengthen the wait (a `Retry-After`) but do not count again.
    fn close(
        &self,
        policy: &Backoff,
        retry_after: Option<Duration>,
        now: DateTime<Utc>,
        error: &str,
    ) -> Duration {
        let mut st = self.state.lock().expect("gate lock");
        let asked = retry_after.unwrap_or_default().min(policy.max);
        if !st.is_closed() {
            st.failures += 1;
        }
        let wait = policy.after(st.failures.max(1)).max(asked);
        st.extend(wait);
        st.last_error = Some(error.to_string());
        if st.down_since.is_none() {
            st.down_since = Some(now);
            tracing::warn!(
                error,
                wait_secs = wait.as_secs(),
                "backend unavailable (a probe failed too); pausing all work"
            );
        } else {
            tracing::warn!(
                error,
                failures = st.failures,
                wait_secs = wait.as_secs(),
                "backend still unavailable; backing off"
            );
        }
        wait
    }

    /// Closes the gate for `wait` without counting a backend failure.
    fn hold(&self, wait: Duration) {
        self.state.lock().expect("gate lock").extend(wait);
    }

    fn opened(&self, now: DateTime<Utc>) {
        let mut st = self.state.lock().expect("gate lock");
        if let Some(since) = st.down_since.take() {
            tracing::info!(
                down_for_secs = (now - since).num_seconds(),
                "backend reachable again; resuming"
            );
        }
        st.failures = 0;
        st.closed_until = None;
        st.last_error = None;
    }

    /// The gate has reopened after an outage and no call has succeeded
    /// since: one probe must go first (half-open), so a recovering backend
    /// is not hit by the whole concurrency at once, and an outage costs one
    /// call per backoff step.
    fn needs_probe(&self) -> bool {
        let st = self.state.lock().expect("gate lock");
        st.failures > 0 && !st.is_closed()
    }

    fn closed_until(&self) -> Option<Instant> {
        let st = self.state.lock().expect("gate lock");
        st.closed_until.filter(|u| *u > Instant::now())
    }

    fn view(&self) -> Option<GateView> {
        let st = self.state.lock().expect("gate lock");
        let since = st.down_since?;
        let closed_until = st.closed_until.filter(|u| *u > Instant::now());
        Some(GateView {
            closed: closed_until.is_some(),
            down_since: since,
            failures: st.failures,
            last_error: st.last_error.clone(),
            next_probe_in_seconds: closed_until.map(|u| (u - Instant::now()).as_secs()),
        })
    }
}

/// Whether the backend answers at all: one cheap call, shared by the jobs
/// failing at the same time (see [`PROBE_FRESH`]).
#[derive(Debug, Default)]
struct Probe {
    /// Held across the call: one probe in flight; the others take its
    /// result.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), ProbeFailed>)>>,
}

#[derive(Debug, Clone)]
enum ProbeFailed {
    /// The backend does not answer (for anyone).
    Down(String),
    /// Signing in needs a person.
    SignIn(String),
}

/// Told of every step the pipeline records, with the job as it now is.
pub(crate) type StepHook = Arc<dyn Fn(&Job) + Send + Sync>;

/// The worker. Cheap to clone; clones share everything.
#[derive(Clone)]
pub(crate) struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    outbox: OutboxHandle,
    client: LaravelClient,
    settings: PipelineSettings,
    clock: Arc<dyn Clock>,
    wake: Notify,
    gate: BackendGate,
    probe: Probe,
    /// Told after every recorded step (the QuickBooks pusher waits for
    /// jobs to reach its stage).
    on_step: Option<StepHook>,
}

impl Pipeline {
    /// `on_step` is told of every step recorded (with the job as it now is).
    pub(crate) fn new(
        outbox: OutboxHandle,
        client: LaravelClient,
        settings: PipelineSettings,
        clock: Arc<dyn Clock>,
        on_step: Option<StepHook>,
    ) -> Pipeline {
        Pipeline {
            inner: Arc::new(Inner {
                outbox,
                client,
                settings,
                clock,
                wake: Notify::new(),
                gate: BackendGate::default(),
                probe: Probe::default(),
                on_step,
            }),
        }
    }

    /// Tells the worker new work is in the outbox (the intake calls this
    /// after committing a sale).
    pub(crate) fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The backend gate: `Some` while the backend is failing for everyone
    /// (closed, or reopened and waiting for a probe to succeed).
    pub(crate) fn gate(&self) -> Option<GateView> {
        self.inner.gate.view()
    }

    /// Works until `shutdown` completes: claims due jobs up to the
    /// concurrency limit, then sleeps until the next is due or news comes.
    /// On shutdown it stops claiming, gives in-flight steps the grace
    /// period, then abandons the rest (they resume at their last committed
    /// step on the next start).
    pub(crate) async fn run(&self, shutdown: impl Future<Output = ()>) {
        let me = &self.inner;
        let s = &me.settings;
        tokio::pin!(shutdown);
        let mut workers: JoinSet<()> = JoinSet::new();
        // The job each running task works on, by task: a task that panics
        // is still known by its id, so its job is released.
        let mut busy: HashMap<task::Id, i64> = HashMap::new();
        // The task in the newest-sale slot: with two slots or more, one
        // takes the newest due job and the others the oldest, so a sale
        // rung up during a catch-up is done in seconds, not after the
        // backlog, while the backlog still drains oldest first.
        let mut newest_slot: Option<task::Id> = None;
        tracing::info!(
            concurrency = s.concurrency,
            auto_submit = s.auto_submit,
            "pipeline started"
        );
        loop {
            // After an outage, one probe decides whether work resumes.
            if me.gate.needs_probe() {
                tokio::select! {
                    _ = &mut shutdown => break,
                    answer = self.probe(true) => self.probed(answer),
                }
            }
            // Claim what is due (unless the backend gate is closed).
            let limit = s.concurrency;
            if busy.len() < limit && me.gate.closed_until().is_none() {
                let free = limit - busy.len();
                let ids: Vec<i64> = busy.values().copied().collect();
                let now = me.clock.now();
                let stop = !s.auto_submit;
                let want_newest = limit >= 2 && newest_slot.is_none();
                let claimed = me
                    .outbox
                    .call(move |o| {
                        let mut ids = ids;
                        let newest = match want_newest {
                            true => o.newest_due(now, &ids, stop)?,
                            false => None,
                        };
                        ids.extend(newest.as_ref().map(|j| j.id));
                        let rest = free - usize::from(newest.is_some());
                        let oldest = o.due(now, rest, &ids, stop)?;
                        Ok::<_, crate::store::StoreError>((newest, oldest))
                    })
                    .await;
                match claimed {
                    Ok((newest, oldest)) => {
                        if let Some(job) = newest {
                            let id = job.id;
                            let p = self.clone();
                            let task = workers.spawn(async move { p.drive(job).await });
                            busy.insert(task.id(), id);
                            newest_slot = Some(task.id());
                        }
                        for job in oldest {
                            let id = job.id;
                            let p = self.clone();
                            let task = workers.spawn(async move { p.drive(job).await });
                            busy.insert(task.id(), id);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the outbox; retrying shortly");
                        me.gate.hold(Duration::from_secs(5));
                    }
                }
            }
            // Sleep until something can happen.
            let wake_at = self.next_wake(&busy).await;
            tokio::select! {
                _ = &mut shutdown => break,
                done = workers.join_next_with_id(), if !workers.is_empty() => {
                    let finished = match &done {
                        Some(Ok((task, ()))) => Some(*task),
                        Some(Err(e)) => Some(e.id()),
                        None => None,
                    };
                    if finished.is_some() && finished == newest_slot {
                        newest_slot = None;
                    }
                    match done {
                        Some(Ok((task, ()))) => { busy.remove(&task); }
                        Some(Err(e)) => {
                            let job = busy.remove(&e.id());
                            tracing::error!(error = %e, job = ?job, "a pipeline task failed; its job will be retried");
                        }
                        None => {}
                    }
                }
                _ = me.wake.notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
        if !workers.is_empty() {
            tracing::info!(
                in_flight = workers.len(),
                grace_secs = s.shutdown_grace.as_secs(),
                "stopping: letting in-flight steps finish"
            );
            let drain = async { while workers.join_next().await.is_some() {} };
            if tokio::time::timeout(s.shutdown_grace, drain).await.is_err() {
                tracing::warn!(
                    abandoned = workers.len(),
                    "in-flight steps abandoned at the deadline; they resume at their last recorded step on the next start"
                );
                workers.shutdown().await;
            }
        }
        tracing::info!("pipeline stopped");
    }

    /// Asks the backend whether it answers at all (`GET
    /// /api/vendors/profile`, cheap). Any answer from the application (even
    /// a 404 or 403) means it is up; no answer, a 5xx or a throttle means
    /// it is not. `fresh`: do not reuse a recent answer.
    async fn probe(&self, fresh: bool) -> Result<(), ProbeFailed> {
        let me = &self.inner;
        let mut last = me.probe.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if !fresh && at.elapsed() < PROBE_FRESH {
                return answer.clone();
            }
        }
        let answer = match me.client.profile().await {
            Ok(_) => Ok(()),
            Err(e) => match classify(e) {
                Failure::SignIn(why) => Err(ProbeFailed::SignIn(why)),
                Failure::BackendDown { error, .. } | Failure::Unclear { error, .. } => {
                    Err(ProbeFailed::Down(error))
                }
                _ => Ok(()),
            },
        };
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    /// Opens or keeps closed the gate after a half-open probe.
    fn probed(&self, answer: Result<(), ProbeFailed>) {
        let me = &self.inner;
        let now = me.clock.now();
        match answer {
            Ok(()) => me.gate.opened(now),
            Err(ProbeFailed::Down(error)) => {
                me.gate.close(&me.settings.backoff, None, now, &error);
            }
            Err(ProbeFailed::SignIn(error)) => {
                tracing::error!(error = %error, "cannot sign in to the backend; all sales wait until this is fixed");
                me.gate.hold(Duration::from_secs(60));
            }
        }
    }

    /// When to look at the outbox again.
    async fn next_wake(&self, busy: &HashMap<task::Id, i64>) -> Instant {
        let me = &self.inner;
        let poll = Instant::now() + me.settings.idle_poll;
        if let Some(until) = me.gate.closed_until() {
            return until.min(poll);
        }
        if busy.len() >= me.settings.concurrency {
            return poll;
        }
        let ids: Vec<i64> = busy.values().copied().collect();
        let stop = !me.settings.auto_submit;
        match me.outbox.call(move |o| o.next_due_at(&ids, stop)).await {
            Ok(Some(at)) => {
                let now = me.clock.now();
                let wait = (at - now).to_std().unwrap_or_default();
                (Instant::now() + wait).min(poll)
            }
            Ok(None) => poll,
            Err(_) => Instant::now() + Duration::from_secs(5),
        }
    }

    /// Takes one job as far as it can go now.
    async fn drive(&self, mut job: Job) {
        let me = &self.inner;
        loop {
            let step = match job.stage {
                Stage::Queued => self.create(&job).await,
                Stage::Created if me.settings.auto_submit => self.submit(&job).await,
                Stage::Created => return,
                Stage::Submitted => self.pdf(&job).await,
                Stage::PdfSaved => self.finish(&job).await,
                Stage::Done => return,
            };
            match step {
                Ok(next) => {
                    me.gate.opened(me.clock.now());
                    job = next;
                }
                Err(failure) => {
                    self.failed(&job, failure).await;
                    return;
                }
            }
            // Between steps, respect a backoff another worker started.
            if me.gate.closed_until().is_some() {
                return;
            }
        }
    }

    async fn failed(&self, job: &Job, failure: Failure) {
        let me = &self.inner;
        // A call failed in a way that could be the whole backend's: ask.
        let failure = match failure {
            Failure::Unclear {
                error,
                retry_after,
                submit_error,
            } => match self.probe(false).await {
                // The backend answers others: this job alone fails.
                Ok(()) if submit_error => Failure::SubmitError {
                    error,
                    settles: None,
                },
                Ok(()) => Failure::Transient(error),
                Err(ProbeFailed::Down(_)) => Failure::BackendDown { error, retry_after },
                Err(ProbeFailed::SignIn(why)) => Failure::SignIn(why),
            },
            other => other,
        };
        let now = me.clock.now();
        let id = job.id;
        let number = job.invoice_number.clone();
        let backoff = |attempts: u32| {
            let wait = me.settings.backoff.after(attempts);
            (
                wait,
                now + chrono::Duration::from_std(wait).unwrap_or_default(),
            )
        };
        let result = match failure {
            Failure::BackendDown { error, retry_after } => {
                let wait = me
                    .gate
                    .close(&me.settings.backoff, retry_after, now, &error);
                let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
                me.outbox
                    .call(move |o| o.record_retry(id, &error, next, now))
                    .await
                    .map(|_| ())
            }
            Failure::Unclear { .. } => unreachable!("sorted by the probe above"),
            Failure::Transient(error) => {
                let (wait, next) = backoff(job.attempts + 1);
                tracing::warn!(invoice = %number, error = %error, retry_in_secs = wait.as_secs(), "step failed (the backend works for others); will retry this sale alone");
                me.outbox
                    .call(move |o| o.record_retry(id, &error, next, now))
                    .await
                    .map(|_| ())
            }
            Failure::RetryAt { error, at } => {
                tracing::warn!(invoice = %number, error = %error, next = %stamp(at), "step failed; will retry");
                me.outbox
                    .call(move |o| o.record_retry(id, &error, at, now))
                    .await
                    .map(|_| ())
            }
            Failure::Wait { reason, until } => {
                tracing::info!(invoice = %number, until = %stamp(until), "{reason}");
                me.outbox
                    .call(move |o| o.postpone(id, &reason, until, now))
                    .await
            }
            Failure::SubmitError { error, settles } => {
                let errors = job.submit_errors + 1;
                let max = me.settings.max_submit_errors;
                let settle = move |o: &mut crate::store::Outbox| match settles {
                    Some(lid) => o.settle_submit(lid),
                    None => Ok(()),
                };
                if errors >= max {
                    let reason = jofotara_broken(job, errors, &error);
                    tracing::error!(invoice = %number, reason = %reason, "job parked: a person must act");
                    me.outbox
                        .call(move |o| {
                            o.park(id, &reason, now)?;
                            settle(o)
                        })
                        .await
                } else {
                    let (wait, next) = backoff(job.attempts + 1);
                    tracing::warn!(invoice = %number, error = %error, errors, max, retry_in_secs = wait.as_secs(), "submit failed; will submit again");
                    let error = format!("{error} (submit error {errors} of {max} in a row)");
                    me.outbox
                        .call(move |o| {
                            o.record_submit_error(id, &error, next, now)?;
                            settle(o)
                        })
                        .await
                }
            }
            Failure::Park(reason) => {
                tracing::error!(invoice = %number, reason = %reason, "job parked: a person must act (`pos-connector queue show {}`)", number);
                me.outbox
                    .call(move |o| o.park(id, &reason, now))
                    .await
                    .map(|_| ())
            }
            Failure::ParkSubmit { reason, laravel_id } => {
                tracing::error!(invoice = %number, reason = %reason, "job parked: a person must act (`pos-connector queue show {}`)", number);
                me.outbox
                    .call(move |o| {
                        o.park(id, &reason, now)?;
                        o.settle_submit(laravel_id)
                    })
                    .await
            }
            Failure::SignIn(error) => {
                // Not the job's fault: hold everything, re-check in a minute
                // (the keeper notices a newly stored password by itself).
                tracing::error!(error = %error, "cannot sign in to the backend; all sales wait until this is fixed");
                me.gate.hold(Duration::from_secs(60));
                let next = now + chrono::Duration::seconds(60);
                me.outbox
                    .call(move |o| o.postpone(id, &error, next, now))
                    .await
            }
            Failure::Store(e) => {
                tracing::error!(invoice = %number, error = %e, "cannot record the job's progress; it will be redone");
                me.gate.hold(Duration::from_secs(5));
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(invoice = %number, error = %e, "cannot record the failure in the outbox");
        }
    }

    fn sale(job: &Job) -> Result<Sale, Failure> {
        serde_json::from_str(&job.sale_json).map_err(|e| {
            Failure::Park(format!(
                "the stored sale cannot be read ({e}); this outbox was probably written by another \
                 version: re-send the sale"
            ))
        })
    }

    async fn create(&self, job: &Job) -> Result<Job, Failure> {
        let me = &self.inner;
        let sale = Self::sale(job)?;
        let id = job.id;
        if job.in_flight.as_deref() == Some("recover") {
            // The backend already said the number is taken: search again
            // rather than send the create once more.
            return self
                .recover_lost_create(job, &sale, job.id_floor.unwrap_or(0))
                .await;
        }
        let job = me.outbox.call(move |o| o.begin_step(id, "create")).await?;
        let floor = job.id_floor.unwrap_or(0);
        match me.client.create_invoice(&sale.to_new_invoice()).await {
            Ok(CreateOutcome::Created(inv)) => {
                let detail = format!("created at the backend as invoice id {}", inv.id);
                self.record(
                    &job,
                    Stage::Created,
                    StepResult {
                        laravel_id: Some(inv.id),
                        uuid: inv.uuid.clone(),
                        ..Default::default()
                    },
                    detail,
                )
                .await
            }
            Ok(CreateOutcome::AlreadyExists { .. }) => {
                let job = me.outbox.call(move |o| o.begin_step(id, "recover")).await?;
                self.recover_lost_create(&job, &sale, floor).await
            }
            Err(e) => {
                if !e.outcome_unknown() {
                    // Certainly not created (refused, throttled, invalid):
                    // the next attempt is not over an unknown one.
                    me.outbox.call(move |o| o.end_step(id)).await?;
                }
                Err(classify(e))
            }
        }
    }

    /// Records that JoFotara has the invoice (`status` is the backend's
    /// word for it), whichever way the submit step learned it.
    async fn record_submitted(
        &self,
        job: &Job,
        status: &InvoiceStatus,
        detail: String,
    ) -> Result<Job, Failure> {
        let result = StepResult {
            backend_status: Some(status.as_str().into()),
            ..Default::default()
        };
        self.record(job, Stage::Submitted, result, detail).await
    }

    async fn record(
        &self,
        job: &Job,
        stage: Stage,
        result: StepResult,
        detail: String,
    ) -> Result<Job, Failure> {
        let me = &self.inner;
        let id = job.id;
        let now = me.clock.now();
        tracing::info!(invoice = %job.invoice_number, stage = stage.as_str(), "{detail}");
        let job = me
            .outbox
            .call(move |o| o.record_step(id, stage, &result, &detail, now))
            .await?;
        if let Some(hook) = &me.on_step {
            hook(&job);
        }
        Ok(job)
    }

    /// The backend says the number is taken: find the invoice an earlier
    /// attempt created, by the configured lookup or by reading the ids
    /// after `floor`, and carry on with it.
    async fn recover_lost_create(
        &self,
        job: &Job,
        sale: &Sale,
        floor: u64,
    ) -> Result<Job, Failure> {
        let me = &self.inner;
        let s = &me.settings;
        let number = &job.invoice_number;
        let (found, searched) = if let Some(template) = &s.lookup_path {
            let path = template.replace("{invoice_number}", &encode_path_segment(number));
            match me.client.invoice_at(&path).await {
                Ok(inv) => (Some(inv), format!("via the lookup route {path}")),
                Err(ApiError::NotFound { .. }) => (None, format!("via the lookup route {path}")),
                Err(e) => return Err(classify(e)),
            }
        } else {
            self.scan_ids(floor, number).await?
        };
        let Some(inv) = found else {
            return Err(Failure::Park(format!(
                "invoice number {number} is already taken at the backend (422 \"already been \
                 taken\"), but no invoice with that number was found {searched}: it was not \
                 created by this agent's earlier attempts, so another till, vendor or person used \
                 the number. Check the backend: if that invoice is this sale, nothing needs \
                 sending; otherwise export the sale again under a new number. `pos-connector \
                 queue retry {}` repeats the search.",
                job.id
            )));
        };
        if let (Some(ours), Some(theirs)) = (
            s.vendor_id.or(self.signed_in_vendor()),
            inv.raw.get("vendor_id").and_then(serde_json::Value::as_u64),
        ) {
            if ours != theirs {
                return Err(Failure::Park(format!(
                    "invoice number {number} is taken at the backend by invoice id {} of another \
                     vendor (vendor_id {theirs}, this agent signs in as {ours}); give this sale a \
                     different number and send it again",
                    inv.id
                )));
            }
        }
        // Same number, same vendor. Ours only if an earlier create of this
        // job may have reached the backend, and the invoice is this sale.
        let another = |why: String| {
            Failure::Park(format!(
                "invoice number {number} is used by another sale (another till or the old \
                 connector?): the backend has it as invoice id {} ({why}). This sale was not \
                 sent. Check invoice id {} in the backend: if it is this sale, nothing needs \
                 sending; otherwise export the sale again under a new number",
                inv.id, inv.id
            ))
        };
        if !job.lost_create {
            return Err(another(format!(
                "customer \"{}\"; this agent never sent a create of this sale that could have \
                 made it",
                inv.customer_name.as_deref().unwrap_or("?")
            )));
        }
        if let Some(difference) = sale_difference(&sale.to_new_invoice(), &inv) {
            return Err(another(format!("a different sale: {difference}")));
        }
        let status = inv.status.as_ref().map(|s| s.as_str().to_string());
        let detail = format!(
            "an earlier create had gone through (its answer was lost or the agent stopped before \
             recording it): found invoice id {} {searched}; not creating it again",
            inv.id
        );
        self.record(
            job,
            Stage::Created,
            StepResult {
                laravel_id: Some(inv.id),
                uuid: inv.uuid.clone(),
                backend_status: status,
                ..Default::default()
            },
            detail,
        )
        .await
    }

    /// Looks for `number` among the invoice ids above `floor`, reading at
    /// most `scan_limit` of them. First it finds where the ids end: it
    /// gallops up (floor+1, +2, +4...) to an unknown id, bisects back to the
    /// last known one, and checks `scan_confirm` more ids (a deleted
    /// invoice leaves a gap, not an end). Then it reads down from the end,
    /// because a lost create is among the newest invoices, even when other
    /// vendors have added many since or the floor is unknown (0, a fresh
    /// install against a busy backend).
    async fn scan_ids(
        &self,
        floor: u64,
        number: &str,
    ) -> Result<(Option<crate::laravel::model::Invoice>, String), Failure> {
        let me = &self.inner;
        let limit = me.settings.scan_limit;
        let mut read: HashSet<u64> = HashSet::new();
        let mut highest_found = floor;
        // One read: Ok(Some(inv)) exists, Ok(None) unknown id. A scan is
        // many reads: a transient failure of one is retried on the spot
        // (the client's retry policy, short waits) rather than throwing the
        // whole scan away.
        let read_policy = RetryPolicy {
            max_attempts: SCAN_READ_ATTEMPTS,
            min_delay: me.settings.backoff.first,
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
        };
        let read_policy = &read_policy;
        let read_id = |id: u64| async move {
            let read = read_policy
                .run("read an invoice while looking for a lost create", |_| {
                    me.client.invoice(id)
                })
                .await;
            match read {
                Ok(inv) => Ok(Some(inv)),
                Err(ApiError::NotFound { .. }) => Ok(None),
                Err(e) => Err(classify(e)),
            }
        };
        let describe = |reads: usize, end: u64| {
            format!(
                "by reading {reads} invoice ids between {} and {end}",
                floor + 1
            )
        };
        // 1. Find the end of the ids: gallop up to an unknown id, narrow
        //    the boundary by bisection, and confirm it (a gap is not the end).
        let mut step = 1u64;
        let end = 'find_end: loop {
            if read.len() as u32 >= limit {
                break highest_found + 1;
            }
            let id = highest_found + step;
            read.insert(id);
            match read_id(id).await? {
                Some(inv) if inv.invoice_number == number => {
                    self.note_seen(id).await;
                    return Ok((Some(inv), describe(read.len(), id)));
                }
                Some(_) => {
                    highest_found = id;
                    step = step.saturating_mul(2);
                    continue;
                }
                None => {}
            }
            // Ids up to `highest_found` exist, `id` does not: bisect.
            let mut missing = id;
            while missing - highest_found > 1 && (read.len() as u32) < limit {
                let mid = highest_found + (missing - highest_found) / 2;
                read.insert(mid);
                match read_id(mid).await? {
                    Some(inv) if inv.invoice_number == number => {
                        self.note_seen(mid).await;
                        return Ok((Some(inv), describe(read.len(), mid)));
                    }
                    Some(_) => highest_found = mid,
                    None => missing = mid,
                }
            }
            for k in 1..=me.settings.scan_confirm as u64 {
                let probe = missing + k;
                if (read.len() as u32) >= limit || !read.insert(probe) {
                    continue;
                }
                match read_id(probe).await? {
                    Some(inv) if inv.invoice_number == number => {
                        self.note_seen(probe).await;
                        return Ok((Some(inv), describe(read.len(), probe)));
                    }
                    Some(_) => {
                        // A gap, not the end: search on from here.
                        highest_found = probe;
                        step = 1;
                        continue 'find_end;
                    }
                    None => {}
                }
            }
            break missing;
        };
        self.note_seen(highest_found).await;
        // 2. Read down from the end towards the floor.
        let mut id = end;
        while id > floor + 1 && (read.len() as u32) < limit {
            id -= 1;
            if !read.insert(id) {
                continue;
            }
            if let Some(inv) = read_id(id).await? {
                if inv.invoice_number == number {
                    return Ok((Some(inv), describe(read.len(), end)));
                }
            }
        }
        Ok((None, describe(read.len(), end)))
    }

    async fn note_seen(&self, id: u64) {
        if id > 0 {
            let _ = self.inner.outbox.call(move |o| o.note_seen_id(id)).await;
        }
    }

    fn signed_in_vendor(&self) -> Option<u64> {
        self.inner
            .client
            .keeper()
            .current()
            .and_then(|t| t.vendor_id)
    }

    /// Submits to JoFotara, at most once per invoice (see the module doc):
    /// an earlier attempt whose outcome is unknown is first left to settle,
    /// then its status decides.
    async fn submit(&self, job: &Job) -> Result<Job, Failure> {
        let me = &self.inner;
        let lid = laravel_id(job)?;
        let now = me.clock.now();
        let pending = me.outbox.call(move |o| o.unsettled_submit(lid)).await?;
        if let Some(earlier) = pending {
            let started = stamp(earlier.started_at);
            if now < earlier.check_after {
                return Err(Failure::Wait {
                    reason: format!(
                        "the submit of invoice id {lid} started at {started} got no answer and \
                         the backend may still be working on it; its status is read at {} \
                         (pipeline.submit_settle_seconds after its start) before anything is \
                         sent again",
                        stamp(earlier.check_after)
                    ),
                    until: earlier.check_after,
                });
            }
            let (status, _) = me.client.status(lid).await.map_err(classify)?;
            match status {
                InvoiceStatus::Submitted => {
                    return self
                        .record_submitted(
                            job,
                            &status,
                            format!(
                                "the submit started at {started} went through: invoice id \
                                 {lid} is submitted (status read after its answer was lost); \
                                 not submitting again"
                            ),
                        )
                        .await
                }
                InvoiceStatus::Rejected => {
                    return Err(Failure::ParkSubmit {
                        reason: rejected(job, lid),
                        laravel_id: lid,
                    })
                }
                InvoiceStatus::Error => {
                    return Err(Failure::SubmitError {
                        error: format!(
                            "JoFotara reported an error for invoice id {lid} (status \"error\" \
                             after the submit started at {started}); submitting again later"
                        ),
                        settles: Some(lid),
                    })
                }
                InvoiceStatus::Draft => {
                    // Settled and still a draft: that attempt never took
                    // effect. Only now may another go out.
                    tracing::info!(invoice = %job.invoice_number, id = lid, started = %started, "the earlier submit did not take effect (status still draft after the settle window); submitting again");
                }
                InvoiceStatus::Other(other) => {
                    return Err(Failure::Transient(format!(
                        "invoice id {lid} has status \"{other}\" after the submit started at \
                         {started}; checking again later"
                    )))
                }
            }
        } else if me.outbox.call(move |o| o.submitted_before(lid)).await? {
            // Submitted from here before (an `error`, a `rejected` released
            // by a person): what is it now?
            let (status, _) = me.client.status(lid).await.map_err(classify)?;
            match status {
                InvoiceStatus::Submitted => {
                    return self
                        .record_submitted(
                            job,
                            &status,
                            format!(
                                "already submitted to JoFotara (status check of invoice id {lid})"
                            ),
                        )
                        .await
                }
                InvoiceStatus::Rejected => {
                    return Err(Failure::ParkSubmit {
                        reason: rejected(job, lid),
                        laravel_id: lid,
                    })
                }
                _ => {}
            }
        }
        let id = job.id;
        // Durably before sending: whatever happens to the answer or to this
        // process, the next attempt knows this one may be running. The
        // window starts when the request can go, not when this step began:
        // the reads above (a status call may take the whole request
        // timeout) and a slow disk must not eat into it. If the record
        // itself took long, it is written again with the later start.
        let mut start = me.clock.now();
        let mut check_after = start + settle_window(me.settings.submit_settle);
        for _ in 0..START_RECORD_TRIES {
            let (at, until) = (start, check_after);
            me.outbox
                .call(move |o| o.begin_submit(Some(id), lid, "service", at, until))
                .await?;
            let now = me.clock.now();
            if now - start <= chrono::Duration::seconds(1) {
                break;
            }
            start = now;
            check_after = start + settle_window(me.settings.submit_settle);
        }
        let out = match me.client.submit(lid).await {
            Ok(out) => out,
            Err(e) if e.may_still_be_running() => {
                return Err(Failure::RetryAt {
                    error: format!(
                        "{e}; the backend may still be submitting invoice id {lid}: its status \
                         is read at {} before anything is sent again",
                        stamp(check_after)
                    ),
                    at: check_after,
                })
            }
            Err(e) if e.outcome_unknown() || matches!(e, ApiError::SubmitUnavailable { .. }) => {
                // The application answered without an outcome: the request
                // is over, so the status may be read at once (but must be).
                let answered = me.clock.now();
                me.outbox
                    .call(move |o| o.submit_answered(lid, answered))
                    .await?;
                return Err(match classify(e) {
                    Failure::Unclear {
                        error, retry_after, ..
                    } => Failure::Unclear {
                        error,
                        retry_after,
                        submit_error: true,
                    },
                    other => other,
                });
            }
            Err(e) => {
                // Certainly not submitted (refused, throttled, not found).
                me.outbox
                    .call(move |o| {
                        o.settle_submit(lid)?;
                        o.end_step(id)
                    })
                    .await?;
                return Err(classify(e));
            }
        };
        match out.status {
            InvoiceStatus::Submitted => {
                self.record_submitted(
                    job,
                    &out.status,
                    format!("submitted to JoFotara (invoice id {lid})"),
                )
                .await
            }
            InvoiceStatus::Rejected => Err(Failure::ParkSubmit {
                reason: rejected(job, lid),
                laravel_id: lid,
            }),
            InvoiceStatus::Error => Err(Failure::SubmitError {
                error: format!(
                    "JoFotara reported an error for invoice id {lid} (status \"error\"); \
                     submitting again later"
                ),
                settles: Some(lid),
            }),
            other => {
                let answered = me.clock.now();
                me.outbox
                    .call(move |o| o.submit_answered(lid, answered))
                    .await?;
                Err(Failure::Transient(format!(
                    "after submit the backend reports status \"{}\" for invoice id {lid}; \
                     checking again later",
                    other.as_str()
                )))
            }
        }
    }

    async fn pdf(&self, job: &Job) -> Result<Job, Failure> {
        let me = &self.inner;
        let lid = laravel_id(job)?;
        let saved = me
            .client
            .download(
                lid,
                Some(&job.invoice_number),
                DocumentKind::Pdf,
                None,
                &me.settings.pdf_dir,
            )
            .await
            .map_err(classify)?;
        let path = saved.path.display().to_string();
        self.record(
            job,
            Stage::PdfSaved,
            StepResult {
                pdf_path: Some(path.clone()),
                ..Default::default()
            },
            format!("official PDF saved to {path} ({} bytes)", saved.bytes),
        )
        .await
    }

    async fn finish(&self, job: &Job) -> Result<Job, Failure> {
        self.record(job, Stage::Done, StepResult::default(), "done".into())
            .await
    }
}

fn laravel_id(job: &Job) -> Result<u64, Failure> {
    job.laravel_id.ok_or_else(|| {
        Failure::Park(format!(
            "job {} is at stage {} but has no backend invoice id; the outbox is inconsistent: \
             report this, then `queue retry`",
            job.id,
            job.stage.as_str()
        ))
    })
}

fn rejected(job: &Job, lid: u64) -> String {
    format!(
        "JoFotara rejected invoice {} (backend id {lid}, status \"rejected\"): it cannot be \
         submitted again as it is; correct it in the backend or issue a new invoice",
        job.invoice_number
    )
}

/// Why a job whose submits keep failing is parked: most likely the
/// backend's JoFotara integration (every submit of every invoice answers
/// `error` while it is misconfigured).
fn jofotara_broken(job: &Job, errors: u32, last: &str) -> String {
    format!(
        "JoFotara submission of invoice {} (backend id {}) failed {errors} times in a row (last: \
         {last}). The backend's JoFotara integration is probably misconfigured (a missing \
         supplier income source, an SDK mismatch...): then every submit fails until the backend \
         administrator fixes it. After the fix, `pos-connector queue retry {}` (or Retry on the \
         status page) submits it again",
        job.invoice_number,
        job.laravel_id
            .map(|l| l.to_string())
            .unwrap_or_else(|| "?".into()),
        job.invoice_number
    )
}

/// How often a submit's start is recorded again when the clock moved on
/// (more than a second) while it was being written; bounded so a disk that
/// is always that slow still lets the submit go.
const START_RECORD_TRIES: usize = 5;

/// The settle window as a wall-clock duration.
fn settle_window(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(90))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Percent-encodes an invoice number for use as one path segment.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
