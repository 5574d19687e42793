//! TLS for both PostgreSQL connections (`sslmode=` in the source URL, as libpq spells it):
//! `disable`, `prefer` (default: TLS when the server offers it, unverified), `require`
//! (TLS, unverified), `verify-full` (TLS, certificate chain and host name checked against
//! `sslrootcert=PATH` or the Mozilla roots).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How the connections use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it, without checking its certificate.
    #[default]
    Prefer,
    /// TLS, without checking the server's certificate.
    Require,
    /// TLS; the certificate chain and the host name are checked.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's names (`verify-ca` is not offered: use `verify-full`).
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}`: expected disable, prefer, require or verify-full"
                ))
            }
        })
    }

    /// The replication client's equivalent.
    pub fn replication(self, root: Option<&PathBuf>) -> pgwire_replication::TlsConfig {
        use pgwire_replication::TlsConfig;
        match self {
            SslMode::Disable => TlsConfig::disabled(),
            SslMode::Prefer => TlsConfig {
                mode: pgwire_replication::SslMode::Prefer,
                ..TlsConfig::require()
            },
            SslMode::Require => TlsConfig::require(),
            SslMode::VerifyFull => TlsConfig::verify_full(root.cloned()),
        }
    }
}

/// rustls picks its crypto from a process-wide default when several are compiled in.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The control connection's TLS settings.
pub fn client_config(mode: SslMode, root: Option<&PathBuf>) -> Result<ClientConfig, String> {
    install_crypto_provider();
    let mut roots = RootCertStore::empty();
    match root {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if mode != SslMode::VerifyFull {
        let provider = rustls::crypto::ring::default_provider();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(Unverified(Arc::new(provider))));
    }
    Ok(config)
}

/// Accepts any certificate (still checking the handshake's signatures): `prefer`/`require`.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
