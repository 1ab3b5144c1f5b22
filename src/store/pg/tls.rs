//! How connections to PostgreSQL are encrypted, from the URL's `sslmode` and
//! `sslrootcert` (see [`SslMode`]): rustls with the ring provider, through
//! tokio-postgres-rustls (which also gives SCRAM its channel binding, so a
//! server that asks for `SCRAM-SHA-256-PLUS` gets it).
//!
//! | sslmode       | encrypted                  | chain checked        | host name checked |
//! |---------------|----------------------------|----------------------|-------------------|
//! | `disable`     | never                      | –                    | –                 |
//! | `prefer`      | when the server offers TLS | if `sslrootcert` set | no                |
//! | `require`     | always                     | if `sslrootcert` set | no                |
//! | `verify-ca`   | always                     | against sslrootcert  | no                |
//! | `verify-full` | always                     | sslrootcert / system | yes               |
//!
//! A chain is "checked" when the roots are known: as libpq, a `sslrootcert`
//! file given with `prefer` or `require` is not ignored.
//! The pool (`conn`) and the migration connection (`migrations`) both
//! connect with [`connector`], so they encrypt and verify alike.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::url::{PgUrl, RootCert, SslMode};
use crate::store::error::{StoreError, StoreResult};

/// The TLS connector every PostgreSQL connection is made with.
pub(crate) type Tls = tokio_postgres_rustls::MakeRustlsConnect;

/// The connector for `url`'s `sslmode` and `sslrootcert`. Fails, with a
/// sentence naming the file, when the root certificates cannot be read.
pub(crate) fn connector(url: &PgUrl) -> StoreResult<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match (url.ssl_mode(), url.root_cert()) {
        // `disable` never handshakes; `prefer`/`require` without roots encrypt only.
        (SslMode::Disable, _) | (_, None) => Arc::new(NameUnchecked { roots: None, provider: provider.clone() }),
        (SslMode::VerifyFull, Some(roots)) => {
            let roots = Arc::new(root_store(roots)?);
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| StoreError::Unavailable(format!("cannot check PostgreSQL server certificates: {e}")))?
        }
        (_, Some(roots)) => Arc::new(NameUnchecked { roots: Some(Arc::new(root_store(roots)?)), provider: provider.clone() }),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("cannot set up TLS for PostgreSQL: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // PostgreSQL 17's name for its protocol; older servers ignore it, and
    // `sslnegotiation=direct` needs it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Why [`connect`] failed. Neither kind quotes the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TLS settings cannot be used (an unreadable `sslrootcert`, …).
    #[error("{0}")]
    Tls(StoreError),
    /// The server could not be reached, refused TLS, failed verification,
    /// or refused the login.
    #[error("{}", why(.0))]
    Connect(tokio_postgres::Error),
}

/// What went wrong, in full: tokio-postgres's own `Display` says only "error
/// performing TLS handshake" or "db error" and keeps the cause (rustls's or
/// the server's sentence, never a password) in the error's source.
pub(crate) fn why(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A connection of its own to `url`, not a pooled one, encrypted and
/// verified exactly as the pool's, its I/O driven on a task until the client
/// is dropped. The migration runner connects with it.
pub async fn connect(url: &PgUrl) -> Result<tokio_postgres::Client, ConnectError> {
    let tls = connector(url).map_err(ConnectError::Tls)?;
    let (client, connection) = url.config().connect(tls).await.map_err(ConnectError::Connect)?;
    let shown = url.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(database = %shown, error = %why(&e), "PostgreSQL migration connection ended with an error");
        }
    });
    Ok(client)
}

/// The root certificates named by `sslrootcert` (or the system's).
fn root_store(roots: &RootCert) -> StoreResult<RootCertStore> {
    let bad = |why: String| StoreError::Unavailable(why);
    let mut store = RootCertStore::empty();
    match roots {
        RootCert::File(path) => {
            let shown = path.display();
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read the PostgreSQL sslrootcert {shown}: {e}")))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("the PostgreSQL sslrootcert {shown} is not a PEM certificate file ({e})")))?;
            if certs.is_empty() {
                return Err(bad(format!("the PostgreSQL sslrootcert {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")));
            }
            for (i, cert) in certs.into_iter().enumerate() {
                store.add(cert).map_err(|e| {
                    bad(format!("certificate {} in the PostgreSQL sslrootcert {shown} is not a usable CA certificate ({e})", i + 1))
                })?;
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(bad(format!(
                    "sslmode=verify-full without sslrootcert checks the PostgreSQL server against the system's root \
                     certificates, and none were found{}: set sslrootcert=<PEM file> in the database URL",
                    if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
                )));
            }
        }
    }
    Ok(store)
}

/// Every mode but `verify-full`: the host name is not looked at.
/// - Without roots (`prefer` and `require` without `sslrootcert`): any
///   certificate is taken (libpq's meaning), but the server must still prove
///   it holds the certificate's key.
/// - With roots (`verify-ca`, and `prefer`/`require` with a `sslrootcert`):
///   the chain must lead to one of them.
#[derive(Debug)]
struct NameUnchecked {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
