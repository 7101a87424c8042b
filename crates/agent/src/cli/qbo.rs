//! `pos-connector qbo ...`: connecting to QuickBooks Online, looking after
//! the connection, and pushing invoices by hand (catch-up). Exit 3 when a
//! person must (re)connect.

use std::io::{IsTerminal, Read};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local, Utc};
use clap::Subcommand;
use secrecy::SecretString;
use serde_json::{json, Value};

use super::{print_json, Cli, Failure, Outcome};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::quickbooks::oauth::{self, ConnectionStore, OAuthClient, QboConnection, QboToken};
use crate::quickbooks::{self, PushOutcome, PushSettings, Pusher};
use crate::server::callback::{self, ListenError};
use crate::status::QuickbooksLink;
use crate::store::{Job, OutboxHandle, Stage};
use crate::token::TokenError;

#[derive(Debug, Subcommand)]
pub(crate) enum QboCommand {
    /// Connect to a QuickBooks company: prints the authorize URL, then waits
    /// on the redirect URI's port for the browser to come back
    Connect {
        /// Give up after this many seconds
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        timeout: u64,
    },
    /// Exchange an authorization code obtained elsewhere (once per code)
    ExchangeCode {
        #[arg(long)]
        code: String,
        /// The company id (realmId) that came with the code
        #[arg(long)]
        realm: String,
    },
    /// Store existing tokens, read as JSON from standard input
    /// ({"refresh_token", "access_token", "realm_id", "expires_in", ...})
    SetTokens {
        /// The company id, if the JSON does not carry realm_id
        #[arg(long)]
        realm: Option<String>,
    },
    /// Refresh the access token now
    Refresh,
    /// Show the connection: company, expiries, last refresh, pushes
    Status,
    /// Revoke the connection at Intuit, then forget it here
    Disconnect {
        /// Forget the tokens here even if Intuit cannot be reached
        #[arg(long)]
        force: bool,
    },
    /// Push invoices to QuickBooks now (catch-up)
    Push {
        #[arg(
            value_name = "INVOICE_NUMBER",
            required_unless_present = "all_pending",
            conflicts_with = "all_pending"
        )]
        invoice: Option<String>,
        /// Every push that is waiting or retrying
        #[arg(long)]
        all_pending: bool,
    },
}

fn oauth_client(cfg: &Config) -> Result<OAuthClient, Failure> {
    OAuthClient::from_config(&cfg.quickbooks, quickbooks::http_client(cfg)).map_err(Failure::usage)
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.with_timezone(&Local).to_rfc3339())
        .unwrap_or_else(|| "unknown".into())
}

fn token_failure(e: TokenError) -> Failure {
    match e {
        TokenError::NeedsPerson { .. } => Failure::needs_person(e.to_string()),
        TokenError::Unavailable { .. } => Failure::failed(e.to_string()),
    }
}

/// Refuses a company other than the configured `quickbooks.realm_id`.
fn check_realm(cfg: &Config, realm: &str) -> Result<(), Failure> {
    match &cfg.quickbooks.realm_id {
        Some(expected) if expected != realm => Err(Failure::usage(format!(
            "the company approved (realmId {realm}) is not quickbooks.realm_id ({expected}); \
             connect to the right company, or change quickbooks.realm_id"
        ))),
        _ => Ok(()),
    }
}

fn connected(cli: &Cli, conn: &QboConnection, how: &str) {
    if cli.json {
        print_json(&json!({
            "connected": true,
            "realm_id": conn.token.realm_id,
            "access_expires_at": conn.token.expires_at,
            "refresh_expires_at": conn.token.refresh_expires_at,
            "hard_expires_at": conn.token.hard_expires_at,
        }));
    } else {
        println!(
            "QuickBooks connected ({how}): company {}, access token valid until {}",
            conn.token.realm_id,
            time(Some(conn.token.expires_at))
        );
    }
}

pub(crate) async fn qbo(cli: &Cli, cfg: &Config, cmd: &QboCommand) -> Outcome {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = ConnectionStore::new(&cfg.data_dir);
    match cmd {
        QboCommand::Connect { timeout } => {
            let oauth = oauth_client(cfg)?;
            let state = oauth::new_state();
            let url = oauth.authorize_url(&state);
            let redirect = oauth.redirect_uri().clone();
            let cb = callback::wait_for_callback(
                &redirect,
                &state,
                Duration::from_secs(*timeout),
                |addr| {
                    if cli.json {
                        print_json(&json!({ "authorize_url": url.as_str(), "listening": addr.to_string() }));
                    } else {
                        println!("Open this address in a browser and approve the connection:\n\n  {url}\n");
                        println!("Waiting for QuickBooks to come back to {redirect} (Ctrl-C to give up)...");
                    }
                    use std::io::Write;
                    let _ = std::io::stdout().flush();
                },
            )
            .await
            .map_err(|e| match e {
                ListenError::NotLocal(_) | ListenError::Bind { .. } => Failure::usage(e.to_string()),
                _ => Failure::failed(e.to_string()),
            })?;
            check_realm(cfg, &cb.realm_id)?;
            let conn = oauth::connect_with_code(&oauth, &store, &*clock, &cb.code, &cb.realm_id)
                .await
                .map_err(Failure::failed)?;
            connected(cli, &conn, "authorized in the browser");
            Ok(())
        }
        QboCommand::ExchangeCode { code, realm } => {
            check_realm(cfg, realm)?;
            let oauth = oauth_client(cfg)?;
            let conn = oauth::connect_with_code(&oauth, &store, &*clock, code, realm)
                .await
                .map_err(Failure::failed)?;
            connected(cli, &conn, "code exchanged");
            Ok(())
        }
        QboCommand::SetTokens { realm } => {
            let oauth = oauth_client(cfg)?;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::usage(format!("cannot read standard input: {e}")))?;
            let conn = tokens_from_json(&text, realm.as_deref(), oauth.client_id(), clock.now())?;
            check_realm(cfg, &conn.token.realm_id)?;
            let _lock = store.lock().await.map_err(Failure::failed)?;
            store.save(&conn).map_err(Failure::failed)?;
            connected(cli, &conn, "tokens stored");
            Ok(())
        }
        QboCommand::Refresh => {
            let keeper = oauth::keeper(
                &cfg.quickbooks,
                &cfg.data_dir,
                quickbooks::http_client(cfg),
                clock.clone(),
                crate::call_stats::CallStats::new("quickbooks"),
            )
            .map_err(Failure::usage)?;
            if store.load().map_err(Failure::failed)?.is_none() {
                return Err(Failure::needs_person(
                    "QuickBooks is not connected: run `pos-connector qbo connect`",
                ));
            }
            let lease = keeper.force_refresh().await.map_err(token_failure)?;
            if cli.json {
                print_json(
                    &json!({ "refreshed": true, "access_expires_at": lease.token.expires_at }),
                );
            } else {
                println!(
                    "QuickBooks token refreshed: valid until {}",
                    time(Some(lease.token.expires_at))
                );
            }
            Ok(())
        }
        QboCommand::Status => status(cli, cfg, &*clock).await,
        QboCommand::Disconnect { force } => {
            let oauth = oauth_client(cfg)?;
            match oauth::disconnect(&oauth, &store, *force)
                .await
                .map_err(Failure::failed)?
            {
                None => println!("QuickBooks is not connected; nothing to do"),
                Some(realm) if cli.json => {
                    print_json(&json!({ "connected": false, "realm_id": realm }))
                }
                Some(realm) => {
                    println!("QuickBooks disconnected: company {realm} revoked and forgotten")
                }
            }
            Ok(())
        }
        // clap requires INVOICE_NUMBER unless --all-pending.
        QboCommand::Push { invoice, .. } => push(cli, cfg, clock, invoice.as_deref()).await,
    }
}

/// Tokens given by hand: generous about key names, strict about what is
/// required.
fn tokens_from_json(
    text: &str,
    realm: Option<&str>,
    client_id: &str,
    now: DateTime<Utc>,
) -> Result<QboConnection, Failure> {
    let text = text.trim_start_matches('\u{feff}');
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Failure::usage(format!(
            "standard input is not JSON ({e}); give {{\"refresh_token\": \"...\", \"realm_id\": \"...\"}}"
        ))
    })?;
    let get = |keys: &[&str]| {
        keys.iter().find_map(|k| match v.get(*k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    };
    let refresh = get(&["refresh_token", "refreshToken"]).ok_or_else(|| {
        Failure::usage(
            "the JSON has no refresh_token: it is the one token the agent cannot do without",
        )
    })?;
    let realm_id = realm
        .map(str::to_string)
        .or_else(|| get(&["realm_id", "realmId", "realm", "company_id"]))
        .ok_or_else(|| {
            Failure::usage("no company id: add \"realm_id\" to the JSON or pass --realm")
        })?;
    let secs = |keys: &[&str]| get(keys).and_then(|s| s.parse::<i64>().ok());
    let access = get(&["access_token", "accessToken"]);
    let expires_at = match (&access, secs(&["expires_in"])) {
        (Some(_), Some(s)) => now + chrono::Duration::seconds(s),
        // Without a lifetime, refresh on first use.
        _ => now,
    };
    Ok(QboConnection {
        token: QboToken {
            access: SecretString::from(access.unwrap_or_default()),
            refresh: SecretString::from(refresh),
            realm_id,
            expires_at,
            obtained_at: now,
            refresh_expires_at: secs(&["x_refresh_token_expires_in", "refresh_token_expires_in"])
                .map(|s| now + chrono::Duration::seconds(s)),
            hard_expires_at: secs(&["x_refresh_token_hard_expires_in"])
                .map(|s| now + chrono::Duration::seconds(s)),
            durable: true,
        },
        client_id: client_id.to_string(),
        connected_at: now,
        last_refresh: None,
        reconnect_needed: None,
    })
}

async fn status(cli: &Cli, cfg: &Config, clock: &dyn Clock) -> Outcome {
    let pushes = tokio::task::block_in_place(|| {
        crate::store::Outbox::open(&cfg.data_dir).and_then(|o| o.qbo_counts())
    })
    .unwrap_or_default();
    let mut link = QuickbooksLink::read(cfg, clock.now(), pushes);
    // The rate budget is learned by the running service: ask it.
    let running = super::status::from_service(cfg).await;
    link.limiter = running.as_ref().and_then(|r| r.quickbooks.limiter.clone());
    if cli.json {
        let mut v = serde_json::to_value(&link).expect("serialises");
        v["connected"] = json!(link.is_connected());
        v["reconnect_needed"] = json!(link.reason.as_ref().filter(|_| !link.is_connected()));
        print_json(&v);
    } else {
        print!("{}", link_text(&link, running.is_some()));
    }
    let connected = link.is_connected();
    match link.reason.filter(|_| !connected) {
        Some(p) if link.state == "disabled" => Err(Failure::usage(format!(
            "{p}: set quickbooks.enabled to true to use it"
        ))),
        Some(p) => Err(Failure::needs_person(p)),
        None => Ok(()),
    }
}

/// `qbo status` for a person (local times; `pos-connector status` renders
/// the same `QuickbooksLink` in its own, UTC, layout).
fn link_text(link: &QuickbooksLink, service_running: bool) -> String {
    let mut s = String::new();
    use std::fmt::Write as _;
    let Some(realm) = &link.realm_id else {
        let _ = writeln!(s, "QuickBooks: not connected");
        return s;
    };
    let _ = writeln!(
        s,
        "QuickBooks: {} (company {realm}, {})",
        match link.state.as_str() {
            "connected" => "connected",
            "disabled" => "not enabled (quickbooks.enabled is false)",
            _ => "RECONNECT NEEDED",
        },
        link.environment
    );
    let _ = writeln!(
        s,
        "  access token: {} until {}",
        if link.access_valid {
            "valid"
        } else {
            "expired"
        },
        time(link.access_expires_at)
    );
    let _ = writeln!(
        s,
        "  refresh token expires: {} (rolling, renewed by each refresh)",
        time(link.refresh_expires_at)
    );
    let _ = writeln!(s, "  hard expiry: {}", time(link.hard_expires_at));
    let _ = writeln!(s, "  connected: {}", time(link.connected_at));
    match &link.last_refresh {
        Some(r) => {
            let _ = writeln!(
                s,
                "  last refresh: {} {}: {}",
                time(Some(r.at)),
                if r.ok { "ok" } else { "FAILED" },
                r.detail
            );
        }
        None => {
            let _ = writeln!(s, "  last refresh: none yet");
        }
    }
    let summary: Vec<String> = link
        .pushes
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    let _ = writeln!(
        s,
        "  pushes: {}",
        if summary.is_empty() {
            "none yet".into()
        } else {
            summary.join(", ")
        }
    );
    match &link.limiter {
        Some(l) => {
            let _ = writeln!(s, "  rate budget: {}", crate::status::limiter_line(l));
        }
        None if service_running => {}
        None => {
            let _ = writeln!(
                s,
                "  rate budget: learned by the running service (not running here); it starts at Intuit's limits and shrinks on 429s"
            );
        }
    }
    for w in &link.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    s
}

async fn push(cli: &Cli, cfg: &Config, clock: Arc<dyn Clock>, invoice: Option<&str>) -> Outcome {
    if !cfg.quickbooks.enabled {
        tracing::warn!("quickbooks.enabled is false: pushing by hand anyway; the service will not push on its own");
    }
    let client = quickbooks::connect(cfg, clock.clone()).map_err(Failure::usage)?;
    if let Some(why) = client.keeper().needs_person() {
        return Err(Failure::needs_person(why));
    }
    let outbox = OutboxHandle::open(&cfg.data_dir)?;
    let settings =
        PushSettings::from_config(&cfg.quickbooks, cfg.pipeline.max_backoff, cfg.sync_interval);
    let pusher = Pusher::new(outbox.clone(), client, settings.clone(), clock.clone());
    let jobs: Vec<Job> = match invoice {
        Some(key) => {
            let key = key.to_string();
            let now = clock.now();
            let job = outbox
                .call(move |o| {
                    let j = o
                        .find(&key)?
                        .ok_or_else(|| crate::store::StoreError::NoSuchJob(key.clone()))?;
                    Ok(o.qbo_queue(j.id, now)?.0)
                })
                .await?;
            if job.qbo.as_ref().is_some_and(|q| q.is_pushed()) {
                let id = job.qbo.and_then(|q| q.qbo_id).unwrap_or_default();
                if cli.json {
                    print_json(
                        &json!({ "invoice_number": job.invoice_number, "qbo_id": id, "already": true }),
                    );
                } else {
                    println!(
                        "{} is already in QuickBooks (invoice Id {id})",
                        job.invoice_number
                    );
                }
                return Ok(());
            }
            if job.stage < Stage::Created {
                return Err(Failure::failed(format!(
                    "{} is not yet an invoice at the backend (stage {}); it is pushed once created",
                    job.invoice_number,
                    job.stage.as_str()
                )));
            }
            vec![job]
        }
        None => outbox.call(|o| o.qbo_pending(usize::MAX)).await?,
    };
    if jobs.is_empty() {
        if cli.json {
            print_json(&json!({ "pushed": 0, "results": [] }));
        } else {
            println!("nothing waiting for QuickBooks");
        }
        return Ok(());
    }
    let bar = (!cli.json && std::io::stdout().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(jobs.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} invoices {msg} ({eta})")
                .expect("valid template"),
        );
        b
    });
    let mut results: Vec<(String, PushOutcome)> = Vec::new();
    let mut rest = jobs;
    while !rest.is_empty() {
        let take = rest.len().min(crate::quickbooks::model::BATCH_MAX);
        let chunk: Vec<Job> = rest.drain(..take).collect();
        let outcomes: Vec<(Job, PushOutcome)> = if chunk.len() > settings.batch_threshold {
            pusher.push_batch(chunk).await
        } else {
            let mut out = Vec::new();
            for j in chunk {
                let o = pusher.push_one(&j).await;
                out.push((j, o));
            }
            out
        };
        let stop = outcomes
            .iter()
            .any(|(_, o)| matches!(o, PushOutcome::Waiting(_)));
        for (job, o) in outcomes {
            if let Some(b) = &bar {
                b.inc(1);
            }
            results.push((job.invoice_number, o));
        }
        if stop {
            // Throttled or disconnected: the rest waits for the service.
            break;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let pushed = results
        .iter()
        .filter(|(_, o)| matches!(o, PushOutcome::Pushed { .. }))
        .count();
    if cli.json {
        let list: Vec<Value> = results
            .iter()
            .map(|(n, o)| match o {
                PushOutcome::Pushed { qbo_id, existed } => json!({"invoice_number": n, "outcome": "pushed", "qbo_id": qbo_id, "already": existed}),
                PushOutcome::Retry(e) => json!({"invoice_number": n, "outcome": "retrying", "error": e}),
                PushOutcome::Waiting(e) => json!({"invoice_number": n, "outcome": "waiting", "error": e}),
                PushOutcome::Parked(e) => json!({"invoice_number": n, "outcome": "parked", "error": e}),
            })
            .collect();
        print_json(&json!({ "pushed": pushed, "results": list }));
    } else {
        for (n, o) in &results {
            match o {
                PushOutcome::Pushed {
                    qbo_id,
                    existed: false,
                } => println!("{n}: created in QuickBooks (Id {qbo_id})"),
                PushOutcome::Pushed {
                    qbo_id,
                    existed: true,
                } => println!("{n}: already in QuickBooks (Id {qbo_id})"),
                PushOutcome::Retry(e) => println!("{n}: not pushed, will retry: {e}"),
                PushOutcome::Waiting(e) => println!("{n}: waiting: {e}"),
                PushOutcome::Parked(e) => println!("{n}: parked: {e}"),
            }
        }
        println!("{pushed} of {} pushed", results.len());
    }
    if let Some((_, PushOutcome::Waiting(e))) = results
        .iter()
        .find(|(_, o)| matches!(o, PushOutcome::Waiting(_)))
    {
        if e.contains("reconnect") || e.contains("not connected") {
            return Err(Failure::needs_person(e.clone()));
        }
    }
    if pushed < results.len() {
        return Err(Failure::failed(format!(
            "{} of {} invoices were not pushed (see above; `pos-connector queue show N`)",
            results.len() - pushed,
            results.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_tokens_reads_generous_json_and_requires_the_refresh_token() {
        let now = Utc::now();
        let c = tokens_from_json(
            "\u{feff}{\"refreshToken\": \"RT\", \"realmId\": 123, \"access_token\": \"AT\", \"expires_in\": \"3600\"}",
            None,
            "app",
            now,
        )
        .unwrap();
        assert_eq!(c.token.realm_id, "123");
        assert_eq!(c.token.expires_at, now + chrono::Duration::seconds(3600));
        let no_access =
            tokens_from_json("{\"refresh_token\": \"RT\"}", Some("9"), "app", now).unwrap();
        assert_eq!(no_access.token.expires_at, now, "refreshed on first use");
        let e = tokens_from_json(
            "{\"access_token\": \"AT\", \"realm_id\": \"1\"}",
            None,
            "app",
            now,
        )
        .unwrap_err();
        assert!(e.message.contains("refresh_token"), "{}", e.message);
        let e = tokens_from_json("{\"refresh_token\": \"RT\"}", None, "app", now).unwrap_err();
        assert!(e.message.contains("--realm"), "{}", e.message);
    }
}
