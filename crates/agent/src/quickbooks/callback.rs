//! The browser's return from Intuit's authorize page: the redirect URI is
//! called with `code`, `state` and `realmId`. `state` must be the one this
//! attempt generated (otherwise another site could plant its own company in
//! the agent: CSRF), and the code is taken once.
//!
//! [`check`] is the rule, shared by every place that receives the callback
//! (the local API, `qbo connect`'s listener in `server::callback`, the demo).

use std::collections::HashMap;

/// A valid callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Callback {
    pub(crate) code: String,
    pub(crate) realm_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallbackError {
    #[error("the callback's state does not match this connection attempt: it was not started here (or is an old one); it was ignored")]
    StateMismatch,
    #[error("QuickBooks did not authorize the connection ({error}{}); start again with `pos-connector qbo connect`", .description.as_ref().map(|d| format!(": {d}")).unwrap_or_default())]
    Denied {
        error: String,
        description: Option<String>,
    },
    #[error("the callback has no {0}; start again with `pos-connector qbo connect`")]
    Missing(&'static str),
}

/// Checks a callback's query parameters against the expected `state`.
pub(crate) fn check(
    params: &HashMap<String, String>,
    expected_state: &str,
) -> Result<Callback, CallbackError> {
    let state = params.get("state").map(String::as_str).unwrap_or("");
    if !crate::secret::constant_time_eq(state, &secrecy::SecretString::from(expected_state)) {
        return Err(CallbackError::StateMismatch);
    }
    if let Some(error) = params.get("error") {
        return Err(CallbackError::Denied {
            error: error.clone(),
            description: params.get("error_description").cloned(),
        });
    }
    let code = params
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or(CallbackError::Missing("code"))?;
    let realm_id = params
        .get("realmId")
        .filter(|r| !r.is_empty())
        .ok_or(CallbackError::Missing("realmId (the company)"))?;
    Ok(Callback {
        code: code.clone(),
        realm_id: realm_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn state_code_and_realm_are_checked() {
        let ok = params(&[("state", "s1"), ("code", "c"), ("realmId", "123")]);
        assert_eq!(
            check(&ok, "s1").unwrap(),
            Callback {
                code: "c".into(),
                realm_id: "123".into()
            }
        );
        assert_eq!(check(&ok, "s2"), Err(CallbackError::StateMismatch));
        let denied = params(&[("state", "s1"), ("error", "access_denied")]);
        assert!(matches!(
            check(&denied, "s1"),
            Err(CallbackError::Denied { .. })
        ));
        let no_realm = params(&[("state", "s1"), ("code", "c")]);
        assert!(matches!(
            check(&no_realm, "s1"),
            Err(CallbackError::Missing(_))
        ));
    }
}
