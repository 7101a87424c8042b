//! Windows: console control events, %ProgramData%\pos-connector, and the
//! Service Control Manager (through the `windows-service` crate): the
//! dispatcher that turns Stop / Shutdown / Preshutdown into the shutdown
//! future `run` takes, and install / uninstall / start / stop / status.

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState as ScmState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager as Scm, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::{InstallOptions, ServiceError, ServiceState, Stream};

/// The service's name in the SCM.
pub(crate) const SERVICE_NAME: &str = "pos-connector";
const DISPLAY_NAME: &str = "pos-connector (point-of-sale e-invoicing agent)";
const DESCRIPTION: &str = "Turns every sale of this till into a JoFotara e-invoice through the \
     shop's invoicing backend. Config and data: %ProgramData%\\pos-connector.";
/// How long Windows is told to wait for a stop (the pipeline's grace plus
/// margin).
const STOP_WAIT_HINT: Duration = Duration::from_secs(30);

/// The Service Control Manager's stop request (Stop, Shutdown, Preshutdown);
/// a `Notify` keeps a request that comes before anyone waits.
fn scm_stop() -> &'static Notify {
    static STOP: OnceLock<Notify> = OnceLock::new();
    STOP.get_or_init(Notify::new)
}

/// True while running under the SCM: a user logging off must not stop the
/// service (Windows sends CTRL_LOGOFF_EVENT to services too).
static UNDER_SCM: AtomicBool = AtomicBool::new(false);

/// True once the SCM asked the service to stop: an error on the way out is
/// then reported as the stop's exit code, never as a crash to recover from.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C, Ctrl-Break, the console window closed, logoff (console runs
/// only) and system shutdown, and the SCM's Stop / Shutdown / Preshutdown,
/// all stop `run` cleanly. Windows gives a console program a few seconds
/// after close/logoff/shutdown before it kills it.
pub(super) fn shutdown_signal() -> impl Future<Output = ()> {
    let mut events = console_events(UNDER_SCM.load(Ordering::SeqCst));
    events.push(("service stop", Box::pin(scm_stop().notified())));
    async move {
        let which = first_of(events).await;
        tracing::debug!(event = which, "stop event");
    }
}

/// A stop event the agent waits for, by name.
type Event = (&'static str, Pin<Box<dyn Future<Output = ()> + Send>>);

/// Registers the console control handlers now (so an event during the
/// start is not lost to the default action, an immediate exit). Under the
/// SCM logoff is left out: a user logging off must not stop the service
/// (Windows sends CTRL_LOGOFF_EVENT to services too). A handler that
/// cannot be registered is left out too (nothing to wait for).
fn console_events(under_scm: bool) -> Vec<Event> {
    use tokio::signal::windows;
    fn event<T, F>(name: &'static str, stream: std::io::Result<T>, recv: F) -> Option<Event>
    where
        T: Send + 'static,
        F: for<'a> Fn(&'a mut T) -> Pin<Box<dyn Future<Output = Option<()>> + Send + 'a>>
            + Send
            + 'static,
    {
        let mut stream = stream.ok()?;
        Some((
            name,
            Box::pin(async move {
                if recv(&mut stream).await.is_none() {
                    // The handler went away: nothing will come from it.
                    std::future::pending::<()>().await;
                }
            }),
        ))
    }
    [
        event("Ctrl-C", windows::ctrl_c(), |s| Box::pin(s.recv())),
        event("Ctrl-Break", windows::ctrl_break(), |s| Box::pin(s.recv())),
        event("console closed", windows::ctrl_close(), |s| {
            Box::pin(s.recv())
        }),
        if under_scm {
            None
        } else {
            event("logoff", windows::ctrl_logoff(), |s| Box::pin(s.recv()))
        },
        event("system shutdown", windows::ctrl_shutdown(), |s| {
            Box::pin(s.recv())
        }),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Waits for the first of `events`; its name.
async fn first_of(mut events: Vec<Event>) -> &'static str {
    std::future::poll_fn(move |cx| {
        for (name, event) in events.iter_mut() {
            if event.as_mut().poll(cx).is_ready() {
                return Poll::Ready(*name);
            }
        }
        Poll::Pending
    })
    .await
}

/// The Event Log, for the service's warnings and errors. Opening works
/// whether or not the source is registered (an unregistered one logs with
/// a generic description).
pub(super) fn system_log_layer<S>() -> Option<Box<dyn tracing_subscriber::Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let source = super::win_eventlog::EventSource::open().ok()?;
    Some(super::win_eventlog::layer_with(std::sync::Arc::new(source)).boxed())
}

/// There is no journal on Windows.
pub(super) fn stream_matches_journal(_stream: Stream, _journal: &str) -> bool {
    false
}

/// `%ProgramData%\pos-connector\config.json` (C:\ProgramData on every
/// Windows since Vista).
pub(super) fn system_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("ProgramData")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
    Some(base.join("pos-connector").join("config.json"))
}

// ------------------------------------------------------------ the dispatcher

type Body = Box<dyn FnOnce() -> u8 + Send>;
static BODY: Mutex<Option<Body>> = Mutex::new(None);
static EXIT: AtomicU8 = AtomicU8::new(0);

define_windows_service!(ffi_service_main, service_main);

/// Runs `body` (the agent, returning its exit code) under the SCM: the
/// dispatcher calls `service_main` on its own thread, which reports
/// Running, runs the body, and reports Stopped with the exit code. When the
/// process was not started by the SCM (error 1063) the body runs here.
pub(super) fn run_as_service(body: Body) -> u8 {
    *BODY.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
    UNDER_SCM.store(true, Ordering::SeqCst);
    match service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        Ok(()) => EXIT.load(Ordering::SeqCst),
        Err(_) => {
            UNDER_SCM.store(false, Ordering::SeqCst);
            let body = BODY.lock().unwrap_or_else(|e| e.into_inner()).take();
            body.map(|b| b()).unwrap_or(1)
        }
    }
}

/// What the SCM is told: state, the controls accepted while running, the
/// exit code once stopped.
fn status(state: ScmState, exit: u8) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ScmState::Running {
            // PRESHUTDOWN and SHUTDOWN are exclusive; Preshutdown comes
            // first and leaves the network up while in-flight calls finish.
            ServiceControlAccept::STOP | ServiceControlAccept::PRESHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code: if exit == 0 {
            ServiceExitCode::Win32(0)
        } else {
            ServiceExitCode::ServiceSpecific(u32::from(exit))
        },
        checkpoint: 0,
        wait_hint: if state == ScmState::StopPending {
            STOP_WAIT_HINT
        } else {
            Duration::ZERO
        },
        process_id: None,
    }
}

/// The SCM's controls, as the handler answers them (a function of its own
/// so tests can drive it): Stop, Shutdown and Preshutdown request the stop.
pub(crate) fn handle_control(control: ServiceControl) -> ServiceControlHandlerResult {
    match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            STOP_REQUESTED.store(true, Ordering::SeqCst);
            scm_stop().notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    }
}

fn service_main(_args: Vec<OsString>) {
    static HANDLE: OnceLock<service_control_handler::ServiceStatusHandle> = OnceLock::new();
    let registered = service_control_handler::register(SERVICE_NAME, |control| {
        let answer = handle_control(control);
        if matches!(
            control,
            ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown
        ) {
            if let Some(h) = HANDLE.get() {
                let _ = h.set_service_status(status(ScmState::StopPending, 0));
            }
        }
        answer
    });
    let Ok(handle) = registered else {
        EXIT.store(1, Ordering::SeqCst);
        return;
    };
    let _ = HANDLE.set(handle);
    let _ = handle.set_service_status(status(ScmState::Running, 0));
    let body = BODY.lock().unwrap_or_else(|e| e.into_inner()).take();
    let code = body.map(|b| b()).unwrap_or(1);
    EXIT.store(code, Ordering::SeqCst);
    if report_as_crash(code, STOP_REQUESTED.load(Ordering::SeqCst)) {
        // The SCM's recovery (restart after 5 s, 30 s, 60 s, then every 5
        // minutes) runs for a service that ends without reporting Stopped.
        // Reporting Stopped with an error code would need "failure actions
        // on non-crash failures", which restarts every code, 2 and 3 too;
        // ending here restarts exactly what systemd restarts. The reason is
        // already in the log and the Event Log (logging ended with `body`).
        std::process::exit(i32::from(code));
    }
    let _ = handle.set_service_status(status(ScmState::Stopped, code));
}

/// Whether the service ends as a crash (the SCM's recovery restarts it)
/// rather than reporting Stopped with its exit code: a failure that
/// `restart_after_exit` would restart, when nobody asked it to stop.
fn report_as_crash(exit: u8, stop_requested: bool) -> bool {
    super::restart_after_exit(exit) && !stop_requested
}

// ------------------------------------------------------- service management

/// Win32 errors the operator can act on.
const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_INVALID_LEVEL: i32 = 124;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_SERVICE_ALREADY_RUNNING: i32 = 1056;
const ERROR_SERVICE_EXISTS: i32 = 1073;

fn os_code(e: &windows_service::Error) -> Option<i32> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    }
}

/// The inner Windows error (the crate's own Display says only "IO error in
/// winapi call").
fn describe(e: &windows_service::Error) -> String {
    match e {
        windows_service::Error::Winapi(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

fn scm_error(what: &str, e: windows_service::Error) -> ServiceError {
    match os_code(&e) {
        Some(ERROR_ACCESS_DENIED) => ServiceError::Usage(format!(
            "{what}: access denied; run it from an Administrator command prompt"
        )),
        Some(ERROR_SERVICE_DOES_NOT_EXIST) => ServiceError::Usage(format!(
            "{what}: the service is not installed; run `pos-connector service install` first"
        )),
        _ => ServiceError::Failed(format!("{what}: {}", describe(&e))),
    }
}

/// The SCM on this machine (made with `default()`, as on Unix, where it
/// has settings).
#[derive(Default)]
pub(crate) struct ServiceManager {
    _private: (),
}

/// Restart after a failure three times quickly, then every 5 minutes:
/// Windows repeats the last action for every later failure; the count
/// resets after a day without one.
pub(crate) fn failure_actions() -> ServiceFailureActions {
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(5), restart(30), restart(60), restart(300)]),
    }
}

/// What `service install` registers: auto start, this exe with
/// `--config <abs> run --service`, LocalSystem unless an account is named.
pub(crate) fn service_info(opts: &InstallOptions) -> ServiceInfo {
    ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: opts.exe.clone(),
        launch_arguments: vec![
            "--config".into(),
            opts.config.clone().into_os_string(),
            "run".into(),
            "--service".into(),
        ],
        dependencies: vec![],
        account_name: opts.account.as_ref().map(OsString::from),
        account_password: opts.password.as_ref().map(OsString::from),
    }
}

impl ServiceManager {
    pub(crate) fn name(&self) -> &'static str {
        "Windows Service Control Manager"
    }

    fn connect(&self, access: ServiceManagerAccess) -> Result<Scm, ServiceError> {
        Scm::local_computer(None::<&str>, access)
            .map_err(|e| scm_error("cannot open the Service Control Manager", e))
    }

    pub(crate) fn install(
        &self,
        opts: &InstallOptions,
        writable: &[PathBuf],
    ) -> Result<Vec<String>, ServiceError> {
        // The data folder (the outbox, the secrets store) first: SYSTEM,
        // Administrators and the service account only.
        let mut done = Vec::new();
        if let Some(data) = writable.first() {
            std::fs::create_dir_all(data)
                .and_then(|_| super::restrict_folder(data, opts.account.as_deref()))
                .map_err(|e| {
                    ServiceError::Failed(format!(
                        "cannot restrict {} to SYSTEM, Administrators and the service account: {e}",
                        data.display()
                    ))
                })?;
            done.push(format!(
                "{} is open to SYSTEM, Administrators and {} only",
                data.display(),
                opts.account
                    .as_deref()
                    .unwrap_or("the service (LocalSystem)")
            ));
        }
        let scm =
            self.connect(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
        let access = ServiceAccess::CHANGE_CONFIG
            | ServiceAccess::START
            | ServiceAccess::STOP
            | ServiceAccess::QUERY_STATUS;
        let info = service_info(opts);
        let (service, restart) = match scm.create_service(&info, access) {
            Ok(service) => {
                done.push(format!(
                    "installed the service {SERVICE_NAME} ({}), running {} as {}",
                    DISPLAY_NAME,
                    opts.exe.display(),
                    opts.account.as_deref().unwrap_or("LocalSystem")
                ));
                (service, false)
            }
            // Installed before (by hand, or an older MSI): bring it up to
            // date instead of failing, so an MSI over a hand-installed
            // service does not roll back. A running service is stopped for
            // the change and started again with the new settings.
            Err(e) if os_code(&e) == Some(ERROR_SERVICE_EXISTS) => {
                let service = scm
                    .open_service(SERVICE_NAME, access)
                    .map_err(|e| scm_error("cannot open the installed service", e))?;
                let was_running = stop_and_wait(&service)?;
                service
                    .change_config(&info)
                    .map_err(|e| scm_error("cannot update the installed service", e))?;
                done.push(format!(
                    "updated the installed service {SERVICE_NAME}: it runs {} as {}{}",
                    opts.exe.display(),
                    opts.account.as_deref().unwrap_or("LocalSystem"),
                    if was_running {
                        " (it was stopped for the change)"
                    } else {
                        ""
                    }
                ));
                (service, was_running)
            }
            Err(e) => return Err(scm_error("cannot create the service", e)),
        };
        let _ = service.set_description(DESCRIPTION);
        super::win_eventlog::register_source(&opts.exe).map_err(|e| {
            ServiceError::Failed(format!(
                "cannot register the Event Log source {}: {e}",
                super::win_eventlog::SOURCE
            ))
        })?;
        done.push(format!(
            "registered the Event Log source {} (warnings and errors in the Application log)",
            super::win_eventlog::SOURCE
        ));
        service
            .update_failure_actions(failure_actions())
            .map_err(|e| scm_error("cannot set the restart-on-failure actions", e))?;
        done.push(
            "restarts on failure: after 5 s, 30 s, 60 s, then every 5 minutes \
             (not after exit 2 or 3: a person must act)"
                .into(),
        );
        // Delayed auto start and "failure actions on non-crash failures"
        // are not implemented by every SCM (Wine answers 124): say so.
        for (what, result) in [
            (
                "delayed automatic start",
                service.set_delayed_auto_start(true),
            ),
            // Off (also on a service installed by an older version): the
            // restarts come from `report_as_crash`, which spares exits 2
            // and 3 as systemd's unit does.
            (
                "recovery only for failures, not for exits 2 and 3",
                service.set_failure_actions_on_non_crash_failures(false),
            ),
            (
                "a 30 s preshutdown timeout",
                service.set_preshutdown_timeout(STOP_WAIT_HINT),
            ),
        ] {
            match result {
                Ok(()) => done.push(format!("set {what}")),
                Err(e) if os_code(&e) == Some(ERROR_INVALID_LEVEL) => {
                    done.push(format!("warning: this system does not support {what}"))
                }
                Err(e) => return Err(scm_error(&format!("cannot set {what}"), e)),
            }
        }
        if restart {
            service
                .start::<&str>(&[])
                .map_err(|e| scm_error("cannot start the updated service again", e))?;
            done.push("started it again with the new settings".into());
        }
        Ok(done)
    }

    pub(crate) fn uninstall(&self) -> Result<Vec<String>, ServiceError> {
        let scm = self.connect(ServiceManagerAccess::CONNECT)?;
        let service = scm
            .open_service(
                SERVICE_NAME,
                ServiceAccess::STOP | ServiceAccess::DELETE | ServiceAccess::QUERY_STATUS,
            )
            .map_err(|e| scm_error("cannot open the service", e))?;
        let mut done = Vec::new();
        if stop_and_wait(&service)? {
            done.push("stopped the service".to_string());
        }
        service
            .delete()
            .map_err(|e| scm_error("cannot delete the service", e))?;
        match super::win_eventlog::deregister_source() {
            Ok(true) => done.push(format!(
                "removed the Event Log source {} (its past entries stay in the log)",
                super::win_eventlog::SOURCE
            )),
            Ok(false) => {}
            Err(e) => done.push(format!(
                "warning: cannot remove the Event Log source {}: {e}",
                super::win_eventlog::SOURCE
            )),
        }
        done.push(format!(
            "removed the service {SERVICE_NAME}; data, logs and config are kept"
        ));
        Ok(done)
    }

    pub(crate) fn start(&self) -> Result<(), ServiceError> {
        let scm = self.connect(ServiceManagerAccess::CONNECT)?;
        let service = scm
            .open_service(
                SERVICE_NAME,
                ServiceAccess::START | ServiceAccess::QUERY_STATUS,
            )
            .map_err(|e| scm_error("cannot open the service", e))?;
        match service.start::<&str>(&[]) {
            // Already running is what the caller wants (`service install
            // --start` after an update that restarted it).
            Err(e) if os_code(&e) == Some(ERROR_SERVICE_ALREADY_RUNNING) => Ok(()),
            other => other.map_err(|e| scm_error("cannot start the service", e)),
        }
    }

    pub(crate) fn stop(&self) -> Result<(), ServiceError> {
        let scm = self.connect(ServiceManagerAccess::CONNECT)?;
        let service = scm
            .open_service(
                SERVICE_NAME,
                ServiceAccess::STOP | ServiceAccess::QUERY_STATUS,
            )
            .map_err(|e| scm_error("cannot open the service", e))?;
        stop_and_wait(&service).map(|_| ())
    }

    pub(crate) fn status(&self) -> Result<ServiceState, ServiceError> {
        let scm = self.connect(ServiceManagerAccess::CONNECT)?;
        let service = match scm.open_service(SERVICE_NAME, ServiceAccess::QUERY_STATUS) {
            Ok(s) => s,
            Err(e) if os_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
                return Ok(ServiceState::NotInstalled)
            }
            Err(e) => return Err(scm_error("cannot open the service", e)),
        };
        let now = service
            .query_status()
            .map_err(|e| scm_error("cannot query the service", e))?;
        Ok(match now.current_state {
            ScmState::Running => ServiceState::Running,
            ScmState::Stopped => ServiceState::Stopped,
            other => ServiceState::Other(format!("{other:?}")),
        })
    }
}

/// Asks a running service to stop and waits (up to the stop hint plus a
/// margin) until it has; true when it was running.
fn stop_and_wait(service: &windows_service::service::Service) -> Result<bool, ServiceError> {
    let now = service
        .query_status()
        .map_err(|e| scm_error("cannot query the service", e))?;
    if now.current_state == ScmState::Stopped {
        return Ok(false);
    }
    if now.current_state != ScmState::StopPending {
        service
            .stop()
            .map_err(|e| scm_error("cannot stop the service", e))?;
    }
    let deadline = std::time::Instant::now() + STOP_WAIT_HINT + Duration::from_secs(15);
    loop {
        let now = service
            .query_status()
            .map_err(|e| scm_error("cannot query the service", e))?;
        if now.current_state == ScmState::Stopped {
            return Ok(true);
        }
        if std::time::Instant::now() > deadline {
            return Err(ServiceError::Failed(format!(
                "the service did not stop within {} s (still {:?})",
                (STOP_WAIT_HINT + Duration::from_secs(15)).as_secs(),
                now.current_state
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_registers_auto_start_with_this_config_and_restarts_three_times_then_every_5_minutes()
    {
        let opts = InstallOptions {
            exe: PathBuf::from(r"C:\Program Files\pos-connector\pos-connector.exe"),
            config: PathBuf::from(r"C:\ProgramData\pos-connector\config.json"),
            account: None,
            password: None,
        };
        let info = service_info(&opts);
        assert_eq!(info.start_type, ServiceStartType::AutoStart);
        assert_eq!(info.account_name, None, "LocalSystem");
        assert_eq!(
            info.launch_arguments,
            vec![
                OsString::from("--config"),
                OsString::from(r"C:\ProgramData\pos-connector\config.json"),
                OsString::from("run"),
                OsString::from("--service"),
            ]
        );
        let actions = failure_actions().actions.unwrap();
        assert_eq!(actions.len(), 4);
        assert!(actions
            .iter()
            .all(|a| a.action_type == ServiceActionType::Restart));
        assert_eq!(actions[3].delay, Duration::from_secs(300));
    }

    #[test]
    fn only_failures_nobody_asked_for_end_as_a_crash_the_scm_restarts() {
        // Exit 1 or a panic while running: recovered like systemd's
        // Restart=on-failure.
        assert!(report_as_crash(1, false));
        assert!(report_as_crash(101, false));
        // A clean stop, exits 2 and 3, and anything after a requested stop
        // report Stopped with their code (no restart).
        for code in [0, 2, 3] {
            assert!(!report_as_crash(code, false), "{code}");
        }
        assert!(!report_as_crash(1, true));
    }

    #[tokio::test]
    async fn stop_shutdown_and_preshutdown_complete_the_shutdown_future() {
        for control in [
            ServiceControl::Stop,
            ServiceControl::Shutdown,
            ServiceControl::Preshutdown,
        ] {
            let stop = shutdown_signal();
            assert!(matches!(
                handle_control(control),
                ServiceControlHandlerResult::NoError
            ));
            tokio::time::timeout(Duration::from_secs(10), stop)
                .await
                .unwrap_or_else(|_| panic!("{control:?} did not stop run"));
        }
        assert!(matches!(
            handle_control(ServiceControl::Interrogate),
            ServiceControlHandlerResult::NoError
        ));
        assert!(matches!(
            handle_control(ServiceControl::Pause),
            ServiceControlHandlerResult::NotImplemented
        ));
    }

    #[tokio::test]
    async fn every_console_event_is_waited_for_and_logoff_only_outside_the_service() {
        let names = |under_scm| {
            console_events(under_scm)
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(false),
            [
                "Ctrl-C",
                "Ctrl-Break",
                "console closed",
                "logoff",
                "system shutdown"
            ]
        );
        assert_eq!(
            names(true),
            ["Ctrl-C", "Ctrl-Break", "console closed", "system shutdown"]
        );
    }

    #[tokio::test]
    async fn the_first_event_to_come_stops_run() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut events = console_events(false);
        events.push((
            "test event",
            Box::pin(async move {
                let _ = rx.await;
            }),
        ));
        let waiting = tokio::spawn(first_of(events));
        tx.send(()).unwrap();
        let which = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the event stops run")
            .unwrap();
        assert_eq!(which, "test event");
    }

    #[test]
    fn the_config_lives_under_programdata() {
        let p = system_config_path().unwrap();
        assert!(p.ends_with(r"pos-connector\config.json"), "{}", p.display());
    }
}
