//! `wss://`: the rustls client configuration (system roots, `--ca-file`, or `--insecure`), the
//! handshake, and [`Wire`], the one place where a client's bytes differ between plain TCP and
//! TLS. As in the relay (`relay/src/transport/wire.rs`), TLS is a `rustls::ClientConnection`
//! beside the raw `TcpStream`: ciphertext goes through it, readiness stays the socket's, and
//! the plain path is a direct `try_read`/`try_write` on the socket as before.

use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;

use crate::target::{Target, TargetFlags};
use crate::Error;

/// Plaintext room a TLS read needs before it reads more ciphertext: what one `read_tls` (4 KiB
/// on top of at most one incomplete 16 KiB record) can decrypt, rounded up. Below that the
/// read stops, so rustls never holds plaintext the caller has no room for.
const TLS_READ_ROOM: usize = 24 * 1024;

/// `read_tls` calls per read: records that decrypt to nothing (session tickets) must not keep
/// one connection reading for as long as the server sends them.
const TLS_READS: usize = 16;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configuration for every `wss://` connection of the run.
pub fn client_config(flags: &TargetFlags) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("TLS versions: {e}")))?;
    let mut config = if flags.insecure {
        if flags.ca_file.is_some() {
            return Err(Error::Config(
                "--insecure skips verification, so --ca-file would not be used: give one of them"
                    .into(),
            ));
        }
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else {
        let roots = match &flags.ca_file {
            Some(path) => ca_file_roots(path)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // The relay (and proxies in front of it) speak HTTP/1.1 for the upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn ca_file_roots(path: &Path) -> Result<RootCertStore, Error> {
    let bad = |why: String| Error::Tls(format!("--ca-file {}: {why}", path.display()));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE in the file".into()));
    }
    Ok(roots)
}

/// The operating system's trust store (rustls-native-certs: on Linux the OpenSSL locations,
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` respected).
fn system_roots() -> Result<RootCertStore, Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(Error::Tls(format!(
            "no system root certificates found{why}: give --ca-file, or --insecure"
        )));
    }
    Ok(roots)
}

/// `--insecure`: accepts any certificate (self-signed, expired, another name). The handshake
/// signatures are still checked against the certificate presented, so a TLS handshake costs
/// the client what a verified one costs, minus the chain building.
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS server name of a target: its host as written (SNI; an IP address is matched
/// against the certificate's IP names and sends no SNI).
pub fn server_name(t: &Target) -> Result<ServerName<'static>, String> {
    ServerName::try_from(t.host.clone())
        .map_err(|e| format!("{:?} as a TLS server name: {e}", t.host))
}

/// A TLS failure as the report shows it, with the fix for the usual cause.
pub fn describe(e: &rustls::Error, host: &str) -> String {
    let hint = match e {
        rustls::Error::InvalidCertificate(_) => {
            " (a private CA needs --ca-file; --insecure skips verification)"
        }
        _ => "",
    };
    format!("TLS handshake with {host}: {e}{hint}")
}

/// How a client's bytes meet its socket.
pub(crate) enum Wire {
    Plain,
    Tls(Box<TlsWire>),
}

pub(crate) struct TlsWire {
    conn: ClientConnection,
    /// Leading bytes of the caller's unwritten data that rustls already holds: they count as
    /// written only once every record they went into is on the socket.
    fed: usize,
}

impl Wire {
    pub(crate) fn tls(conn: ClientConnection) -> Wire {
        Wire::Tls(Box::new(TlsWire { conn, fed: 0 }))
    }

    /// Bytes below the caller's buffer wait to be written (TLS records, a key update reply).
    #[inline]
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Wire::Plain => false,
            Wire::Tls(t) => t.conn.wants_write(),
        }
    }

    /// Writes from `data`, the caller's unwritten bytes (the same prefix on every call until
    /// it is reported written). Returns how many of them are now wholly on the socket;
    /// `WouldBlock` when the socket is full.
    #[inline]
    pub(crate) fn try_write(&mut self, stream: &TcpStream, data: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain => stream.try_write(data),
            Wire::Tls(t) => t.write(stream, data),
        }
    }

    /// Reads into `out`: `Ok(0)` is the end of the stream, `WouldBlock` nothing to read now.
    #[inline]
    pub(crate) fn try_read(&mut self, stream: &TcpStream, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain => stream.try_read(out),
            Wire::Tls(t) => t.read(stream, out),
        }
    }

    /// Moves the plaintext rustls decrypted but nobody read yet (frames right behind the
    /// upgrade response) into `into`, so the connection starts with all of it.
    pub(crate) fn take_plaintext(&mut self, into: &mut Vec<u8>) {
        if let Wire::Tls(t) = self {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = t.conn.reader().read(&mut chunk) {
                if n == 0 {
                    break;
                }
                into.extend_from_slice(&chunk[..n]);
            }
        }
    }

    /// Best effort at the end: a TLS close_notify, so the server sees a clean end.
    pub(crate) fn close(&mut self, stream: &TcpStream) {
        if let Wire::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.conn.write_tls(&mut Io(stream));
        }
    }
}

impl TlsWire {
    fn write(&mut self, stream: &TcpStream, data: &[u8]) -> io::Result<usize> {
        loop {
            if self.fed < data.len() {
                // rustls takes what its outgoing buffer has room for (64 KiB by default).
                self.fed += self.conn.writer().write(&data[self.fed..])?;
            }
            if !self.conn.wants_write() {
                let done = std::mem::take(&mut self.fed);
                if done == 0 && !data.is_empty() {
                    // Nothing taken and nothing to write: closed for writing.
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                return Ok(done);
            }
            if self.conn.write_tls(&mut Io(stream))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
    }

    fn read(&mut self, stream: &TcpStream, out: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        let mut blocked = false;
        let mut reads = 0;
        loop {
            // Plaintext rustls already holds comes first (it refuses to read more ciphertext
            // while its plaintext buffer is full).
            let mut eof = false;
            while got < out.len() {
                match self.conn.reader().read(&mut out[got..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // A TCP FIN without close_notify: an end like any other for the counts.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        eof = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if eof {
                // With data, the end is reported on the next call (rustls repeats it).
                return Ok(got);
            }
            // With something read, stop where one more read_tls could decrypt more than `out`
            // has room for. With nothing read yet (a small `out`, the response head) read
            // anyway: rustls keeps the rest, the next call hands it out before touching the
            // socket, and `take_plaintext` collects it after the head.
            if blocked || reads == TLS_READS || (got > 0 && out.len() - got < TLS_READ_ROOM) {
                // Nothing yet is "would block", not the end; after TLS_READS the socket stays
                // readable, so the caller comes back.
                return if got == 0 {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(got)
                };
            }
            reads += 1;
            match self.conn.read_tls(&mut Io(stream)) {
                // Ok(0): rustls notes the EOF; the plaintext loop then reports it.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked = true,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // rustls queued an alert saying why: send it if the socket takes it now.
                let _ = self.conn.write_tls(&mut Io(stream));
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

/// Why a TLS handshake did not complete.
pub(crate) enum HandshakeError {
    Io(io::Error),
    Tls(rustls::Error),
    /// The server closed the connection mid-handshake.
    Eof,
}

/// Drives the TLS handshake of a fresh connection to its end (the client's Finished written).
pub(crate) async fn handshake(
    stream: &TcpStream,
    conn: &mut ClientConnection,
) -> Result<(), HandshakeError> {
    loop {
        if conn.wants_write() {
            match conn.write_tls(&mut Io(stream)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stream.writable().await.map_err(HandshakeError::Io)?
                }
                Err(e) => return Err(HandshakeError::Io(e)),
            }
            continue;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        match conn.read_tls(&mut Io(stream)) {
            Ok(0) => return Err(HandshakeError::Eof),
            Ok(_) => {
                if let Err(e) = conn.process_new_packets() {
                    let _ = conn.write_tls(&mut Io(stream));
                    return Err(HandshakeError::Tls(e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stream.readable().await.map_err(HandshakeError::Io)?
            }
            Err(e) => return Err(HandshakeError::Io(e)),
        }
    }
}

/// One TLS handshake per distinct `wss://` target before the ramp (blocking, on the
/// coordinator's thread), so a certificate that does not verify stops the run with one clear
/// error instead of thousands of failed handshakes against the deployment. A target that
/// cannot be reached at all is left to the run, which counts and reports that.
pub fn preflight(
    targets: &[Target],
    config: &Arc<ClientConfig>,
    timeout: Duration,
) -> Result<(), Error> {
    let mut seen = Vec::new();
    for t in targets.iter().filter(|t| t.tls) {
        if seen.contains(&(t.addr, &t.host)) {
            continue;
        }
        seen.push((t.addr, &t.host));
        let name = server_name(t).map_err(Error::Tls)?;
        let Ok(mut sock) = std::net::TcpStream::connect_timeout(&t.addr, timeout) else {
            continue;
        };
        let _ = sock.set_read_timeout(Some(timeout));
        let _ = sock.set_write_timeout(Some(timeout));
        let mut conn = ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| Error::Tls(format!("TLS client for {}: {e}", t.host)))?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                // rustls errors come wrapped in an io::Error: those are the verdict.
                if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    return Err(Error::Tls(describe(tls, &t.host_header)));
                }
                break;
            }
        }
        conn.send_close_notify();
        let _ = conn.complete_io(&mut sock);
    }
    Ok(())
}

/// The tokio socket as `std::io` for rustls. `try_read`/`try_write` keep tokio's readiness
/// right: a `WouldBlock` clears it, so the next `ready().await` waits for a new event.
struct Io<'a>(&'a TcpStream);

impl Read for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
