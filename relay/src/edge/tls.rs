//! TLS termination with rustls (`--tls-cert`, `--tls-key`): wss:// and https:// on the one port.
//!
//! The ring provider is named explicitly rather than taken from the process default, so the
//! relay never depends on which rustls features other crates in the build happen to enable.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::error::Error;

/// Loads the acceptor when `--tls-cert` and `--tls-key` are set.
pub fn acceptor_from_config(config: &Config) -> Result<Option<TlsAcceptor>, Error> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => acceptor(cert, key).map(Some),
        (None, None) => Ok(None),
        _ => Err(Error::Config("--tls-cert and --tls-key go together".into())),
    }
}

/// A TLS acceptor for the PEM certificate chain at `cert` and private key at `key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| Error::Config(format!("--tls-cert {}: {err}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::Config(format!(
            "--tls-cert {}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| Error::Config(format!("--tls-key {}: {err}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::Config(format!("TLS: {err}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| Error::Config(format!("TLS certificate and key: {err}")))?;
    // WebSockets upgrade from HTTP/1.1 only (RFC 8441's HTTP/2 form is not served).
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
