//! Intuit's error answers: API faults, the gateway's 401/403, the XML
//! throttle answer, OAuth errors.

use super::*;

/// An API failure: HTTP status and the `Fault` object (without `time`, so
/// that batch items can carry it too).
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) fault: Value,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        kind: &str,
        code: &str,
        message: &str,
        detail: String,
    ) -> ApiError {
        ApiError {
            status,
            fault: json!({"Error": [{"Message": message, "Detail": detail, "code": code,
                                     "element": ""}],
                          "type": kind}),
        }
    }

    pub(super) fn validation(code: &str, message: &str, detail: String) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "ValidationFault",
            code,
            message,
            detail,
        )
    }

    pub(super) fn element(mut self, element: &str) -> ApiError {
        self.fault["Error"][0]["element"] = json!(element);
        self
    }

    pub(super) fn body(&self) -> Value {
        json!({"Fault": self.fault, "time": time_now()})
    }
}

/// 6000 with QuickBooks' "Business Validation Error: ..." detail.
pub(super) fn business(detail: impl std::fmt::Display) -> ApiError {
    ApiError::validation(
        "6000",
        "A business validation error has occurred while processing your request",
        format!("Business Validation Error: {detail}"),
    )
}

/// A required field is missing. (QuickBooks answers 2020 for some fields
/// and 6000 for others; the sandbox uses 6000 throughout, the Detail names
/// the field.)
pub(super) fn required(field: &str) -> ApiError {
    ApiError::validation(
        "6000",
        "Required param missing, need to supply the required value for the API",
        format!("Required parameter {field} is missing in the request"),
    )
    .element(field)
}

pub(super) fn invalid_ref(kind: Kind, id: &str, element: &str) -> ApiError {
    ApiError::validation(
        "2500",
        "Invalid Reference Id",
        format!(
            "Invalid Reference Id : {} assigned to this transaction does not exist (Id={id})",
            kind.name()
        ),
    )
    .element(element)
}

pub(super) const INACTIVE_DETAIL: &str = "Object Not Found : Something you're trying to use has been made inactive. Check the fields with accounts, customers, items, vendors or employees.";

pub(super) fn not_found(detail: String) -> ApiError {
    ApiError::validation("610", "Object Not Found", detail)
}

pub(super) fn unsupported_property(detail: impl std::fmt::Display) -> ApiError {
    ApiError::validation(
        "2010",
        "Request has invalid or unsupported property",
        format!("Property Name:{detail} specified is unsupported or invalid"),
    )
}

pub(super) fn unsupported_operation(what: &str) -> ApiError {
    ApiError::validation(
        "500",
        "Unsupported Operation",
        format!("Operation {what} is not supported."),
    )
}

pub(super) fn parse_error(detail: impl std::fmt::Display) -> ApiError {
    ApiError::validation(
        "4000",
        "Error parsing query",
        format!("QueryParserError: {detail}"),
    )
}

pub(super) fn query_invalid(detail: impl std::fmt::Display) -> ApiError {
    ApiError::validation(
        "4001",
        "Invalid query",
        format!("QueryValidationError: {detail}"),
    )
}

pub(super) fn system_fault_body() -> Value {
    json!({"Fault": {"Error": [{
        "Message": "An application error has occurred while processing your request",
        "Detail": "System Failure Error: An unexpected error occurred while accessing or saving your data. Please wait a few minutes and try again. If the problem persists, contact customer support.",
        "code": "10000"}], "type": "SystemFault"}, "time": time_now()})
}

/// The API gateway's 401 (lowercase keys).
pub(super) fn gateway_401_body(detail: &str) -> Value {
    json!({"fault": {"error": [{
        "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
        "detail": detail, "code": "3200"}], "type": "AUTHENTICATION"}, "time": time_now()})
}

pub(super) fn gateway_401(detail: &str) -> Response {
    let mut r = json_response(StatusCode::UNAUTHORIZED, &gateway_401_body(detail));
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"Intuit\", error=\"invalid_token\""),
    );
    r
}

pub(super) fn forbidden_3100_body(detail: &str) -> Value {
    json!({"Fault": {"Error": [{
        "Message": "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
        "Detail": detail, "code": "3100"}], "type": "AUTHORIZATION"}, "time": time_now()})
}

/// Intuit's throttling answer: XML even when JSON was asked for, and no
/// `Retry-After`.
pub(super) fn throttle_xml() -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><IntuitResponse time=\"{}\"><Fault type=\"SERVICE\"><Error code=\"3001\"><Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message><Detail>The request limit was reached.</Detail></Error></Fault></IntuitResponse>",
        time_now()
    )
}

pub(super) fn throttled_response() -> Response {
    let mut r = Response::new(Body::from(throttle_xml()));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    r
}

pub(super) fn oauth_error(status: StatusCode, error: &str, description: Option<&str>) -> Response {
    let body = match description {
        Some(d) => json!({"error": error, "error_description": d}),
        None => json!({"error": error}),
    };
    json_response(status, &body)
}

/// The body of an injected [`Fault::Status`], in Intuit's shapes (the
/// outer layer turns 429 into XML and adapts the OAuth endpoints).
pub(super) fn intuit_error_body(status: u16) -> Value {
    match status {
        401 => gateway_401_body("Token invalid: rejected by the sandbox (injected fault)"),
        403 => forbidden_3100_body("Authorization failed (injected fault)"),
        429 => json!({"Fault": {"Error": [{
            "Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
            "Detail": "The request limit was reached.", "code": "3001"}],
            "type": "SERVICE"}, "time": time_now()}),
        404 => ApiError::new(
            StatusCode::NOT_FOUND,
            "ValidationFault",
            "610",
            "Object Not Found",
            "Object Not Found : the resource was not found (injected fault)".into(),
        )
        .body(),
        400..=499 => business("the request was rejected (injected fault)").body(),
        _ => system_fault_body(),
    }
}
