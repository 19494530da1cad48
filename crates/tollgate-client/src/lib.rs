//! A minimal MQTT client over rustls with a device certificate, built on `tollgate-mqtt`: just
//! what the load generator and the demo's simulated devices need (connect, send and read
//! packets), so the generator spends its CPU on TLS and the wire, not on a general-purpose
//! client. It keeps no session state and retries nothing: callers decide.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tollgate_mqtt::{decode, BytesMut, Connect, Packet, Protocol};

/// What can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket operation failed (`what` says which).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration or server name is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The certificate or key PEM could not be read.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The broker refused CONNECT with this reason.
    #[error("CONNACK refused: {0}")]
    Refused(&'static str),
    /// The broker sent something else than the protocol calls for, or bytes that do not decode.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
}

/// This crate's result.
pub type Result<T> = std::result::Result<T, ClientError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClientError {
    let what = what.into();
    move |source| ClientError::Io { what, source }
}

pub type Stream = TlsStream<TcpStream>;

/// TLS settings for one simulated device.
#[derive(Clone)]
pub struct DeviceTls {
    pub id: String,
    pub config: Arc<rustls::ClientConfig>,
}

pub struct Conn {
    pub rd: ReadHalf<Stream>,
    pub wr: WriteHalf<Stream>,
    pub rbuf: BytesMut,
    pub protocol: Protocol,
}

/// Open TCP + TLS + CONNECT/CONNACK. Returns the connection and whether TLS resumed.
pub async fn connect(
    addr: SocketAddr,
    dev: &DeviceTls,
    protocol: Protocol,
    keep_alive: u16,
) -> Result<(Conn, bool)> {
    connect_session(addr, dev, protocol, keep_alive, false).await
}

/// Connect with a persistent session (`persistent`: clean session 0, or a v5 session expiry).
pub async fn connect_session(
    addr: SocketAddr,
    dev: &DeviceTls,
    protocol: Protocol,
    keep_alive: u16,
    persistent: bool,
) -> Result<(Conn, bool)> {
    let dial = Dial {
        persistent,
        ..Dial::default()
    };
    connect_with(addr, dev, protocol, keep_alive, &dial).await
}

/// How to dial: the local address to bind, the TLS server name, the MQTT client id and the
/// session kind. The defaults are those of [`connect`].
#[derive(Debug, Clone, Default)]
pub struct Dial {
    /// Bind the socket to this local address first (any port).
    pub local: Option<IpAddr>,
    /// The TLS server name to verify (default `localhost`), whatever address is dialled.
    pub server_name: Option<String>,
    /// The MQTT client id (default: the device id).
    pub client_id: Option<String>,
    /// Clean session 0, or a v5 session expiry.
    pub persistent: bool,
}

/// Open TCP (from `dial.local` if set) + TLS + CONNECT/CONNACK.
pub async fn connect_with(
    addr: SocketAddr,
    dev: &DeviceTls,
    protocol: Protocol,
    keep_alive: u16,
    dial: &Dial,
) -> Result<(Conn, bool)> {
    let tcp = match dial.local {
        None => TcpStream::connect(addr)
            .await
            .map_err(io(format!("TCP connect {addr}")))?,
        Some(local) => {
            let sock = if local.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(io("socket"))?;
            sock.bind(SocketAddr::new(local, 0))
                .map_err(io(format!("binding {local}")))?;
            sock.connect(addr)
                .await
                .map_err(io(format!("TCP connect {addr} from {local}")))?
        }
    };
    tcp.set_nodelay(true).map_err(io("TCP_NODELAY"))?;
    let name = ServerName::try_from(
        dial.server_name
            .as_deref()
            .unwrap_or("localhost")
            .to_owned(),
    )
    .map_err(|e| ClientError::Tls(e.to_string()))?;
    let tls = TlsConnector::from(Arc::clone(&dev.config))
        .connect(name, tcp)
        .await
        .map_err(io("TLS handshake"))?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let (rd, wr) = tokio::io::split(tls);
    let mut c = Conn {
        rd,
        wr,
        rbuf: BytesMut::with_capacity(64 * 1024),
        protocol,
    };
    let persistent = dial.persistent;
    let mut connect = Connect {
        protocol,
        clean_start: !persistent,
        keep_alive,
        client_id: dial.client_id.as_deref().unwrap_or(dev.id.as_str()).into(),
        ..Default::default()
    };
    if persistent && protocol == Protocol::V5 {
        connect.properties.session_expiry_interval = Some(3600);
    }
    let connect = Packet::Connect(connect);
    c.send(&connect).await?;
    match c.next().await? {
        Packet::ConnAck(a) if !a.code.is_error() => Ok((c, resumed)),
        Packet::ConnAck(a) => Err(ClientError::Refused(a.code.name())),
        other => Err(ClientError::Protocol(format!(
            "expected CONNACK, got {}",
            other.kind()
        ))),
    }
}

/// Encode and write one packet on a write half.
pub async fn write_packet(
    wr: &mut WriteHalf<Stream>,
    protocol: Protocol,
    p: &Packet,
) -> Result<()> {
    let mut buf = BytesMut::new();
    p.encode(protocol, &mut buf)
        .map_err(|e| ClientError::Protocol(format!("encoding {}: {e}", p.kind())))?;
    wr.write_all(&buf).await.map_err(io("writing"))?;
    wr.flush().await.map_err(io("writing"))?;
    Ok(())
}

/// The next packet from a read half and its buffer. Cancel-safe: bytes read stay in `rbuf`.
pub async fn read_packet(
    rd: &mut ReadHalf<Stream>,
    rbuf: &mut BytesMut,
    protocol: Protocol,
) -> Result<Packet> {
    loop {
        if let Some(p) = decode(rbuf, Some(protocol), usize::MAX)
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            return Ok(p);
        }
        rbuf.reserve(64 * 1024);
        if rd.read_buf(rbuf).await.map_err(io("reading"))? == 0 {
            return Err(ClientError::Closed);
        }
    }
}

impl Conn {
    pub async fn send(&mut self, p: &Packet) -> Result<()> {
        write_packet(&mut self.wr, self.protocol, p).await
    }

    /// Next packet from the server.
    pub async fn next(&mut self) -> Result<Packet> {
        read_packet(&mut self.rd, &mut self.rbuf, self.protocol).await
    }
}

/// Build a client TLS configuration for a device certificate + key PEM file.
pub fn device_tls(
    id: &str,
    pem: &str,
    ca: &rustls::RootCertStore,
    tls13_only: bool,
    resumption: bool,
) -> Result<DeviceTls> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Credentials(format!("certificate: {e}")))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| ClientError::Credentials(format!("key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12]
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(ca.clone())
        .with_client_auth_cert(certs, key)
        .map_err(|e| ClientError::Credentials(e.to_string()))?;
    if !resumption {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Ok(DeviceTls {
        id: id.to_owned(),
        config: Arc::new(cfg),
    })
}

/// The broker's certificate as it presents it, learnt over a fully verified TLS handshake (chain
/// to the configured roots, name, signature). No MQTT is spoken; the connection is closed.
pub async fn server_certificate(
    addr: SocketAddr,
    dev: &DeviceTls,
    server_name: Option<&str>,
) -> Result<rustls::pki_types::CertificateDer<'static>> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(io(format!("TCP connect {addr}")))?;
    let name = ServerName::try_from(server_name.unwrap_or("localhost").to_owned())
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut tls = TlsConnector::from(Arc::clone(&dev.config))
        .connect(name, tcp)
        .await
        .map_err(io("TLS handshake"))?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
        .ok_or_else(|| ClientError::Tls("the server presented no certificate".to_owned()))?;
    let _ = tls.shutdown().await;
    Ok(cert)
}

/// The same device, trusting exactly `server` (learnt with [`server_certificate`]) instead of
/// verifying the server's chain on every handshake: the handshake still checks the server's
/// signature over the transcript with that certificate's key, so only the holder of the pinned
/// certificate's key can complete it. This is how a handshake-rate generator spends less CPU per
/// handshake than the broker it measures (the chain's signature checks are most of a client's
/// cost); devices in the field verify the chain.
pub fn pinned(dev: &DeviceTls, server: rustls::pki_types::CertificateDer<'static>) -> DeviceTls {
    let mut cfg = rustls::ClientConfig::clone(&dev.config);
    let algorithms = cfg.crypto_provider().signature_verification_algorithms;
    cfg.dangerous()
        .set_certificate_verifier(Arc::new(PinnedServer {
            cert: server,
            algorithms,
        }));
    DeviceTls {
        id: dev.id.clone(),
        config: Arc::new(cfg),
    }
}

/// Accepts exactly one server certificate, byte for byte, and verifies handshake signatures
/// with its key.
#[derive(Debug)]
struct PinnedServer {
    cert: rustls::pki_types::CertificateDer<'static>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, UnixTime};

    #[test]
    fn a_pinned_server_accepts_exactly_its_certificate() {
        let provider = rustls::crypto::ring::default_provider();
        let pinned = PinnedServer {
            cert: CertificateDer::from(vec![1u8, 2, 3]),
            algorithms: provider.signature_verification_algorithms,
        };
        let name = ServerName::try_from("localhost").expect("name");
        let check = |der: Vec<u8>| {
            pinned
                .verify_server_cert(&CertificateDer::from(der), &[], &name, &[], UnixTime::now())
                .is_ok()
        };
        assert!(check(vec![1, 2, 3]));
        assert!(!check(vec![1, 2, 4]));
        assert!(!check(vec![1, 2, 3, 0]));
        assert!(!pinned.supported_verify_schemes().is_empty());
    }
}
