//! TLS to PostgreSQL, with libpq's `sslmode` meanings, so a URL copied from a
//! hosted database's dashboard (Railway, Fly, Neon, RDS…) works as it does
//! with `psql`:
//!
//! - `disable`: plain TCP;
//! - `prefer` (the default, as in libpq) and `allow`: TLS when the server
//!   offers it, plain otherwise; the certificate is not checked;
//! - `require`: TLS or no connection; the certificate is not checked (libpq's
//!   meaning: hosted databases often use a self-signed one), unless
//!   `sslrootcert=PATH` names the CA to check it against;
//! - `verify-ca`, `verify-full`: TLS with the certificate checked against
//!   `sslrootcert=PATH`, or the system's roots, and the host name checked too
//!   (rustls always checks it, so `verify-ca` is as strict as `verify-full`).
//!
//! The `postgres` crate knows only the first three, so the URL is read here and
//! handed on without the parameters it would refuse.

use std::sync::Arc;

use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

const SSL_MODES: &str = "disable, allow, prefer, require, verify-ca, verify-full";

/// The client settings and the TLS connector that `url` asks for.
pub(crate) fn prepare(url: &str) -> Result<(postgres::Config, MakeRustlsConnect), String> {
    // The query is read pair by pair and every other pair handed on byte for
    // byte: re-encoding it would turn `%20` into `+`, which the client does
    // not decode, and a URL parser would refuse several hosts (`h1,h2`).
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        };
        match key {
            "sslmode" => mode = Some(decoded()),
            "sslrootcert" => root_cert = Some(decoded()),
            _ => kept.push(pair),
        }
    }
    let (ssl_mode, verify) = match mode.as_deref() {
        None | Some("prefer") | Some("allow") => (SslMode::Prefer, false),
        Some("disable") => (SslMode::Disable, false),
        Some("require") => (SslMode::Require, root_cert.is_some()),
        Some("verify-ca") | Some("verify-full") => (SslMode::Require, true),
        Some(other) => return Err(format!("sslmode={other} is not one of {SSL_MODES}")),
    };
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: postgres::Config = rebuilt
        .parse()
        .map_err(|e| format!("cannot read the PostgreSQL URL: {e}"))?;
    config.ssl_mode(ssl_mode);
    let tls = if verify {
        verifying(root_cert.as_deref())?
    } else {
        encrypting_only()?
    };
    Ok((config, MakeRustlsConnect::new(tls)))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks the server's certificate chain and name against `root_cert` (a PEM
/// file) or the system's roots.
fn verifying(root_cert: Option<&str>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert={path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert={path}: {e}"))?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    if roots.is_empty() {
        return Err(
            "no root certificates to check the server's against: install the system's \
                    (Debian: ca-certificates) or name the CA with sslrootcert=PATH"
                .into(),
        );
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Encrypts without checking whose certificate it is (libpq's `require`).
fn encrypting_only() -> Result<ClientConfig, String> {
    let provider = provider();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth())
}

/// Accepts any certificate, but still checks that the server holds its key
/// (the handshake's signatures), so the session keys are the server's.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::params;
    use crate::{Error, Store};

    /// Whether a store opened on `url` talks to its server over TLS.
    fn encrypted(url: &str) -> crate::Result<bool> {
        let store = Store::connect(url)?;
        store.conn.query_row(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            params![],
            |r| r.get(0),
        )
    }

    #[test]
    fn the_url_decides_whether_and_how_the_connection_is_encrypted() {
        let db = crate::testing::postgres();
        let ca = std::env::var("MANIREC_TEST_POSTGRES_CA").expect(
            "MANIREC_TEST_POSTGRES_CA names the test server's certificate: \
             scripts/test-postgres start sets it",
        );
        let url = |query: &str| format!("{}?{query}", db.url());
        // libpq's default, prefer: TLS when the server offers it.
        assert!(encrypted(db.url()).unwrap());
        assert!(encrypted(&url("sslmode=require")).unwrap());
        assert!(!encrypted(&url("sslmode=disable")).unwrap());
        // The test server's certificate is its own: the system's roots refuse
        // it, its own CA vouches for it.
        let refused = encrypted(&url("sslmode=verify-full")).unwrap_err();
        assert!(
            matches!(&refused, Error::Open { reason, .. } if reason.contains("certificate")),
            "{refused}"
        );
        assert!(encrypted(&url(&format!("sslmode=verify-full&sslrootcert={ca}"))).unwrap());
        assert!(encrypted(&url(&format!("sslmode=require&sslrootcert={ca}"))).unwrap());
    }

    #[test]
    fn libpq_parameters_are_read_and_not_handed_on() {
        let (config, _) =
            prepare("postgres://u:p@db.example:6543/shop?sslmode=require&application_name=x")
                .unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_application_name(), Some("x"));
        // Other parameters pass untouched, and several hosts are fine.
        let (config, _) =
            prepare("postgres://u@h1:5432,h2:5433/shop?application_name=my%20app&sslmode=require")
                .unwrap();
        assert_eq!(config.get_application_name(), Some("my app"));
        assert_eq!(config.get_hosts().len(), 2);
        let (config, _) = prepare("postgres://u@localhost/shop").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Prefer);
        let (config, _) = prepare("postgres://u@localhost/shop?sslmode=disable").unwrap();
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
        let e = prepare("postgres://u@localhost/shop?sslmode=verify")
            .err()
            .unwrap();
        assert!(e.contains("verify-full"), "{e}");
        let e = prepare("postgres://u@localhost/shop?sslmode=verify-full&sslrootcert=/nowhere.pem")
            .err()
            .unwrap();
        assert!(e.contains("sslrootcert=/nowhere.pem"), "{e}");
    }
}
