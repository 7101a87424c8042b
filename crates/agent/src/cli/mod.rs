//! The command line: clap definitions, and each command's output (one human
//! line, or the backend's JSON with `--json`). Exit codes: 0 ok, 1 the
//! operation failed, 2 usage or configuration error, 3 a person must act
//! (wrong password, disabled account, rejected token).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::clock::SystemClock;
use crate::config::{self, Config, LogLevel};
use crate::laravel::auth::{PasswordStore, SetupError};
use crate::laravel::{
    self, auth, ApiError, CreateOutcome, DocumentKind, LaravelClient, NewInvoice,
};
use crate::logging::{self, Console, LogGuard};
use crate::retry::RetryPolicy;
use crate::secret;
use crate::{demo, service, token_check};

mod install;
mod qbo;
mod queue;
mod status;
mod submit;

pub(crate) use install::ServiceCommand;

pub(crate) use qbo::QboCommand;

pub(crate) const EXIT_OK: u8 = 0;
pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_USAGE: u8 = 2;
pub(crate) const EXIT_NEEDS_PERSON: u8 = 3;
// The service managers must not restart after the two exits that need a
// person (the systemd unit's RestartPreventExitStatus, the Windows service's
// recovery): the list they follow is these two codes.
const _: () = assert!(
    crate::platform::NO_RESTART_EXITS[0] == EXIT_USAGE
        && crate::platform::NO_RESTART_EXITS[1] == EXIT_NEEDS_PERSON
);

#[derive(Debug, Parser)]
#[command(
    name = "pos-connector",
    version,
    about = "Turns every sale into a JoFotara e-invoice through the shop's Laravel invoicing backend",
    after_help = "Exit codes: 0 ok, 1 operation failed, 2 usage/config error, 3 needs a person (password, disabled account, QuickBooks reconnect)."
)]
pub(crate) struct Cli {
    /// Config file [default: config/config.json, then config.json, then the
    /// system's: /etc/pos-connector/config.json, %ProgramData%\pos-connector\config.json]
    #[arg(long, global = true, env = config::ENV_CONFIG_PATH, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// Print results as JSON (the backend's own JSON where there is one)
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Log level for this run (error, warn, info, debug, trace); overrides log_level
    #[arg(long, global = true, value_name = "LEVEL")]
    pub(crate) log_level: Option<String>,

    /// Prompt for the vendor password, verify it by logging in, and store it
    /// (then run the command, if one is given)
    #[arg(long, global = true)]
    pub(crate) setup_password: bool,

    /// With --setup-password: store the password in config.json (mode 0600)
    /// instead of the encrypted store
    #[arg(long, global = true)]
    pub(crate) in_config: bool,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the agent as a service (foreground; stops on SIGTERM / Ctrl-C,
    /// Ctrl-Break, console close, logoff and shutdown)
    Run {
        /// Started by the Windows Service Control Manager (set by `service
        /// install`; reports to the SCM and stops on its Stop/Shutdown)
        #[arg(long, hide = true)]
        service: bool,
    },
    /// Register the agent with systemd or the Windows Service Control
    /// Manager, and start, stop, inspect or remove it
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Print the shell completion script for SHELL (bash, zsh, fish,
    /// powershell, elvish)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), as the packages install it
    #[command(hide = true)]
    Man,
    /// Show the agent's state: sign-in, QuickBooks link, queue, health
    /// (from the running service, else from what is on disk)
    Status,
    /// Validate the configuration and print it with secrets redacted
    CheckConfig,
    /// Prompt for the vendor password, verify it, and store it
    SetupPassword,
    /// Check the token lifecycle against the configured backend
    TestTokenRefresh {
        /// Also create, submit and download a real test invoice
        #[arg(long)]
        create_invoice: bool,
    },
    /// One-shot invoice operations against the backend
    #[command(subcommand)]
    Invoice(InvoiceCommand),
    /// Look at and release the jobs in the outbox
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Connect to QuickBooks Online, look after the connection, push invoices
    #[command(subcommand)]
    Qbo(QboCommand),
    /// Serve simulators of the Laravel backend and QuickBooks Online on
    /// 127.0.0.1: runs `pos-sandbox` (installed beside this binary) with
    /// these arguments; `pos-connector sandbox --help` shows its options
    #[command(disable_help_flag = true)]
    Sandbox {
        /// Arguments for pos-sandbox (--port, --latency, --workers, --qbo-port, ...)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
    /// Run a sale end to end against a sandbox started for the occasion
    Demo {
        /// Folder for the demo's config, state, logs and documents
        /// [default: a new folder under the system temp folder]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum InvoiceCommand {
    /// Create an invoice from a JSON sale (FILE, or - for standard input)
    Create {
        file: String,
        /// What to do when the invoice number already exists
        #[arg(long, value_enum, default_value_t = IfExists::Fail)]
        if_exists: IfExists,
    },
    /// Submit invoice ID to JoFotara (reads its status first: a submitted
    /// invoice is not sent again)
    Submit {
        id: u64,
        /// Send a rejected invoice to JoFotara again (after correcting it in
        /// the backend)
        #[arg(long)]
        resubmit: bool,
    },
    /// Show the status of invoice ID
    Status { id: u64 },
    /// Download the official PDF of invoice ID
    Pdf {
        id: u64,
        /// File or folder to save to [default: <pdf_dir>/invoice_<number>_<id>.pdf]
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Download the UBL XML sent to JoFotara for invoice ID
    Xml {
        id: u64,
        /// File or folder to save to [default: <pdf_dir>/invoice_<number>_<id>.xml]
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Show invoice ID with its items
    Show { id: u64 },
    /// Render the provisional receipt PDF of a sale: a POS export FILE, or
    /// a job in the outbox (its number or invoice number); no backend needed
    Render {
        #[arg(value_name = "FILE|ID")]
        source: String,
        /// File or folder to write to [default: receipts.dir/<invoice number>.pdf]
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// List jobs, newest first
    List {
        /// Only jobs in this state (queued, created, submitted, pdf_saved, done, retrying, parked)
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// At most this many
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one job (by its number or its invoice number) and its log
    Show {
        #[arg(value_name = "N")]
        job: String,
    },
    /// Make a parked or waiting job due now
    Retry {
        #[arg(
            value_name = "N",
            required_unless_present = "all_parked",
            conflicts_with = "all_parked"
        )]
        job: Option<String>,
        /// Release every parked job
        #[arg(long)]
        all_parked: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum IfExists {
    /// Exit 1 when the invoice number is already taken
    Fail,
    /// Exit 0 when the invoice number is already taken
    Ok,
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_FAILED,
            message: message.into(),
        }
    }
    pub(crate) fn needs_person(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_NEEDS_PERSON,
            message: message.into(),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure::usage(e.to_string())
    }
}

impl From<secret::SecretError> for Failure {
    fn from(e: secret::SecretError) -> Self {
        Failure::failed(e.to_string())
    }
}

type Outcome = Result<(), Failure>;

/// How long the end of a command waits for the runtime's blocking threads
/// (everything that matters is committed by then).
const RUNTIME_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Entry point used by the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    crate::trim::limit_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let json = cli.json;
    if matches!(cli.command, Some(Command::Run { service: true })) {
        // Under the Windows SCM the agent runs on the dispatcher's thread.
        let code = crate::platform::run_as_service(move || {
            let code = match runtime.block_on(dispatch(cli)) {
                Ok(()) => EXIT_OK,
                Err(f) => {
                    eprintln!("error: {}", f.message);
                    f.code
                }
            };
            // The SCM hears "stopped" only after this returns: do not wait
            // for blocking threads still in a call (a DNS lookup that
            // hangs without a network), as dropping the runtime would.
            runtime.shutdown_timeout(RUNTIME_STOP_WAIT);
            code
        });
        return ExitCode::from(code);
    }
    let result = runtime.block_on(dispatch(cli));
    runtime.shutdown_timeout(RUNTIME_STOP_WAIT);
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(f) => {
            if json {
                println!(
                    "{}",
                    json!({"ok": false, "error": f.message, "exit_code": f.code})
                );
            }
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn log_level(cli: &Cli, cfg: Option<&Config>) -> Result<LogLevel, Failure> {
    match &cli.log_level {
        Some(s) => LogLevel::parse(s).ok_or_else(|| {
            Failure::usage(format!(
                "--log-level {s}: use error, warn, info, debug or trace"
            ))
        }),
        None => Ok(cfg.map(|c| c.log_level).unwrap_or(LogLevel::Info)),
    }
}

fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let path = config::locate(
        cli.config.as_deref(),
        crate::platform::default_config_paths(),
    )?;
    load_checked(&path)
}

/// Loads with the process environment and checks what the subsystems own
/// (config holds plain data): a problem is a config error like any other.
pub(crate) fn load_checked(path: &std::path::Path) -> Result<Config, Failure> {
    let cfg = config::load(path)?;
    crate::intake::validate(&cfg)?;
    Ok(cfg)
}

/// Logs for commands that use the config: the daily files in `log_dir` at
/// the configured level, the console as given; then the config's warnings.
fn command_logging(
    cli: &Cli,
    cfg: &Config,
    console: Console,
    console_level: Option<LogLevel>,
) -> Result<LogGuard, Failure> {
    let level = log_level(cli, Some(cfg))?;
    let guard = logging::init(
        console,
        console_level.unwrap_or(level),
        Some((&cfg.log_dir, level, cfg.log_keep_files)),
    );
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(guard)
}

async fn dispatch(cli: Cli) -> Outcome {
    let wants_setup = cli.setup_password || matches!(cli.command, Some(Command::SetupPassword));
    if cli.in_config && !wants_setup {
        return Err(Failure::usage(
            "--in-config only goes with --setup-password",
        ));
    }
    match &cli.command {
        Some(Command::Completions { shell }) => return install::completions(*shell),
        Some(Command::Man) => return install::man(),
        Some(Command::Service(cmd)) if !wants_setup => {
            let _guard = logging::init(Console::Stderr, LogLevel::Warn, None);
            return install::service(&cli, cmd);
        }
        Some(Command::Sandbox { args }) => return run_sandbox(args),
        Some(Command::Demo { dir }) => return run_demo(&cli, dir.as_deref()).await,
        Some(Command::CheckConfig) if !wants_setup => return check_config(&cli),
        Some(Command::Queue(cmd)) if !wants_setup => {
            let cfg = load_config(&cli)?;
            let _guard = command_logging(&cli, &cfg, Console::Stderr, Some(LogLevel::Warn))?;
            // SQLite is blocking: keep it off the runtime's scheduler.
            return tokio::task::block_in_place(|| queue::queue(&cli, &cfg, cmd));
        }
        Some(Command::Invoice(InvoiceCommand::Render { source, out })) if !wants_setup => {
            let cfg = load_config(&cli)?;
            let _guard = command_logging(&cli, &cfg, Console::Stderr, Some(LogLevel::Warn))?;
            return tokio::task::block_in_place(|| {
                queue::render(&cli, &cfg, source, out.as_deref())
            });
        }
        _ => {}
    }
    if !wants_setup && cli.command.is_none() {
        return Err(Failure::usage(
            "no command given: try `pos-connector --help` (run, service, status, check-config, invoice, queue, qbo, test-token-refresh, sandbox, demo, completions)",
        ));
    }
    let cfg = load_config(&cli)?;
    if matches!(cli.command, Some(Command::Run { .. })) {
        // The service logs to stdout (journald) at the configured level.
        let _guard = command_logging(&cli, &cfg, Console::Stdout, None)?;
        if wants_setup {
            setup_password(&cli, &cfg).await?;
        }
        // A till idles most of the day: memory goes back after each busy
        // spell (here, not in `service::run`, which tests and benches
        // embed in processes of their own).
        tokio::spawn(crate::trim::run(std::future::pending::<()>()));
        return service::run(&cfg, Arc::new(SystemClock), service::shutdown_signal())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "the agent cannot run");
                Failure {
                    code: e.exit_code(),
                    message: e.to_string(),
                }
            });
    }
    // One-shot commands keep stdout for results: warnings to stderr.
    let _guard = command_logging(&cli, &cfg, Console::Stderr, Some(LogLevel::Warn))?;
    if wants_setup {
        setup_password(&cli, &cfg).await?;
    }
    let client = || laravel::connect(&cfg, Arc::new(SystemClock), RetryPolicy::default());
    match &cli.command {
        None | Some(Command::SetupPassword) => Ok(()),
        Some(Command::CheckConfig) => check_config(&cli),
        Some(Command::TestTokenRefresh { create_invoice }) => {
            test_token_refresh(&cli, &cfg, &client(), *create_invoice).await
        }
        Some(Command::Invoice(InvoiceCommand::Render { source, out })) => {
            queue::render(&cli, &cfg, source, out.as_deref())
        }
        Some(Command::Invoice(cmd)) => invoice(&cli, &cfg, &client(), cmd).await,
        Some(Command::Queue(cmd)) => queue::queue(&cli, &cfg, cmd),
        Some(Command::Qbo(cmd)) => qbo::qbo(&cli, &cfg, cmd).await,
        Some(Command::Status) => status::status(&cli, &cfg).await,
        Some(Command::Service(cmd)) => install::service(&cli, cmd),
        Some(
            Command::Run { .. }
            | Command::Sandbox { .. }
            | Command::Demo { .. }
            | Command::Completions { .. }
            | Command::Man,
        ) => {
            unreachable!("handled above")
        }
    }
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialise")
    );
}

// ---------------------------------------------------------------- check-config

fn check_config(cli: &Cli) -> Outcome {
    let _guard = logging::init(Console::Stderr, LogLevel::Warn, None);
    let cfg = load_config(cli)?;
    let origin = secret::password_origin(&cfg).map_err(|e| Failure::usage(e.to_string()))?;
    let view = config::redacted_view(&cfg, origin.unwrap_or("not set"));
    let mut problems = Vec::new();
    if origin.is_none() {
        problems.push(format!(
            "no password: run `pos-connector --setup-password` (or set {})",
            secret::ENV_PASSWORD
        ));
    }
    if cli.json {
        print_json(&json!({
            "ok": problems.is_empty(),
            "config": view,
            "warnings": cfg.warnings,
            "problems": problems,
        }));
    } else {
        println!(
            "config file: {} (relative paths in it resolve against {})",
            config::paths::absolute(&cfg.path).display(),
            config::paths::base_folder(&cfg.path).display()
        );
        if let Value::Object(map) = &view {
            for (k, v) in map {
                let shown = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                println!("  {k}: {shown}");
            }
        }
        for w in &cfg.warnings {
            println!("warning: {w}");
        }
    }
    if problems.is_empty() {
        if !cli.json {
            println!("config OK");
        }
        Ok(())
    } else {
        Err(Failure::usage(problems.join("; ")))
    }
}

// -------------------------------------------------------------- setup-password

async fn setup_password(cli: &Cli, cfg: &Config) -> Outcome {
    let password = secret::prompt_password(&format!("Password for {}: ", cfg.email))
        .map_err(|e| Failure::usage(format!("cannot read the password: {e}")))?;
    if secret::expose(&password).is_empty() {
        return Err(Failure::usage("no password given; nothing was stored"));
    }
    let store = if cli.in_config {
        PasswordStore::ConfigFile
    } else {
        PasswordStore::Encrypted
    };
    let saved = auth::verify_and_store_password(cfg, &password, store, Arc::new(SystemClock))
        .await
        .map_err(|e| match e {
            SetupError::Api(ApiError::InvalidCredentials { .. }) => Failure::needs_person(format!(
                "the backend refused this password for {}; nothing was stored. Check \"email\" in {} and try again",
                cfg.email,
                cfg.path.display()
            )),
            SetupError::Api(ApiError::Transport { detail, .. }) => Failure::failed(format!(
                "could not reach the backend at {} ({detail}); nothing was stored. Check base_url and the network, then try again",
                cfg.base_url
            )),
            SetupError::Api(other) => Failure::from(other),
            SetupError::Secret(e) => Failure::from(e),
            SetupError::Config(e) => Failure::failed(e.to_string()),
        })?;
    match store {
        PasswordStore::ConfigFile => println!(
            "password verified and written to {} (mode 0600, plain text: anyone who can read that file can read it)",
            saved.location.display()
        ),
        PasswordStore::Encrypted => println!(
            "password verified and stored encrypted in {}{}",
            saved.location.display(),
            if saved.removed_plaintext {
                format!("; the plain-text \"password\" was removed from {}", cfg.path.display())
            } else {
                String::new()
            }
        ),
    }
    Ok(())
}

// ---------------------------------------------------------- test-token-refresh

async fn test_token_refresh(
    cli: &Cli,
    cfg: &Config,
    client: &LaravelClient,
    create_invoice: bool,
) -> Outcome {
    let results = token_check::run_checks(client, &cfg.email, create_invoice, &cfg.pdf_dir).await;
    let passed = results.iter().filter(|r| r.passed).count();
    let failed = results.len() - passed;
    if cli.json {
        print_json(
            &json!({"ok": failed == 0, "passed": passed, "failed": failed, "checks": results}),
        );
    } else {
        println!("token refresh check against {}", cfg.base_url);
        for (i, r) in results.iter().enumerate() {
            println!(
                "{} {:>2}. {}: {}",
                if r.passed { "PASS" } else { "FAIL" },
                i + 1,
                r.name,
                r.detail
            );
        }
        println!("{passed} passed, {failed} failed");
    }
    if failed == 0 {
        Ok(())
    } else if results.iter().any(|r| r.needs_person) {
        Err(Failure::needs_person(format!(
            "{failed} check(s) failed; a person must act: {}",
            results
                .iter()
                .find(|r| r.needs_person)
                .map(|r| r.detail.clone())
                .unwrap_or_default()
        )))
    } else {
        Err(Failure::failed(format!("{failed} check(s) failed")))
    }
}

// --------------------------------------------------------------------- invoice

/// Reads one sale for `invoice create`, in any shape the inbox reads.
fn read_sale(cfg: &Config, file: &str) -> Result<NewInvoice, Failure> {
    let (name, bytes) = if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(|e| {
            Failure::usage(format!("cannot read the sale from standard input: {e}"))
        })?;
        ("stdin.json".to_string(), buf)
    } else {
        let bytes =
            std::fs::read(file).map_err(|e| Failure::usage(format!("cannot read {file}: {e}")))?;
        (file.to_string(), bytes)
    };
    let options = crate::intake::options_from_config(cfg);
    let sales = crate::intake::sale::parse_file(&name, &bytes, &options).map_err(|e| {
        Failure::usage(format!(
            "{} is not a valid sale:\n{e}",
            if file == "-" { "standard input" } else { file }
        ))
    })?;
    match sales.as_slice() {
        [one] => Ok(one.to_new_invoice()),
        many => Err(Failure::usage(format!(
            "{file} holds {} sales; `invoice create` takes one (drop the file into the inbox, or POST it to /v1/sales, to send them all)",
            many.len()
        ))),
    }
}

fn money(d: Option<rust_decimal::Decimal>) -> String {
    d.map(|d| format!("{:.2}", d.round_dp(2)))
        .unwrap_or_else(|| "?".into())
}

async fn invoice(cli: &Cli, cfg: &Config, client: &LaravelClient, cmd: &InvoiceCommand) -> Outcome {
    match cmd {
        InvoiceCommand::Create { file, if_exists } => {
            let sale = read_sale(cfg, file)?;
            match client.create_invoice(&sale).await? {
                CreateOutcome::Created(c) => {
                    if cli.json {
                        print_json(&c.raw);
                    } else {
                        println!(
                            "created invoice {} for {} (tax {}, total {}); status draft until submitted",
                            c.id,
                            sale.invoice_number,
                            money(c.tax_amount),
                            money(c.total_amount)
                        );
                    }
                    Ok(())
                }
                CreateOutcome::AlreadyExists { after_lost_answer } => {
                    let why = if after_lost_answer {
                        "an earlier attempt of this command reached the backend although its answer was lost"
                    } else {
                        "it was created before"
                    };
                    let message = format!(
                        "invoice number {} already exists in the backend ({why}); nothing new was created",
                        sale.invoice_number
                    );
                    if cli.json {
                        print_json(&json!({
                            "ok": *if_exists == IfExists::Ok,
                            "already_exists": true,
                            "invoice_number": sale.invoice_number,
                        }));
                    }
                    if *if_exists == IfExists::Ok {
                        if !cli.json {
                            println!("{message}");
                        }
                        Ok(())
                    } else {
                        Err(Failure::failed(format!(
                            "{message} (use --if-exists ok to treat this as success)"
                        )))
                    }
                }
            }
        }
        InvoiceCommand::Submit { id, resubmit } => {
            submit::submit(cli, cfg, client, *id, *resubmit).await
        }
        InvoiceCommand::Status { id } => {
            let (status, raw) = client.status(*id).await?;
            if cli.json {
                print_json(&raw);
            } else {
                println!("invoice {id}: {status}");
            }
            Ok(())
        }
        InvoiceCommand::Show { id } => {
            let inv = client.invoice(*id).await?;
            if cli.json {
                print_json(&inv.raw);
            } else {
                println!(
                    "invoice {} ({}) for {}: status {}, tax {}, total {}",
                    inv.id,
                    inv.invoice_number,
                    inv.customer_name.as_deref().unwrap_or("?"),
                    inv.status
                        .as_ref()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "?".into()),
                    money(inv.tax_amount),
                    money(inv.total_amount)
                );
                for l in &inv.items {
                    println!(
                        "  {} x {} at {} (tax {}, total {})",
                        l.quantity
                            .map(|q| q.normalize().to_string())
                            .unwrap_or_else(|| "?".into()),
                        l.item_name,
                        money(l.unit_price),
                        money(l.tax),
                        money(l.total)
                    );
                }
            }
            Ok(())
        }
        InvoiceCommand::Pdf { id, out } => {
            download(cli, cfg, client, *id, DocumentKind::Pdf, out.as_deref()).await
        }
        InvoiceCommand::Xml { id, out } => {
            download(cli, cfg, client, *id, DocumentKind::Xml, out.as_deref()).await
        }
        InvoiceCommand::Render { source, out } => queue::render(cli, cfg, source, out.as_deref()),
    }
}

async fn download(
    cli: &Cli,
    cfg: &Config,
    client: &LaravelClient,
    id: u64,
    kind: DocumentKind,
    out: Option<&Path>,
) -> Outcome {
    let d = client.download(id, None, kind, out, &cfg.pdf_dir).await?;
    if cli.json {
        print_json(&json!({"id": id, "path": d.path, "bytes": d.bytes}));
    } else {
        println!(
            "saved invoice {id} {} ({} bytes) to {}",
            if kind == DocumentKind::Pdf {
                "PDF"
            } else {
                "XML"
            },
            d.bytes,
            d.path.display()
        );
    }
    Ok(())
}

// --------------------------------------------------------------------- sandbox

/// `pos-connector sandbox ARGS`: the simulators live in their own binary
/// (the till's agent carries none of their code); this alias runs it from
/// beside the agent's own executable, so `cargo build` and both packages
/// keep the old command working.
fn run_sandbox(args: &[std::ffi::OsString]) -> Outcome {
    let exe = demo::sandbox_binary().map_err(Failure::usage)?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(args);
    #[cfg(unix)]
    {
        // Replace this process, so signals reach the simulators directly.
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        Err(Failure::failed(format!(
            "cannot run {}: {e}",
            exe.display()
        )))
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .map_err(|e| Failure::failed(format!("cannot run {}: {e}", exe.display())))?;
        match status.code() {
            Some(0) => Ok(()),
            Some(2) => Err(Failure::usage("pos-sandbox: usage error (see above)")),
            _ => Err(Failure::failed(format!("pos-sandbox ended: {status}"))),
        }
    }
}

// ------------------------------------------------------------------------ demo

async fn run_demo(cli: &Cli, dir: Option<&Path>) -> Outcome {
    let dir = demo::prepare_dir(dir)
        .map_err(|e| Failure::failed(format!("cannot create the demo folder: {e}")))?;
    let level = log_level(cli, None)?;
    let _guard = logging::init(
        Console::Stderr,
        LogLevel::Warn,
        Some((&dir.join("logs"), level.max_verbosity(LogLevel::Info), 14)),
    );
    demo::run(&dir, &mut std::io::stdout())
        .await
        .map_err(|e| Failure::failed(format!("demo failed: {e:#}")))
}

impl LogLevel {
    /// The more verbose of two levels.
    pub(crate) fn max_verbosity(self, other: LogLevel) -> LogLevel {
        fn rank(l: LogLevel) -> u8 {
            match l {
                LogLevel::Error => 0,
                LogLevel::Warn => 1,
                LogLevel::Info => 2,
                LogLevel::Debug => 3,
                LogLevel::Trace => 4,
            }
        }
        if rank(self) >= rank(other) {
            self
        } else {
            other
        }
    }
}
