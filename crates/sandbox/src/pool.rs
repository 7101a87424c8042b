//! A bounded pool of workers with service times, like PHP-FPM behind nginx.
//!
//! The real backend answers each request from one of a fixed number of PHP
//! workers; a request that finds them all busy waits in the listen backlog
//! (first come, first served), and each route costs its own service time
//! (bcrypt at login, the JoFotara round trip at submit, dompdf for the PDF).
//! [`WorkerPool`] reproduces that: [`pool_middleware`] makes each request
//! take a worker permit (a fair, hence FIFO, semaphore), spend its route's
//! service time holding it (`tokio::time::sleep`, so a paused clock
//! applies), then run the handler, and records what the pool did
//! ([`PoolStats`]).
//!
//! A request's work is its route's service time, plus any extra work time
//! an injected [`Fault::SlowWork`](crate::Fault::SlowWork) adds (an
//! [`ExtraWork`] extension), then its handler: the handler's effect lands
//! at the end of that time. With [`WorkerPool::set_finish_after_disconnect`]
//! a request, once received, is served to the end even if its client goes
//! away (a PHP script behind nginx is not stopped by the client hanging
//! up): the work runs in its own task. Without it the work is dropped with
//! the connection (as hyper drops a handler whose client left). Without a
//! bound and without work time the middleware only counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::http::{lock, route_key, ExtraWork};

/// What a [`WorkerPool`] did since it started (or since its last reset).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolStats {
    /// The bound (`None` = unbounded).
    pub workers: Option<usize>,
    /// Requests that went through a worker to the end.
    pub served: u64,
    /// Requests holding a worker now.
    pub in_flight: usize,
    /// Most requests holding a worker at once (at most `workers`).
    pub max_in_flight: usize,
    /// Requests waiting for a worker now.
    pub queued: usize,
    /// Most requests waiting for a worker at once.
    pub max_queued: usize,
    /// Total worker time spent on requests (service time plus handler).
    pub busy: Duration,
    /// Total time requests spent waiting for a worker.
    pub queue_wait: Duration,
}

impl PoolStats {
    /// Fraction of the pool's capacity used over `elapsed`: busy worker time
    /// divided by `workers * elapsed`. `None` when unbounded or `elapsed`
    /// is zero.
    pub fn utilisation(&self, elapsed: Duration) -> Option<f64> {
        let workers = self.workers? as f64;
        let secs = elapsed.as_secs_f64();
        (secs > 0.0).then(|| self.busy.as_secs_f64() / (workers * secs))
    }

    /// Mean wait for a worker per served request.
    pub fn mean_queue_wait(&self) -> Duration {
        u32::try_from(self.served)
            .ok()
            .filter(|n| *n > 0)
            .map_or(Duration::ZERO, |n| self.queue_wait / n)
    }

    /// `{"workers", "served", "in_flight", "max_in_flight", "queued",
    /// "max_queued", "busy_us", "queue_wait_us"}` (durations in
    /// microseconds).
    pub fn to_json(&self) -> Value {
        json!({
            "workers": self.workers,
            "served": self.served,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "queued": self.queued,
            "max_queued": self.max_queued,
            "busy_us": micros(self.busy),
            "queue_wait_us": micros(self.queue_wait),
        })
    }
}

/// A duration in whole microseconds (for JSON: integers survive a round
/// trip through any JSON parser, floats not always).
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A bounded (or unbounded) pool of workers with per-route service times.
#[derive(Debug)]
pub struct WorkerPool {
    workers: Option<usize>,
    permits: Option<Arc<Semaphore>>,
    /// Service time by route key (`"GET /api/invoices/{id}"`); routes not
    /// listed cost nothing. `HEAD` requests use their `GET` route's time.
    service: Mutex<HashMap<String, Duration>>,
    stats: Mutex<PoolStats>,
    /// Whether work continues when its client has gone.
    finish_after_disconnect: AtomicBool,
}

impl WorkerPool {
    /// A pool of `workers` workers (`None` = unbounded; `Some(0)` is
    /// treated as 1).
    pub fn new(workers: Option<usize>) -> Arc<WorkerPool> {
        let workers = workers.map(|w| w.max(1));
        Arc::new(WorkerPool {
            workers,
            permits: workers.map(|w| Arc::new(Semaphore::new(w))),
            service: Mutex::new(HashMap::new()),
            stats: Mutex::new(PoolStats {
                workers,
                ..PoolStats::default()
            }),
            finish_after_disconnect: AtomicBool::new(false),
        })
    }

    /// Whether a request's work (its wait for a worker, its service time
    /// and its handler) continues to the end when its client times out or
    /// disconnects, as PHP-FPM behind nginx does (`true`), or is dropped
    /// with the connection (`false`, the default).
    pub fn set_finish_after_disconnect(&self, on: bool) {
        self.finish_after_disconnect.store(on, Ordering::SeqCst);
    }

    /// See [`WorkerPool::set_finish_after_disconnect`].
    pub fn finish_after_disconnect(&self) -> bool {
        self.finish_after_disconnect.load(Ordering::SeqCst)
    }

    /// The bound (`None` = unbounded).
    pub fn workers(&self) -> Option<usize> {
        self.workers
    }

    /// Replaces the service times (route key -> time). Requests already
    /// being served keep theirs.
    pub fn set_service_times<I: IntoIterator<Item = (String, Duration)>>(&self, times: I) {
        *lock(&self.service) = times.into_iter().collect();
    }

    /// The service time of a request on route `key`.
    pub fn service_time(&self, key: &str) -> Duration {
        let service = lock(&self.service);
        service
            .get(key)
            .or_else(|| {
                key.strip_prefix("HEAD ")
                    .and_then(|path| service.get(&format!("GET {path}")))
            })
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> PoolStats {
        lock(&self.stats).clone()
    }

    /// Zeroes the totals; the gauges (in flight, queued) stay, and become
    /// the new maxima.
    pub fn reset_stats(&self) {
        let mut s = lock(&self.stats);
        *s = PoolStats {
            workers: s.workers,
            in_flight: s.in_flight,
            max_in_flight: s.in_flight,
            queued: s.queued,
            max_queued: s.queued,
            ..PoolStats::default()
        };
    }

    fn enter_queue(self: &Arc<Self>) -> Queued {
        let mut s = lock(&self.stats);
        s.queued += 1;
        s.max_queued = s.max_queued.max(s.queued);
        Queued {
            pool: self.clone(),
            since: Instant::now(),
        }
    }
}

/// A request waiting for a worker; becomes [`Busy`] once it has one.
struct Queued {
    pool: Arc<WorkerPool>,
    since: Instant,
}

impl Queued {
    fn start(self) -> Busy {
        let pool = self.pool.clone();
        {
            let mut s = lock(&pool.stats);
            s.queue_wait += self.since.elapsed();
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
        }
        // `self` leaves the queue on drop, below.
        Busy {
            pool,
            since: Instant::now(),
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        let mut s = lock(&self.pool.stats);
        s.queued = s.queued.saturating_sub(1);
    }
}

/// A request holding a worker; accounted for on drop.
struct Busy {
    pool: Arc<WorkerPool>,
    since: Instant,
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = lock(&self.pool.stats);
        s.in_flight = s.in_flight.saturating_sub(1);
        s.served += 1;
        s.busy += self.since.elapsed();
    }
}

/// Takes a worker, spends the route's service time (plus any
/// [`ExtraWork`]), runs the handler; in a task of its own when work must
/// finish after a disconnect. Install with
/// `axum::middleware::from_fn_with_state(pool, pool_middleware)` via
/// `Router::layer` (so that the matched route is known).
pub async fn pool_middleware(
    State(pool): State<Arc<WorkerPool>>,
    req: Request,
    next: Next,
) -> Response {
    let extra = req
        .extensions()
        .get::<ExtraWork>()
        .map_or(Duration::ZERO, |e| e.0);
    let service = pool.service_time(&route_key(&req)).saturating_add(extra);
    if !pool.finish_after_disconnect() {
        // Dropped with the connection if the client leaves.
        return work(pool, service, req, next).await;
    }
    // Served to the end even if the client hangs up meanwhile.
    match tokio::spawn(work(pool, service, req, next)).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(error = %e, "sandbox worker task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// One request's work: wait for a worker, hold it for `service`, run the
/// handler.
async fn work(pool: Arc<WorkerPool>, service: Duration, req: Request, next: Next) -> Response {
    let queued = pool.enter_queue();
    let _permit = match &pool.permits {
        Some(sem) => match sem.clone().acquire_owned().await {
            Ok(p) => Some(p),
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        },
        None => None,
    };
    // Declared after the permit: dropped (accounted) before the permit
    // goes back, so `in_flight` never exceeds the bound.
    let _busy = queued.start();
    if !service.is_zero() {
        tokio::time::sleep(service).await;
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_times_and_stats() {
        let pool = WorkerPool::new(Some(0));
        assert_eq!(pool.workers(), Some(1));
        pool.set_service_times([("GET /a".to_string(), Duration::from_millis(5))]);
        assert_eq!(pool.service_time("GET /a"), Duration::from_millis(5));
        assert_eq!(pool.service_time("HEAD /a"), Duration::from_millis(5));
        assert_eq!(pool.service_time("POST /a"), Duration::ZERO);

        let s = PoolStats {
            workers: Some(4),
            served: 4,
            busy: Duration::from_secs(2),
            queue_wait: Duration::from_secs(1),
            ..PoolStats::default()
        };
        assert_eq!(s.utilisation(Duration::from_secs(1)), Some(0.5));
        assert_eq!(s.utilisation(Duration::ZERO), None);
        assert_eq!(s.mean_queue_wait(), Duration::from_millis(250));
        assert_eq!(s.to_json()["busy_us"], json!(2_000_000));
        let unbounded = PoolStats::default();
        assert_eq!(unbounded.utilisation(Duration::from_secs(1)), None);
        assert_eq!(unbounded.mean_queue_wait(), Duration::ZERO);
    }
}
