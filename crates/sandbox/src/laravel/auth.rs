//! Vendor login (Sanctum plain-text tokens) and profile.

use super::*;

pub(super) async fn login(State(sh): State<Sh>, headers: HeaderMap, body: Bytes) -> Response {
    let input = request_input(&headers, &body);
    let mut errors = Errors::default();
    let email = input.get("email");
    if !filled(email) {
        errors.add("email", msg_required("email"));
    } else if !email.and_then(Value::as_str).is_some_and(valid_email) {
        errors.add(
            "email",
            "The email field must be a valid email address.".into(),
        );
    }
    let password = input.get("password");
    if !filled(password) {
        errors.add("password", msg_required("password"));
    }
    if !errors.is_empty() {
        return errors.into_response();
    }
    let email = email.and_then(Value::as_str).unwrap_or_default();
    let password = password.and_then(php_string);

    let mut st = sh.state();
    let user = st
        .users
        .iter()
        .find(|u| u.email == email && Some(&u.password) == password.as_ref())
        .cloned();
    let Some(user) = user else {
        st.logins_failed += 1;
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"message": "Invalid credentials"}),
        );
    };
    let entropy: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let secret = format!("{entropy}{:08x}", crc32fast::hash(entropy.as_bytes()));
    let id = st.next_token_id;
    st.next_token_id += 1;
    st.tokens.insert(
        id,
        TokenRec {
            secret: secret.clone(),
            user_id: user.id,
            created: Instant::now(),
        },
    );
    st.logins_ok += 1;
    st.tokens_issued += 1;
    let mut answer = json!({
        "token": format!("{id}|{secret}"),
        "user": user_json(&user, &st.users_created_at),
    });
    if st.advertise_expiry {
        if let Some(life) = st.token_lifetime {
            let at = Utc::now() + chrono::Duration::from_std(life).unwrap_or(chrono::Duration::MAX);
            answer["expires_at"] = json!(at.to_rfc3339_opts(SecondsFormat::Secs, true));
        }
    }
    json_response(StatusCode::OK, &answer)
}

pub(super) async fn profile(State(sh): State<Sh>, headers: HeaderMap) -> Response {
    let st = sh.state();
    match st.authenticate(&headers) {
        Some(u) => json_response(StatusCode::OK, &user_json(&u, &st.users_created_at)),
        None => unauthenticated(),
    }
}
