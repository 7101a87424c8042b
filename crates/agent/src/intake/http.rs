//! The loopback HTTP intake: `POST /v1/sales` takes a sale (any JSON shape
//! the inbox reads, the backend's own included, one sale or an array; or a
//! CSV body with `Content-Type: text/csv`) and answers 202 with the job
//! once it is committed; `GET /v1/sales/{invoice_number}` shows the job.
//! The API key check is the server's (`server/`), not this module's.
//!
//! Answers: 202 the job (or `{"jobs": [...]}` for several sales), with
//! `"duplicate": true` when the same sale was already queued; 400 with
//! field errors in Laravel's shape (`{"message", "errors": {field:
//! [text]}}`); 409 when the number is held by a different sale; 503 when the
//! outbox cannot commit (nothing was accepted: send again).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::sale::{self, IntakeError};
use super::{conflict_message, Intake};
use crate::store::{Enqueued, Job};

/// Request bodies larger than this are refused (413).
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

pub(crate) fn routes(intake: Intake) -> Router {
    Router::new()
        .route("/v1/sales", post(post_sales))
        .route("/v1/sales/{invoice_number}", get(get_sale))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(intake)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "message": message.into() }))).into_response()
}

fn invalid(e: &IntakeError) -> Response {
    let mut errors: Map<String, Value> = Map::new();
    for p in &e.problems {
        let entry = errors
            .entry(p.location.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(Value::String(p.message.clone()));
        }
    }
    let first = e
        .problems
        .first()
        .map(|p| format!("{}: {}", p.location, p.message))
        .unwrap_or_else(|| "the sale is invalid".into());
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "message": first, "errors": errors })),
    )
        .into_response()
}

/// A job as the API shows it, with whether this request added it.
fn job_json(job: &Job, duplicate: bool) -> Value {
    let mut v = serde_json::to_value(job).expect("a job serialises");
    if let Value::Object(m) = &mut v {
        m.insert("duplicate".into(), Value::Bool(duplicate));
    }
    v
}

async fn post_sales(State(intake): State<Intake>, headers: HeaderMap, body: Bytes) -> Response {
    if body.len() > MAX_BODY_BYTES {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is over {} MB; send fewer sales per request",
                MAX_BODY_BYTES >> 20
            ),
        );
    }
    let is_csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("csv"));
    let options = intake.options().clone();
    // The inbox's reader, so a request is read exactly like a file
    // (encodings, BOM, shapes); the name only says which format to expect.
    let name = if is_csv {
        "request.csv"
    } else {
        "request.json"
    };
    let parsed = tokio::task::spawn_blocking(move || sale::parse_file(name, &body, &options)).await;
    let sales = match parsed {
        Ok(Ok(sales)) => sales,
        Ok(Err(e)) => return invalid(&e),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reader crashed: {e}"),
            )
        }
    };
    let single = sales.len() == 1;
    let results = match intake.accept(sales, "http".into()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot commit a sale from the local API");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the sale was not accepted: {e}; send it again"),
            );
        }
    };
    let conflicts: Vec<&Job> = results
        .iter()
        .filter_map(|r| match r {
            Enqueued::Conflict(j) => Some(j),
            _ => None,
        })
        .collect();
    if !conflicts.is_empty() {
        let messages: Vec<String> = conflicts.iter().map(|j| conflict_message(j)).collect();
        return (
            StatusCode::CONFLICT,
            Json(json!({
                "message": messages[0],
                "conflicts": messages,
                "jobs": conflicts.iter().map(|j| job_json(j, true)).collect::<Vec<_>>(),
            })),
        )
            .into_response();
    }
    let jobs: Vec<Value> = results
        .iter()
        .map(|r| job_json(r.job(), !matches!(r, Enqueued::New(_))))
        .collect();
    if single {
        let job = results[0].job();
        // The number is one path segment, percent-encoded (it may hold
        // spaces, slashes or non-ASCII letters).
        let mut url = reqwest::Url::parse("http://localhost/v1/sales/").expect("static URL");
        url.path_segments_mut()
            .expect("an http URL has segments")
            .pop_if_empty()
            .push(&job.invoice_number);
        let location = url.path().to_string();
        let mut resp = (
            StatusCode::ACCEPTED,
            Json(jobs.into_iter().next().expect("one")),
        )
            .into_response();
        if let Ok(v) = location.parse() {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        resp
    } else {
        (StatusCode::ACCEPTED, Json(json!({ "jobs": jobs }))).into_response()
    }
}

async fn get_sale(State(intake): State<Intake>, Path(number): Path<String>) -> Response {
    let key = number.clone();
    let found = intake
        .outbox()
        .call(move |o| {
            let job = o.find(&key)?;
            match job {
                Some(j) => {
                    let events = o.events(j.id)?;
                    Ok(Some((j, events)))
                }
                None => Ok(None),
            }
        })
        .await;
    match found {
        Ok(Some((job, events))) => {
            let mut v = job_json(&job, false);
            if let Value::Object(m) = &mut v {
                m.remove("duplicate");
                m.insert(
                    "events".into(),
                    serde_json::to_value(events).expect("serialises"),
                );
            }
            (StatusCode::OK, Json(v)).into_response()
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no sale with invoice number {number} in the outbox"),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
