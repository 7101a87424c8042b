//! Unit tests of the pipeline: failure sorting and the global gate.

use super::*;

#[test]
fn path_segments_are_encoded() {
    assert_eq!(encode_path_segment("INV-1/2 3"), "INV-1%2F2%203");
}

fn where_(m: &str) -> (String, String) {
    (m.to_string(), "/api/invoices".to_string())
}

/// Failure sorting: who must act, and what waits.
#[test]
fn failures_are_sorted_by_who_must_act() {
    let (method, path) = where_("POST");
    let secs = Duration::from_secs;
    let kind = |e: ApiError| match classify(e) {
        Failure::BackendDown { retry_after, .. } => format!("down {retry_after:?}"),
        Failure::Unclear {
            retry_after,
            submit_error,
            ..
        } => format!("unclear {retry_after:?} {submit_error}"),
        Failure::Transient(_) => "transient".into(),
        Failure::Park(_) => "park".into(),
        Failure::SignIn(_) => "sign-in".into(),
        other => format!("other {other:?}"),
    };
    // The backend as a whole: all work waits behind the gate.
    assert_eq!(
        kind(ApiError::RateLimited {
            retry_after: Some(secs(7))
        }),
        "down Some(7s)"
    );
    assert_eq!(
        kind(ApiError::Token(TokenError::Unavailable {
            backend: "laravel".into(),
            reason: "timed out".into(),
            retry_after: None,
        })),
        "down None"
    );
    // Down, or this job alone? A probe decides.
    assert_eq!(
        kind(ApiError::Server {
            method: method.clone(),
            path: path.clone(),
            status: 503,
            message: None,
            excerpt: String::new(),
            retry_after: Some(secs(3)),
        }),
        "unclear Some(3s) false"
    );
    assert_eq!(
        kind(ApiError::Transport {
            method: method.clone(),
            path: path.clone(),
            detail: "connection refused".into(),
            maybe_sent: false,
        }),
        "unclear None false"
    );
    assert_eq!(
        kind(ApiError::SubmitUnavailable {
            message: "JoFotara is down".into()
        }),
        "unclear None true"
    );
    // A person: the job is parked, or all work holds for the sign-in.
    assert_eq!(
        kind(ApiError::Validation {
            message: "invalid".into(),
            errors: Default::default(),
        }),
        "park"
    );
    assert_eq!(
        kind(ApiError::DuplicateInvoiceNumber {
            number: "A-1".into()
        }),
        "park"
    );
    assert_eq!(
        kind(ApiError::AccountDisabled {
            method: method.clone(),
            path: path.clone(),
            message: "disabled".into(),
        }),
        "park"
    );
    assert_eq!(
        kind(ApiError::InvalidCredentials {
            email: "v@shop.jo".into()
        }),
        "sign-in"
    );
    assert_eq!(
        kind(ApiError::Token(TokenError::NeedsPerson {
            backend: "laravel".into(),
            reason: "wrong password".into(),
        })),
        "sign-in"
    );
    assert_eq!(kind(ApiError::Unauthenticated { method, path }), "sign-in");
}

/// The global gate: one count per outage step, a `Retry-After` only
/// lengthens it (capped), a reopened gate wants one probe first, and
/// success resets it all. Paused clock: no real waiting.
#[tokio::test(start_paused = true)]
async fn the_global_gate_counts_an_outage_once_per_step() {
    let secs = Duration::from_secs;
    let policy = Backoff::new(secs(2), secs(60), Jitter::None);
    let gate = BackendGate::default();
    let now = Utc::now();
    assert!(gate.view().is_none() && !gate.needs_probe());

    assert_eq!(gate.close(&policy, None, now, "refused"), secs(2));
    // More failures while closed: the same outage, not counted again.
    assert_eq!(gate.close(&policy, None, now, "refused"), secs(2));
    let v = gate.view().unwrap();
    assert!(v.closed && v.failures == 1 && v.down_since == now, "{v:?}");
    assert_eq!(v.last_error.as_deref(), Some("refused"));
    // A Retry-After lengthens the wait, at most to the cap.
    assert_eq!(gate.close(&policy, Some(secs(30)), now, "429"), secs(30));
    assert_eq!(gate.close(&policy, Some(secs(600)), now, "429"), secs(60));
    assert!(!gate.needs_probe(), "closed: nobody calls");

    // Reopened by time: one probe first; its failure is the next step.
    tokio::time::advance(secs(61)).await;
    assert!(gate.closed_until().is_none());
    assert!(gate.needs_probe(), "half-open");
    assert_eq!(gate.close(&policy, None, now, "still down"), secs(4));
    tokio::time::advance(secs(5)).await;
    assert_eq!(gate.close(&policy, None, now, "still down"), secs(8));
    assert_eq!(gate.view().unwrap().failures, 3);

    // `hold` closes without counting (sign-in waits, not outages).
    gate.opened(now);
    assert!(gate.view().is_none() && !gate.needs_probe());
    gate.hold(secs(10));
    assert!(gate.closed_until().is_some());
    assert!(!gate.needs_probe(), "a hold is not an outage");
    assert!(gate.view().is_none());
}
