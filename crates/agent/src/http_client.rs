//! The one place the agent starts an HTTP client: rustls on the `ring`
//! crypto provider. reqwest's default provider, aws-lc-rs, is a few
//! megabytes of the till's binary and a C build needing more tools (cmake
//! on some targets, no musl story); `ring` is smaller, builds with a C
//! compiler alone, and offers the same TLS 1.2/1.3 suites Intuit and a
//! Laravel host need. reqwest (`rustls-no-provider`) takes the process's
//! default provider, so it is installed here, once, before any client is
//! built: every client of the agent comes from [`builder`].

use std::sync::Once;

/// A client builder whose TLS is rustls on `ring`, with the system's
/// certificate store (rustls-platform-verifier) as reqwest sets it up.
pub fn builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// Makes `ring` the process's rustls provider (a no-op when a provider is
/// already installed, e.g. by a program that embeds the library).
fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_build_with_the_ring_provider_installed() {
        builder().build().expect("a client");
        let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
        assert!(
            provider
                .cipher_suites
                .iter()
                .any(|s| s.version() == &rustls::version::TLS13),
            "TLS 1.3 suites"
        );
        assert!(
            provider
                .cipher_suites
                .iter()
                .any(|s| s.version() == &rustls::version::TLS12),
            "TLS 1.2 suites (some shared hosts still end there)"
        );
    }
}
