//! `pos-connector run`: the long-running agent. It wires the parts
//! together and owns their lifetimes:
//!
//! - the outbox (`store.rs`), opened once, under a lock file so that two
//!   agents never work the same data folder;
//! - the intake: the inbox folder poller and the loopback HTTP server,
//!   both committing to the outbox through one [`Intake`]; the same server
//!   carries the status page and the local API (`server/`);
//! - the pipeline worker, woken by every commit;
//! - the receipt printer;
//! - the token keeper's background refresher, so the first sale of the
//!   morning never waits for a login;
//! - the QuickBooks pusher and its token refresher, when enabled;
//! - the fleet heartbeat, when `api_key` is set;
//! - systemd readiness and watchdog.
//!
//! Shutdown is passed in as a future (the signal handler in production, a
//! test's trigger in tests). On it, the agent stops taking work, lets
//! in-flight steps finish within `pipeline.shutdown_grace_seconds`, and
//! returns. A hard kill at any instant is safe too: that is the outbox's
//! job.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::Config;
use crate::heartbeat::Heartbeat;
use crate::intake::inbox::Inbox;
use crate::intake::receipts::{self, ReceiptPrinter};
use crate::intake::{self, Intake, OnCommit};
use crate::laravel;
use crate::pipeline::{Pipeline, PipelineSettings, StepHook};
use crate::quickbooks::{self, PushSettings, Pusher, QboCache};
use crate::retry::RetryPolicy;
use crate::server::api::{LocalApi, QboSide};
use crate::server::{self, ServerError};
use crate::store::{OutboxHandle, StoreError};
use crate::sync_interval::SyncInterval;
use crate::systemd;

/// The lock file that keeps a second agent off the same data folder.
pub(crate) const LOCK_FILE: &str = "agent.lock";

/// Why the service could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each variant's #[error] message is its doc")]
pub enum ServiceError {
    /// A setting only a subsystem can judge (`intake.mapping`): the CLI
    /// refuses it when loading; a library caller hears it here.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("another pos-connector is already running with the data folder {} (it holds {}); stop it first, or give this one its own data_dir", .dir.display(), LOCK_FILE)]
    AlreadyRunning { dir: PathBuf },
    #[error("cannot use the data folder {}: {source}", .dir.display())]
    DataDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("QuickBooks is enabled but cannot be set up: {0}")]
    QuickBooks(String),
}

impl ServiceError {
    /// The process exit code: 2 for what the operator's setup must fix.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServiceError::Config(_)
            | ServiceError::AlreadyRunning { .. }
            | ServiceError::Server(_)
            | ServiceError::DataDir { .. }
            | ServiceError::QuickBooks(_) => 2,
            ServiceError::Store(StoreError::TooNew { .. }) => 2,
            ServiceError::Store(_) => 1,
        }
    }
}

/// The QuickBooks side: the outbox queues pushes from `push_after` on,
/// and the pusher drains them, resolving customers and items from the
/// cache of the company's lists first.
async fn start_quickbooks(
    cfg: &Config,
    outbox: &OutboxHandle,
    clock: Arc<dyn Clock>,
) -> Result<(Pusher, QboCache), ServiceError> {
    let client = quickbooks::connect(cfg, clock.clone()).map_err(ServiceError::QuickBooks)?;
    let settings =
        PushSettings::from_config(&cfg.quickbooks, cfg.pipeline.max_backoff, cfg.sync_interval);
    let stage = settings.due_stage();
    outbox
        .call(move |o| {
            o.set_qbo_push_after(Some(stage));
            Ok(())
        })
        .await?;
    let cache = QboCache::open(
        outbox.clone(),
        client.clone(),
        cfg.quickbooks.cache_refresh,
        clock.clone(),
    )
    .await?;
    let pusher = Pusher::new(outbox.clone(), client, settings, clock).with_cache(cache.clone());
    Ok((pusher, cache))
}

/// Where the running agent can be reached (for tests).
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct Running {
    pub local_api: Option<std::net::SocketAddr>,
}

/// Runs the agent until `shutdown` completes: outbox, intake, pipeline, receipts, local API, token refresher and systemd, started and stopped here.
pub async fn run(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    run_with(cfg, clock, shutdown, |_| {}).await
}

/// [`run`], telling `started` where the parts listen once they do.
pub(crate) async fn run_with(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(&Running),
) -> Result<(), ServiceError> {
    run_on(cfg, clock, None, shutdown, started).await
}

/// [`run_with`], serving the local API on `listener` when one is given
/// instead of binding `local_api.bind`: a caller that bound the port
/// itself knows it before the agent starts and keeps it across restarts
/// (a test's QuickBooks redirect URI must name it). The listener's accept
/// queue is the caller's. It is dropped unused when the local API is off.
pub async fn run_on(
    cfg: &Config,
    clock: Arc<dyn Clock>,
    listener: Option<std::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(&Running),
) -> Result<(), ServiceError> {
    // Before anything starts: a mapping the intake cannot use would
    // otherwise read every file with the default one.
    intake::validate(cfg)?;
    let _lock = hold_lock(&cfg.data_dir)?;
    let outbox = OutboxHandle::open(&cfg.data_dir)?;
    // The inbox's polling interval; the backend may change it through the
    // heartbeat's answer.
    let sync = SyncInterval::new(cfg.sync_interval);
    let heartbeat = Heartbeat::from_config(cfg, outbox.clone(), sync.clone(), clock.clone());
    remove_stale_temp_files(&[&cfg.pdf_dir, &cfg.receipts.dir]);

    // The pipeline schedules its own retries in the outbox, so the client
    // makes one attempt per call (the 401 refresh-and-replay still applies).
    let client = laravel::connect(cfg, clock.clone(), RetryPolicy::once());
    let keeper = client.keeper().clone();
    let (pusher, cache) = if cfg.quickbooks.enabled {
        let (p, c) = start_quickbooks(cfg, &outbox, clock.clone()).await?;
        (Some(p), Some(c))
    } else {
        (None, None)
    };
    let on_step: Option<StepHook> = pusher.clone().map(|p| {
        Arc::new(move |job: &crate::store::Job| {
            if job.qbo.as_ref().is_some_and(|q| !q.is_pushed()) {
                p.wake();
            }
        }) as StepHook
    });
    let laravel_for_api = client.clone();
    let pipeline = Pipeline::new(
        outbox.clone(),
        client,
        PipelineSettings::from_config(cfg),
        clock.clone(),
        on_step,
    );
    let (printer, printer_task) = if cfg.receipts.enabled {
        let (p, t) = ReceiptPrinter::start(
            outbox.clone(),
            cfg.receipts.clone(),
            receipts::shop_name(cfg),
            clock.clone(),
        );
        (p, Some(t))
    } else {
        (ReceiptPrinter::disabled(), None)
    };
    let on_commit: OnCommit = {
        let pipeline = pipeline.clone();
        let printer = printer.clone();
        Arc::new(move |job| {
            printer.print(job);
            pipeline.wake();
        })
    };
    let intake = Intake::new(
        outbox.clone(),
        intake::options_from_config(cfg),
        clock.clone(),
        on_commit,
    );
    // Without a key the local API could only refuse: it is not started.
    let listener = if cfg.local_api.enabled && cfg.local_api.api_key.is_some() {
        Some(match listener {
            Some(given) => adopt_listener(given, cfg)?,
            None => server::bind(&cfg.local_api).await?,
        })
    } else {
        None
    };
    let running = Running {
        local_api: listener.as_ref().and_then(|l| l.local_addr().ok()),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = JoinSet::new();
    {
        let p = pipeline.clone();
        let s = stopped();
        tasks.spawn(async move { p.run(s).await });
    }
    {
        let inbox = Inbox::new(
            cfg.invoice_folder.clone(),
            intake.clone(),
            sync.clone(),
            cfg.intake.settle,
            clock.clone(),
        );
        let s = stopped();
        tasks.spawn(async move { inbox.run(s).await });
    }
    {
        let k = keeper.clone();
        let s = stopped();
        tasks.spawn(async move { k.keep_fresh(s).await });
    }
    if let Some(listener) = listener {
        let on_retry: Arc<dyn Fn() + Send + Sync> = {
            let pipeline = pipeline.clone();
            let pusher = pusher.clone();
            Arc::new(move || {
                pipeline.wake();
                if let Some(p) = &pusher {
                    p.wake();
                }
            })
        };
        let mut local = LocalApi::new(
            cfg,
            clock.clone(),
            outbox.clone(),
            laravel_for_api,
            on_retry,
        )
        .with_sync_interval(sync.clone())
        .with_pipeline(pipeline.clone());
        if let Some(hb) = heartbeat.clone() {
            local = local.with_heartbeat(Arc::new(move || {
                serde_json::to_value(hb.status()).expect("serialises")
            }));
        }
        if let (Some(p), Some(c)) = (&pusher, &cache) {
            let oauth =
                quickbooks::OAuthClient::from_config(&cfg.quickbooks, quickbooks::http_client(cfg))
                    .map_err(ServiceError::QuickBooks)?
                    .with_stats(p.client().stats().clone());
            local = local.with_quickbooks(QboSide::new(
                p.client().clone(),
                oauth,
                p.clone(),
                c.clone(),
            ));
        }
        let app = server::app(local, intake.clone(), &cfg.local_api);
        let options = server::ServeOptions::from_config(cfg);
        tasks.spawn(server::serve(listener, app, options, stopped()));
    }
    if let Some(c) = cache {
        let s = stopped();
        tasks.spawn(async move { c.run(s).await });
    }
    if let Some(p) = pusher {
        let k = p.client().keeper().clone();
        let s = stopped();
        tasks.spawn(async move { k.keep_fresh(s).await });
        let s = stopped();
        tasks.spawn(async move { p.run(s).await });
    }
    if let Some(hb) = heartbeat {
        let s = stopped();
        tasks.spawn(async move { hb.run(s).await });
    }
    if let Some(every) = systemd::watchdog_interval() {
        let outbox = outbox.clone();
        let s = stopped();
        tasks.spawn(async move { watchdog(outbox, every, s).await });
    }

    let st = keeper.status();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        backend = %cfg.base_url,
        email = %cfg.email,
        has_token = st.has_token,
        inbox = %cfg.invoice_folder.display(),
        local_api = ?running.local_api,
        outbox = %outbox.path().display(),
        "pos-connector running"
    );
    systemd::ready("taking sales");
    started(&running);

    shutdown.await;
    systemd::stopping();
    tracing::info!("stopping: no new work is taken");
    let _ = stop_tx.send(true);
    let deadline = cfg.pipeline.shutdown_grace + Duration::from_secs(5);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(deadline, drain).await.is_err() {
        tracing::warn!("some tasks did not stop in time; abandoning them");
        tasks.shutdown().await;
    }
    drop(printer);
    drop(intake);
    if let Some(t) = printer_task {
        // A receipt mid-render may finish; a missing one is printed at the
        // next start.
        if tokio::time::timeout(Duration::from_secs(2), t)
            .await
            .is_err()
        {
            tracing::debug!("receipt printer still busy at shutdown");
        }
    }
    tracing::info!("pos-connector stopped");
    Ok(())
}

/// The service running on a task of the current runtime: how the demo,
/// the tests and the benchmarks run it.
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct Spawned {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServiceError>>,
    pub running: Running,
}

impl Spawned {
    /// Starts the service and waits until it takes work (or failed to).
    pub async fn start(cfg: &Config, clock: Arc<dyn Clock>) -> Result<Spawned, ServiceError> {
        Spawned::launch(cfg, clock, None).await
    }

    /// [`Spawned::start`], the local API served on `listener` (see
    /// [`run_on`]); `local_api.bind` is not bound.
    pub async fn start_with_listener(
        cfg: &Config,
        clock: Arc<dyn Clock>,
        listener: std::net::TcpListener,
    ) -> Result<Spawned, ServiceError> {
        Spawned::launch(cfg, clock, Some(listener)).await
    }

    async fn launch(
        cfg: &Config,
        clock: Arc<dyn Clock>,
        listener: Option<std::net::TcpListener>,
    ) -> Result<Spawned, ServiceError> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let cfg = cfg.clone();
        let task = tokio::spawn(async move {
            run_on(
                &cfg,
                clock,
                listener,
                async {
                    let _ = stop_rx.await;
                },
                move |r| {
                    let _ = started_tx.send(r.clone());
                },
            )
            .await
        });
        match started_rx.await {
            Ok(running) => Ok(Spawned {
                stop: Some(stop_tx),
                task,
                running,
            }),
            // It returned before starting: that is its error.
            Err(_) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => unreachable!("the service cannot end cleanly before starting"),
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
        }
    }

    /// Stops it as SIGTERM would, and waits for the end.
    pub async fn stop(mut self) -> Result<(), ServiceError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Pings systemd's watchdog while the outbox's thread answers: a wedged
/// database or runtime stops the pings and systemd restarts the agent.
async fn watchdog(outbox: OutboxHandle, every: Duration, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    loop {
        let alive = tokio::time::timeout(every, outbox.call(|_| Ok(()))).await;
        if matches!(alive, Ok(Ok(()))) {
            systemd::watchdog_ping();
        } else {
            tracing::error!("outbox not answering; withholding the watchdog ping");
        }
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// A listener bound by the caller, made ready for the runtime (tokio
/// needs it non-blocking).
fn adopt_listener(
    listener: std::net::TcpListener,
    cfg: &Config,
) -> Result<tokio::net::TcpListener, ServiceError> {
    let addr = listener.local_addr().unwrap_or(cfg.local_api.bind);
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|source| ServiceError::Server(ServerError::Bind { addr, source }))
}

/// Takes the data folder's lock file for the life of the returned handle.
fn hold_lock(dir: &Path) -> Result<fs::File, ServiceError> {
    let file = crate::fsutil::open_lock_file(&dir.join(LOCK_FILE)).map_err(|source| {
        ServiceError::DataDir {
            dir: dir.to_path_buf(),
            source,
        }
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(ServiceError::AlreadyRunning {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(source)) => Err(ServiceError::DataDir {
            dir: dir.to_path_buf(),
            source,
        }),
    }
}

/// Removes the temporary files a kill left behind in the folders the
/// agent writes (`.tmp-*.part`, see `fsutil::AtomicFile`). They are ours
/// and incomplete by construction; final files are never touched.
fn remove_stale_temp_files(dirs: &[&Path]) {
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-") && name.ends_with(".part") {
                if let Err(err) = fs::remove_file(e.path()) {
                    tracing::debug!(file = %e.path().display(), error = %err, "cannot remove a stale temporary file");
                }
            }
        }
    }
}

/// The stop request of this system (signals, console events, the service
/// manager): see [`crate::platform::shutdown_signal`].
pub(crate) use crate::platform::shutdown_signal;
