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
//! earlier attempt got through), submit checks the status before submitting
//! again when an earlier attempt's outcome is unknown, and downloads write
//! to a temporary file that only becomes the final file when complete.

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
use crate::retry::RetryPolicy;
use crate::secret;
use crate::token::{Lease, TokenKeeper, TokenValue};

const MAX_ERROR_BODY: usize = 64 * 1024;

pub type LaravelKeeper = TokenKeeper<LaravelLogin>;

/// What create did.
#[derive(Debug)]
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
pub struct SubmitOutcome {
    pub status: InvoiceStatus,
    /// True when the status was read after a submit whose answer was lost,
    /// rather than from a submit answer.
    pub from_status_check: bool,
    pub raw: Value,
}

/// Which document to download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
pub struct Download {
    pub path: PathBuf,
    pub bytes: u64,
}

#[derive(Clone)]
pub struct LaravelClient {
    http: reqwest::Client,
    base: Url,
    keeper: Arc<LaravelKeeper>,
    retry: RetryPolicy,
    stats: Arc<CallStats>,
}

impl LaravelClient {
    pub fn new(
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
    pub fn with_stats(mut self, stats: Arc<CallStats>) -> Self {
        self.stats = stats;
        self
    }

    pub fn stats(&self) -> &Arc<CallStats> {
        &self.stats
    }

    pub fn keeper(&self) -> &Arc<LaravelKeeper> {
        &self.keeper
    }

    pub fn base_url(&self) -> &Url {
        &self.base
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
    pub async fn call(
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
    pub async fn invoice_at(&self, path: &str) -> Result<Invoice, ApiError> {
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

    /// `POST /api/invoices/{id}/submit`. A 200 is not success: read the
    /// status (`rejected` is final, `error` may be retried later). If an
    /// attempt's answer is lost, the status is checked before submitting
    /// again so the tax system never gets the same invoice twice.
    pub async fn submit(&self, id: u64) -> Result<SubmitOutcome, ApiError> {
        let path = format!("/api/invoices/{id}/submit");
        let path = &path;
        let lost_answer = AtomicBool::new(false);
        let lost_answer = &lost_answer;
        self.retry
            .run("submit invoice", |_| async move {
                if lost_answer.load(Ordering::SeqCst) {
                    let (status, raw) = self.status_once(id).await?;
                    if matches!(status, InvoiceStatus::Submitted | InvoiceStatus::Rejected) {
                        tracing::info!(id, status = %status, "an earlier submit went through although its answer was lost");
                        return Ok(SubmitOutcome {
                            status,
                            from_status_check: true,
                            raw,
                        });
                    }
                }
                match self.call_json(Method::POST, path, None).await {
                    Ok(raw) => {
                        let status = status_from_json(&raw)
                            .map_err(|d| Self::parse_err("POST", path, d, &raw))?;
                        Ok(SubmitOutcome {
                            status,
                            from_status_check: false,
                            raw,
                        })
                    }
                    Err(ApiError::Server {
                        status: 500,
                        message: Some(message),
                        ..
                    }) if message != "Server Error" => Err(ApiError::SubmitUnavailable { message }),
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
    /// checked. `out`: an explicit file or folder; else `default_dir` with
    /// the backend's file name (`invoice_<number>.pdf`), or
    /// `invoice_<id>.pdf` when it sends none.
    pub async fn download(
        &self,
        id: u64,
        kind: DocumentKind,
        out: Option<&Path>,
        default_dir: &Path,
    ) -> Result<Download, ApiError> {
        let path = format!("/api/invoices/{id}/{}", kind.segment());
        let path = &path;
        self.retry
            .run("download document", |_| async move {
                self.download_once(id, kind, path, out, default_dir).await
            })
            .await
    }

    async fn download_once(
        &self,
        id: u64,
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
        let file_name =
            file_name_from(&headers).unwrap_or_else(|| format!("invoice_{id}.{}", kind.segment()));
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

/// The file name from `Content-Disposition`, made safe: no folders, no
/// `..`, only ordinary characters.
fn file_name_from(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(CONTENT_DISPOSITION)?.to_str().ok()?;
    let raw = v.split(';').map(str::trim).find_map(|part| {
        let (k, val) = part.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("filename")
            .then(|| val.trim().trim_matches('"').to_string())
    })?;
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let safe: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.').to_string();
    (!safe.is_empty()).then_some(safe)
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
    fn content_disposition_names_are_sanitised() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_DISPOSITION,
            "attachment; filename=\"invoice_INV-1.pdf\""
                .parse()
                .unwrap(),
        );
        assert_eq!(file_name_from(&h).as_deref(), Some("invoice_INV-1.pdf"));
        h.insert(
            CONTENT_DISPOSITION,
            "attachment; filename=\"../../etc/passwd\"".parse().unwrap(),
        );
        assert_eq!(file_name_from(&h).as_deref(), Some("passwd"));
        h.insert(
            CONTENT_DISPOSITION,
            "attachment; filename=\"inv 7/a b;c.pdf\"".parse().unwrap(),
        );
        assert_eq!(file_name_from(&h).as_deref(), Some("a_b"));
    }
}
