//! `pos-connector status`: the status page in the terminal, the first thing
//! a support person runs on a till. It asks the running service (its local
//! API, with the key from the same config) for the live report; when no
//! service answers, it reads what is on disk (outbox, vault) and says the
//! service is not running.

use std::sync::Arc;
use std::time::Duration;

use super::{print_json, Cli, Failure, Outcome};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::retry::RetryPolicy;
use crate::status::{self, StatusReport};
use crate::store::OutboxHandle;
use crate::{laravel, quickbooks};

pub(crate) async fn status(cli: &Cli, cfg: &Config) -> Outcome {
    let report = match from_service(cfg).await {
        Some(r) => r,
        None => from_disk(cfg).await?,
    };
    if cli.json {
        print_json(&serde_json::to_value(&report).expect("serialises"));
    } else {
        print!("{}", report.render_text());
    }
    if report.needs_person() {
        // The report already printed why; the exit code tells scripts.
        return Err(Failure::needs_person(
            "a person must act on a sign-in or a connection (see above)",
        ));
    }
    Ok(())
}

/// The running service's report, if one answers on `local_api.bind`.
pub(super) async fn from_service(cfg: &Config) -> Option<StatusReport> {
    let api = &cfg.local_api;
    let key = api.api_key.as_ref()?;
    if !api.enabled || api.bind.port() == 0 {
        return None;
    }
    let mut addr = api.bind;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let http = crate::http_client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = http
        .get(format!("http://{addr}/api/status"))
        .bearer_auth(crate::secret::expose(key))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        tracing::warn!(
            status = resp.status().as_u16(),
            "the service on {addr} did not give its status (another agent, or another key?); showing what is on disk"
        );
        return None;
    }
    match resp.json::<StatusReport>().await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "the service's status could not be read; showing what is on disk");
            None
        }
    }
}

async fn from_disk(cfg: &Config) -> Result<StatusReport, Failure> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let outbox = tokio::task::block_in_place(|| OutboxHandle::open(&cfg.data_dir))
        .map_err(|e| Failure::failed(e.to_string()))?;
    let client = laravel::connect(cfg, clock.clone(), RetryPolicy::once());
    let qbo = cfg
        .quickbooks
        .enabled
        .then(|| quickbooks::connect(cfg, clock.clone()).ok())
        .flatten();
    status::collect(cfg, clock.now(), &outbox, &client, qbo.as_ref(), None)
        .await
        .map_err(|e| Failure::failed(e.to_string()))
}
