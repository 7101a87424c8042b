//! The invoice calls against the Laravel backend.
//!
//! Every call goes through [`LaravelClient::call`]: a token from the
//! keeper, `Accept: application/json`, and on a 401 one invalidation of
//! *that* token, one refresh (shared with every other caller) and one
//! replay; a second 401 is an error, never a loop. There is no validation
//! probe before calls (the old connector's extra profile GET per request).
//!
//! Operations retry transient failures with the client's [`RetryPolicy`],
//! and are safe to retry: create relies on the backend's unique
//! `invoice_number` (a 422 "already taken" after a lost answer means our
//! earlier attempt got through), downloads write to a temporary file that
//! only becomes the final file when complete. Submit is the exception: it
//! is repeated only when its request certainly had no effect (the backend
//! has no resubmission guard); what to do after a lost answer is decided
//! by the caller, with the status and a settle window.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde_json::Value;

use super::auth::{read_capped, LaravelLogin};
use super::error::{classify, excerpt, transport, ApiError};
use super::model::{status_from_json, CreatedInvoice, Invoice, InvoiceStatus, NewInvoice, Vendor};
use crate::call_stats::CallStats;
use crate::fsutil::AtomicFile;
use crate::retry::{RetryHint, RetryPolicy, Retryable};
use crate::secret;
use crate::token::{Lease, TokenKeeper, TokenValue};

const MAX_ERROR_BODY: usize = 64 * 1024;

pub(crate) type LaravelKeeper = TokenKeeper<LaravelLogin>;

/// What create did.
#[derive(Debug)]
#[allow(missing_docs, reason = "the variant names say what they are")]
pub enum CreateOutcome {
    Created(CreatedInvoice),
    /// The backend already has this invoice number. `after_lost_answer` is
    /// true when one of our own attempts may have created it (its answer
    /// was lost), false when it existed before this call.
    AlreadyExists {
        after_lost_answer: bool,
    },
}

/// What submit did.
#[derive(Debug)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct SubmitOutcome {
    pub status: InvoiceStatus,
    pub(crate) raw: Value,
}

/// An error retried only when its request certainly had no effect (for
/// requests that must not be repeated blindly: submit).
struct OnlyUnsent(ApiError);

impl std::fmt::Display for OnlyUnsent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Retryable for OnlyUnsent {
    fn retry_hint(&self) -> RetryHint {
        if self.0.outcome_unknown() || matches!(self.0, ApiError::SubmitUnavailable { .. }) {
            RetryHint::Never
        } else {
            self.0.retry_hint()
        }
    }
}

/// Which document to download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs, reason = "the variant names say what they are")]
pub enum DocumentKind {
    Pdf,
    Xml,
}

impl DocumentKind {
    fn segment(self) -> &'static str {
        match self {
            DocumentKind::Pdf => "pdf",
            DocumentKind::Xml => "xml",
        }
    }
    fn label(self) -> &'static str {
        match self {
            DocumentKind::Pdf => "PDF",
            DocumentKind::Xml => "XML document",
        }
    }
}

/// A document saved to disk.
#[derive(Debug, Clone)]
#[allow(missing_docs, reason = "plain data, described by the type's doc")]
pub struct Download {
    pub path: PathBuf,
    pub(crate) bytes: u64,
}

/// The Laravel backend's invoice API: signed-in calls with the 401-refresh-replay rule and safe retries.
#[derive(Clone)]
pub struct LaravelClient {
    http: reqwest::Client,
    base: Url,
    keeper: Arc<LaravelKeeper>,
    retry: RetryPolicy,
    stats: Arc<CallStats>,
}

impl LaravelClient {
    pub(crate) fn new(
        http: reqwest::Client,
        base: Url,
        keeper: Arc<LaravelKeeper>,
        retry: RetryPolicy,
    ) -> Self {
        LaravelClient {
            http,
            base,
            keeper,
            retry,
            stats: CallStats::new("laravel"),
        }
    }

    /// Counts this client's calls in `stats` (shared with the sign-in).
    pub(crate) fn with_stats(mut self, stats: Arc<CallStats>) -> Self {
        self.stats = stats;
        self
    }

    pub(crate) fn stats(&self) -> &Arc<CallStats> {
        &self.stats
    }

    /// The token keeper this client signs its calls with.
    pub fn keeper(&self) -> &Arc<LaravelKeeper> {
        &self.keeper
    }

    /// Sends one request with `lease`'s token; a transport failure becomes
    /// an [`ApiError::Transport`], any answer is returned as it is.
    async fn send(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        lease: &Lease<super::auth::LaravelToken>,
    ) -> Result<reqwest::Response, ApiError> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .expect("relative API paths join");
        let mut bearer = reqwest::header::HeaderValue::from_str(&format!(
            "Bearer {}",
            secret::expose(lease.token.bearer())
        ))
        .expect("Sanctum tokens are header-safe");
        // Marked sensitive so no HTTP-layer debug output ever prints it.
        bearer.set_sensitive(true);
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(ACCEPT, "application/json")
            .header(reqwest::header::AUTHORIZATION, bearer);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.stats
            .observe(method.as_str(), path, req.send().await)
            .map_err(|e| transport(method.as_str(), path, &e))
    }

    /// One authenticated request, with the 401 rule. Returns the response
    /// when its status is 2xx; any other status becomes an [`ApiError`].
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ApiError> {
        let m = method.as_str();
        let lease = self.keeper.get().await?;
        let resp = self.send(&method, path, body, &lease).await?;
        let resp = if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            drop(resp);
            tracing::info!(
                method = m,
                path,
                "401 Unauthenticated: refreshing the token and replaying once"
            );
            self.keeper.invalidate(lease.generation);
            let lease = self.keeper.get().await?;
            let resp = self.send(&method, path, body, &lease).await?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
                self.keeper.invalidate(lease.generation);
                tracing::error!(
                    method = m,
                    path,
                    "401 again right after a fresh sign-in; not retrying"
                );
                return Err(ApiError::Unauthenticated {
                    method: m.to_string(),
                    path: path.to_string(),
                });
            }
            resp
        } else {
            resp
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let bytes = read_capped(resp, MAX_ERROR_BODY).await;
        Err(classify(m, path, status, &headers, &bytes))
    }

    /// A request whose answer is JSON.
    async fn call_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let m = method.as_str().to_string();
        let resp = self.call(method, path, body).await?;
        let bytes = resp.bytes().await.map_err(|e| transport(&m, path, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Parse {
            method: m,
            path: path.to_string(),
            detail: format!("not JSON ({e})"),
            excerpt: excerpt(&bytes),
        })
    }

    fn parse_err(method: &str, path: &str, detail: String, raw: &Value) -> ApiError {
        ApiError::Parse {
            method: method.into(),
            path: path.into(),
            detail,
            excerpt: excerpt(raw.to_string().as_bytes()),
        }
    }

    /// `POST /api/invoices`.
    pub async fn create_invoice(&self, invoice: &NewInvoice) -> Result<CreateOutcome, ApiError> {
        const PATH: &str = "/api/invoices";
        let body = serde_json::to_value(invoice).expect("invoice serialises");
        let lost_answer = AtomicBool::new(false);
        let lost_answer = &lost_answer;
        let body = &body;
        self.retry
            .run("create invoice", |_| async move {
                match self.call_json(Method::POST, PATH, Some(body)).await {
                    Ok(raw) => CreatedInvoice::from_json(raw.clone())
                        .map(CreateOutcome::Created)
                        .map_err(|d| Self::parse_err("POST", PATH, d, &raw)),
                    Err(ApiError::DuplicateInvoiceNumber { .. }) => {
                        Ok(CreateOutcome::AlreadyExists {
                            after_lost_answer: lost_answer.load(Ordering::SeqCst),
                        })
                    }
                    Err(e) => {
                        if e.outcome_unknown() {
                            lost_answer.store(true, Ordering::SeqCst);
                        }
                        Err(e)
                    }
                }
            })
            .await
    }

    /// `GET /api/invoices/{id}`.
    pub async fn invoice(&self, id: u64) -> Result<Invoice, ApiError> {
        self.invoice_at(&format!("/api/invoices/{id}")).await
    }

    /// `GET <path>` answered like `GET /api/invoices/{id}`: also used for
    /// a backend's own lookup by invoice number (`pipeline.lookup_path`).
    pub(crate) async fn invoice_at(&self, path: &str) -> Result<Invoice, ApiError> {
        self.retry
            .run("get invoice", |_| async move {
                let raw = self.call_json(Method::GET, path, None).await?;
                Invoice::from_json(raw.clone()).map_err(|d| Self::parse_err("GET", path, d, &raw))
            })
            .await
    }

    async fn status_once(&self, id: u64) -> Result<(InvoiceStatus, Value), ApiError> {
        let path = format!("/api/invoices/status/{id}");
        let raw = self.call_json(Method::GET, &path, None).await?;
        let status = status_from_json(&raw).map_err(|d| Self::parse_err("GET", &path, d, &raw))?;
        Ok((status, raw))
    }

    /// `GET /api/invoices/status/{id}` (note: `status` before the id).
    pub async fn status(&self, id: u64) -> Result<(InvoiceStatus, Value), ApiError> {
        self.retry
            .run("invoice status", |_| self.status_once(id))
            .await
    }

    /// `POST /api/invoices/{id}/submit`, **one submission at most**. A 200
    /// is not success: read the status (`rejected` is final, `error` may be
    /// retried later). The request is repeated only when it certainly did
    /// not reach the backend (connection refused, 429, the 401 replay);
    /// after a lost answer (timeout, dropped connection, 5xx) the error is
    /// returned: the backend has no guard against resubmitting and keeps
    /// working after its client has gone, so whether to submit again is the
    /// caller's decision, after a settle window (see `store::submits`).
    pub async fn submit(&self, id: u64) -> Result<SubmitOutcome, ApiError> {
        let path = format!("/api/invoices/{id}/submit");
        let path = &path;
        self.retry
            .run("submit invoice", |_| async move {
                match self.call_json(Method::POST, path, None).await {
                    Ok(raw) => {
                        let status = status_from_json(&raw)
                            .map_err(|d| Self::parse_err("POST", path, d, &raw))
                            .map_err(OnlyUnsent)?;
                        Ok(SubmitOutcome { status, raw })
                    }
                    Err(ApiError::Server {
                        status: 500,
                        message: Some(message),
                        ..
                    }) if message != "Server Error" => {
                        Err(OnlyUnsent(ApiError::SubmitUnavailable { message }))
                    }
                    Err(e) => Err(OnlyUnsent(e)),
                }
            })
            .await
            .map_err(|OnlyUnsent(e)| e)
    }

    /// `GET /api/vendors/profile`: the signed-in vendor.
    pub async fn profile(&self) -> Result<Vendor, ApiError> {
        self.retry
            .run("vendor profile", |_| async {
                let raw = self
                    .call_json(Method::GET, "/api/vendors/profile", None)
                    .await?;
                Ok(Vendor::from_json(raw))
            })
            .await
    }

    /// Downloads the official PDF or XML of invoice `id`, streaming it to a
    /// temporary file that is renamed into place only when complete and
    /// checked. `out`: an explicit file or folder; else `default_dir`. The
    /// file is named by [`document_file_name`] (the invoice number, known
    /// as `number` or from the backend's `Content-Disposition`, and the
    /// backend id), so two invoices never share a file.
    pub async fn download(
        &self,
        id: u64,
        number: Option<&str>,
        kind: DocumentKind,
        out: Option<&Path>,
        default_dir: &Path,
    ) -> Result<Download, ApiError> {
        let path = format!("/api/invoices/{id}/{}", kind.segment());
        let path = &path;
        self.retry
            .run("download document", |_| async move {
                self.download_once(id, number, kind, path, out, default_dir)
                    .await
            })
            .await
    }

    async fn download_once(
        &self,
        id: u64,
        number: Option<&str>,
        kind: DocumentKind,
        path: &str,
        out: Option<&Path>,
        default_dir: &Path,
    ) -> Result<Download, ApiError> {
        let mut resp = self.call(Method::GET, path, None).await?;
        let headers = resp.headers().clone();
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let named = number
            .map(str::to_string)
            .or_else(|| number_from_disposition(&headers));
        let file_name = document_file_name(named.as_deref(), id, kind);
        let dest = match out {
            Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with(['/', '\\']) => {
                p.join(&file_name)
            }
            Some(p) => p.to_path_buf(),
            None => default_dir.join(&file_name),
        };
        let expected_len = resp.content_length();

        // Look at the start of the body before creating any file, so an
        // HTML error page never lands on disk.
        let mut head: Vec<u8> = Vec::new();
        while head.len() < 64 {
            match resp.chunk().await.map_err(|e| transport("GET", path, &e))? {
                Some(chunk) => head.extend_from_slice(&chunk),
                None => break,
            }
        }
        if !looks_like(kind, &content_type, &head) {
            return Err(ApiError::NotADocument {
                method: "GET".into(),
                path: path.into(),
                expected: kind.label(),
                content_type: if content_type.is_empty() {
                    "(none)".into()
                } else {
                    content_type
                },
                excerpt: excerpt(&head),
            });
        }
        // Truncation shows as a body error when the answer is framed
        // (Content-Length or chunked); a close-delimited PDF is checked for
        // its end marker instead.
        let framed = expected_len.is_some()
            || headers
                .get(reqwest::header::TRANSFER_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));

        let file_err = |source| ApiError::File {
            path: dest.clone(),
            source,
        };
        let mut file = AtomicFile::create(&dest).map_err(file_err)?;
        file.write_all(&head).map_err(file_err)?;
        let mut tail: Vec<u8> = head.clone();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport("GET", path, &e))? {
            file.write_all(&chunk).map_err(file_err)?;
            tail.extend_from_slice(&chunk);
            if tail.len() > 2048 {
                tail.drain(..tail.len() - 1024);
            }
        }
        let written = file.bytes_written();
        if let Some(expected) = expected_len {
            if expected != written {
                return Err(ApiError::Transport {
                    method: "GET".into(),
                    path: path.into(),
                    detail: format!("download cut short: {written} of {expected} bytes"),
                    maybe_sent: true,
                });
            }
        }
        if !framed && kind == DocumentKind::Pdf && !tail.windows(5).any(|w| w == b"%%EOF") {
            return Err(ApiError::Transport {
                method: "GET".into(),
                path: path.into(),
                detail: format!("the PDF is incomplete (no %%EOF after {written} bytes)"),
                maybe_sent: true,
            });
        }
        // Documents are for people to open: readable like any other file.
        let saved = file.commit_with_mode(0o644).map_err(file_err)?;
        tracing::info!(id, path = %saved.display(), bytes = written, "saved {}", kind.label());
        Ok(Download {
            path: saved,
            bytes: written,
        })
    }
}

/// Whether the start of a body is the document asked for. An error page
/// (HTML or JSON) is never taken for a document, whatever its Content-Type;
/// otherwise the Content-Type or the document's own signature decides.
fn looks_like(kind: DocumentKind, content_type: &str, head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let start = text.trim_start_matches('\u{feff}').trim_start();
    let lower = start.to_ascii_lowercase();
    let error_page = lower.starts_with("<!doctype html")
        || lower.starts_with("<html")
        || start.starts_with('{')
        || content_type.contains("html")
        || content_type.contains("json");
    if error_page || head.is_empty() {
        return false;
    }
    match kind {
        DocumentKind::Pdf => head.starts_with(b"%PDF-") || content_type.contains("pdf"),
        DocumentKind::Xml => start.starts_with('<') || content_type.contains("xml"),
    }
}

/// The invoice number in the backend's `Content-Disposition`
/// (`attachment; filename="invoice_<number>.pdf"`), as sent.
fn number_from_disposition(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(CONTENT_DISPOSITION)?.to_str().ok()?;
    let raw = v.split(';').map(str::trim).find_map(|part| {
        let (k, val) = part.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("filename")
            .then(|| val.trim().trim_matches('"').to_string())
    })?;
    let stem = raw
        .strip_suffix(".pdf")
        .or_else(|| raw.strip_suffix(".xml"))
        .unwrap_or(&raw);
    let number = stem.strip_prefix("invoice_").unwrap_or(stem);
    (!number.is_empty()).then(|| number.to_string())
}

/// The file name of invoice `id`'s document: `invoice_<number>_<id>.pdf`,
/// the number kept readable (letters, digits and `-`; anything else becomes
/// `_`; long numbers are cut) and the backend id last. The id makes it unique:
/// it follows the last `_`, so two invoices with different ids never map to
/// one name, whatever their numbers ("COLL 1" and "COLL_1", "A/X" and
/// "B/X"), even on a case-insensitive file system. Without a number (a
/// backend that does not name the file): `invoice_<id>.pdf`.
pub(crate) fn document_file_name(number: Option<&str>, id: u64, kind: DocumentKind) -> String {
    let readable: String = number
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let readable = readable.trim_start_matches('-');
    if readable.is_empty() {
        format!("invoice_{id}.{}", kind.segment())
    } else {
        format!("invoice_{readable}_{id}.{}", kind.segment())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_are_never_documents() {
        use DocumentKind::*;
        assert!(looks_like(Pdf, "application/pdf", b"%PDF-1.4 ..."));
        assert!(looks_like(Pdf, "application/pdf", b"binary pdf bytes"));
        assert!(looks_like(Pdf, "", b"%PDF-1.7"));
        assert!(!looks_like(
            Pdf,
            "application/pdf",
            b"<!DOCTYPE html><html>"
        ));
        assert!(!looks_like(Pdf, "text/html", b"%PDF-"));
        assert!(!looks_like(
            Pdf,
            "application/json",
            b"{\"message\":\"Server Error\"}"
        ));
        assert!(!looks_like(Pdf, "application/octet-stream", b"nope"));
        assert!(looks_like(
            Xml,
            "application/xml",
            b"<?xml version=\"1.0\"?>"
        ));
        assert!(!looks_like(Xml, "text/html", b"<html>"));
        assert!(!looks_like(Pdf, "application/pdf", b""));
    }

    #[test]
    fn document_names_never_collide_between_invoices() {
        use DocumentKind::*;
        assert_eq!(
            document_file_name(Some("INV-1"), 7, Pdf),
            "invoice_INV-1_7.pdf"
        );
        assert_eq!(document_file_name(None, 7, Xml), "invoice_7.xml");
        // Numbers that read alike get different names (different ids).
        let names = [
            document_file_name(Some("COLL 1"), 11, Pdf),
            document_file_name(Some("COLL_1"), 12, Pdf),
            document_file_name(Some("A/X"), 13, Pdf),
            document_file_name(Some("B/X"), 14, Pdf),
            document_file_name(Some("../../etc/passwd"), 15, Pdf),
            document_file_name(Some(&"x".repeat(500)), 16, Pdf),
        ];
        let unique: std::collections::HashSet<String> =
            names.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        for n in &names {
            assert!(!n.contains('/') && !n.contains(".."), "{n}");
            assert!(n.len() < 120, "{n}");
        }
        assert_eq!(names[2], "invoice_A_X_13.pdf");
    }

    #[test]
    fn the_number_is_read_from_content_disposition() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_DISPOSITION,
            "attachment; filename=\"invoice_INV-1.pdf\""
                .parse()
                .unwrap(),
        );
        assert_eq!(number_from_disposition(&h).as_deref(), Some("INV-1"));
        h.insert(
            CONTENT_DISPOSITION,
            "attachment; filename=\"invoice_A/X.pdf\"".parse().unwrap(),
        );
        assert_eq!(number_from_disposition(&h).as_deref(), Some("A/X"));
        assert_eq!(
            document_file_name(number_from_disposition(&h).as_deref(), 3, DocumentKind::Pdf),
            "invoice_A_X_3.pdf"
        );
    }
}
