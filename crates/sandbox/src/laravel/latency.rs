//! Service times of the API routes (PHP-FPM's per-request work), as named profiles.

use super::*;

/// PHP-FPM workers of [`LaravelSandboxOptions::realistic_pool`].
pub const REALISTIC_WORKERS: usize = 8;

/// Service time of each API route: how long a worker is busy with a request
/// before its handler runs (`tokio::time::sleep`, so a paused clock
/// applies). Routes not listed (unknown paths, `/up`) cost nothing; the
/// lookup route costs what `show` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyProfile {
    /// `POST /api/vendors/login` (bcrypt).
    pub login: Duration,
    /// `POST /api/invoices`.
    pub create: Duration,
    /// `POST /api/invoices/{id}/submit` (the JoFotara round trip).
    pub submit: Duration,
    /// `GET /api/invoices/status/{id}`.
    pub status: Duration,
    /// `GET /api/invoices/{id}` (and the optional lookup by number).
    pub show: Duration,
    /// `GET /api/vendors/profile`.
    pub profile: Duration,
    /// `GET /api/invoices/{id}/pdf` (dompdf).
    pub pdf: Duration,
    /// `GET /api/invoices/{id}/xml`.
    pub xml: Duration,
}

impl LatencyProfile {
    /// No service time anywhere (the default).
    pub fn none() -> LatencyProfile {
        LatencyProfile::default()
    }

    /// The real stack's service times: login 120 ms (bcrypt), create 30 ms,
    /// submit 300 ms (JoFotara round trip), status 15 ms, show 15 ms,
    /// profile 10 ms, pdf 200 ms (dompdf), xml 30 ms.
    pub fn realistic() -> LatencyProfile {
        let ms = Duration::from_millis;
        LatencyProfile {
            login: ms(120),
            create: ms(30),
            submit: ms(300),
            status: ms(15),
            show: ms(15),
            profile: ms(10),
            pdf: ms(200),
            xml: ms(30),
        }
    }

    /// Every time multiplied by `factor` (e.g. `0.01` for quick tests); a
    /// negative or NaN factor gives zero, an overflowing one the maximum.
    pub fn scaled(&self, factor: f64) -> LatencyProfile {
        let f = |d: Duration| {
            let secs = d.as_secs_f64() * factor;
            if secs.is_nan() || secs <= 0.0 {
                Duration::ZERO
            } else {
                Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
            }
        };
        LatencyProfile {
            login: f(self.login),
            create: f(self.create),
            submit: f(self.submit),
            status: f(self.status),
            show: f(self.show),
            profile: f(self.profile),
            pdf: f(self.pdf),
            xml: f(self.xml),
        }
    }

    /// Whether every time is zero.
    pub fn is_none(&self) -> bool {
        *self == LatencyProfile::none()
    }

    /// Worker time of one sale as the agent makes it: create + submit + PDF
    /// (login is amortised over many sales). 530 ms when realistic.
    pub fn per_sale(&self) -> Duration {
        self.create
            .saturating_add(self.submit)
            .saturating_add(self.pdf)
    }

    /// The most sales a second `workers` workers can serve:
    /// `workers / per_sale()` (`None` when a sale costs nothing). About
    /// 15.1 for the realistic profile and 8 workers.
    pub fn ceiling_per_sec(&self, workers: usize) -> Option<f64> {
        let secs = self.per_sale().as_secs_f64();
        (secs > 0.0).then(|| workers as f64 / secs)
    }

    /// The service times by route key.
    pub fn route_times(&self) -> Vec<(String, Duration)> {
        [
            (LOGIN_ROUTE, self.login),
            ("POST /api/invoices", self.create),
            ("POST /api/invoices/{id}/submit", self.submit),
            ("GET /api/invoices/status/{id}", self.status),
            ("GET /api/invoices/{id}", self.show),
            (LOOKUP_ROUTE_KEY, self.show),
            ("GET /api/vendors/profile", self.profile),
            ("GET /api/invoices/{id}/pdf", self.pdf),
            ("GET /api/invoices/{id}/xml", self.xml),
        ]
        .into_iter()
        .map(|(k, d)| (k.to_string(), d))
        .collect()
    }

    /// `{"login_us": 120000, ...}` (microseconds).
    pub fn to_json(&self) -> Value {
        json!({
            "login_us": micros(self.login),
            "create_us": micros(self.create),
            "submit_us": micros(self.submit),
            "status_us": micros(self.status),
            "show_us": micros(self.show),
            "profile_us": micros(self.profile),
            "pdf_us": micros(self.pdf),
            "xml_us": micros(self.xml),
        })
    }
}

/// The latency profile and worker count a named profile stands for, for
/// the CLI's `sandbox --latency <name>`: `"none"` (no service time,
/// unbounded) or `"realistic"` ([`LatencyProfile::realistic`],
/// [`REALISTIC_WORKERS`] workers). Case and surrounding blanks are ignored.
pub fn options_from_profile(name: &str) -> Result<(LatencyProfile, Option<usize>), String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "none" => Ok((LatencyProfile::none(), None)),
        "realistic" => Ok((LatencyProfile::realistic(), Some(REALISTIC_WORKERS))),
        other => Err(format!(
            "unknown latency profile \"{other}\": expected \"none\" or \"realistic\""
        )),
    }
}
