//! `pos-sandbox`: serves the simulators of the Laravel invoicing backend
//! and QuickBooks Online on 127.0.0.1, for the demo, for integrators trying
//! the agent before the shop's backend is reachable, and for scripts.
//! Exit codes: 0 stopped on a signal, 1 could not listen, 2 usage.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pos_sandbox::quickbooks::{Rotation, SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET};
use pos_sandbox::{
    laravel::SANDBOX_API_KEY, LaravelSandbox, LaravelSandboxOptions, QuickbooksSandbox,
    QuickbooksSandboxOptions, SANDBOX_EMAIL, SANDBOX_PASSWORD,
};

#[derive(Debug, Parser)]
#[command(
    name = "pos-sandbox",
    version,
    about = "Simulators of the Laravel invoicing backend and QuickBooks Online, for trying and testing pos-connector"
)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one; the address is printed)
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Login email of the sandbox vendor
    #[arg(long, default_value = SANDBOX_EMAIL)]
    email: String,
    /// Password of the sandbox vendor
    #[arg(long, default_value = SANDBOX_PASSWORD)]
    password: String,
    /// Key of the connector channel (X-API-Key; the agent's "api_key")
    #[arg(long, default_value = SANDBOX_API_KEY, value_name = "KEY")]
    api_key: String,
    /// Make tokens expire this many minutes after login (default: never, like the real backend)
    #[arg(long, value_name = "MINUTES")]
    token_lifetime_minutes: Option<f64>,
    /// Service times: none, or realistic (login 120 ms, create 30, submit 300, status 15, pdf 200)
    #[arg(long, default_value = "none", value_name = "PROFILE")]
    latency: String,
    /// Serve API requests with at most this many workers, like PHP-FPM
    /// [default: 8 with --latency realistic, else unbounded]
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Finish a request's work (create, submit...) when its client timed out
    /// or disconnected, as PHP-FPM behind nginx does, so its effect lands
    /// after the client left; `--finish-after-disconnect=false` drops it
    /// with the connection [default: true with --latency realistic, else false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    finish_after_disconnect: Option<bool>,
    /// Port on 127.0.0.1 of the QuickBooks Online simulator (0 picks a free one)
    #[arg(long, default_value_t = 0)]
    qbo_port: u16,
    /// QuickBooks refresh-token rotation: strict (the previous token dies at
    /// once) or grace (it keeps working 24 hours, as Intuit documents)
    #[arg(long, default_value = "strict", value_name = "MODE")]
    qbo_rotation: String,
    /// Client ID of the app the QuickBooks simulator accepts
    #[arg(long, default_value = SANDBOX_CLIENT_ID, value_name = "ID")]
    qbo_client_id: String,
    /// Client secret of the app the QuickBooks simulator accepts
    #[arg(long, default_value = SANDBOX_CLIENT_SECRET, value_name = "SECRET")]
    qbo_client_secret: String,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> ExitCode {
    if args.api_key.trim().is_empty() {
        return usage("--api-key must not be empty");
    }
    let mut opts = LaravelSandboxOptions {
        api_key: args.api_key.clone(),
        ..LaravelSandboxOptions::default()
    };
    if let Some(user) = opts.users.first_mut() {
        user.email = args.email.clone();
        user.password = args.password.clone();
    }
    if let Some(m) = args.token_lifetime_minutes {
        if !(m > 0.0 && m.is_finite()) {
            return usage("--token-lifetime-minutes must be above 0");
        }
        opts.token_lifetime = Some(Duration::from_secs_f64(m * 60.0));
    }
    let (latency, default_workers) = match pos_sandbox::options_from_profile(&args.latency) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    opts.finish_after_disconnect = args.finish_after_disconnect.unwrap_or(!latency.is_none());
    opts.latency = latency;
    opts.workers = args.workers.or(default_workers);
    if opts.workers == Some(0) {
        return usage("--workers must be at least 1");
    }
    let rotation = match args.qbo_rotation.as_str() {
        "strict" => Rotation::Strict,
        "grace" => Rotation::Grace(Duration::from_secs(24 * 3600)),
        other => return usage(format!("--qbo-rotation {other}: use strict or grace")),
    };
    let bind = SocketAddr::from(([127, 0, 0, 1], args.port));
    let sandbox = match LaravelSandbox::start(bind, opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on {bind}: {e} (is another sandbox or backend running there? try --port 0)");
            return ExitCode::from(1);
        }
    };
    let qbo_bind = SocketAddr::from(([127, 0, 0, 1], args.qbo_port));
    let qbo = match QuickbooksSandbox::start(
        qbo_bind,
        QuickbooksSandboxOptions {
            rotation,
            client_id: args.qbo_client_id.clone(),
            client_secret: args.qbo_client_secret.clone(),
            ..Default::default()
        },
    )
    .await
    {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: cannot listen on {qbo_bind} for the QuickBooks simulator: {e} (try --qbo-port 0)");
            return ExitCode::from(1);
        }
    };
    println!("sandbox listening on {}", sandbox.base_url());
    println!("quickbooks simulator listening on {}", qbo.base_url());
    println!("  vendor login: {} / {}", args.email, args.password);
    println!(
        "  connector channel key (X-API-Key; config \"api_key\"): {}",
        args.api_key
    );
    println!("  control API: GET /__sandbox/stats, POST /__sandbox/faults, POST /__sandbox/tokens/revoke, POST /__sandbox/settings");
    println!(
        "  QuickBooks: config \"quickbooks\": {{\"auth_base\": \"{}\", \"api_base\": \"{}\", \"client_id\": \"{}\", \"client_secret\": \"{}\", \"income_account_id\": \"1\", \"tax_code\": \"TAX\"}}; company {} (authorize is approved at once)",
        qbo.auth_base(),
        qbo.api_base(),
        args.qbo_client_id,
        args.qbo_client_secret,
        qbo.realm_id()
    );
    println!("  stop with Ctrl-C");
    let _ = std::io::stdout().flush();
    stop_signal().await;
    sandbox.shutdown().await;
    drop(qbo);
    ExitCode::SUCCESS
}

/// Ctrl-C, and SIGTERM where there is one.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
