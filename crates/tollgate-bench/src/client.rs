//! A minimal MQTT client over rustls, built on `tollgate-mqtt`: just what the load generator
//! needs, so the generator spends its CPU on TLS and the wire, not on a general-purpose client.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tollgate_mqtt::{decode, BytesMut, Connect, Packet, Protocol};

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
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("TCP connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").map_err(|e| anyhow!("{e}"))?;
    let tls = TlsConnector::from(Arc::clone(&dev.config))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let (rd, wr) = tokio::io::split(tls);
    let mut c = Conn {
        rd,
        wr,
        rbuf: BytesMut::with_capacity(64 * 1024),
        protocol,
    };
    let mut connect = Connect {
        protocol,
        clean_start: !persistent,
        keep_alive,
        client_id: dev.id.as_str().into(),
        ..Default::default()
    };
    if persistent && protocol == Protocol::V5 {
        connect.properties.session_expiry_interval = Some(3600);
    }
    let connect = Packet::Connect(connect);
    c.send(&connect).await?;
    match c.next().await? {
        Packet::ConnAck(a) if !a.code.is_error() => Ok((c, resumed)),
        Packet::ConnAck(a) => bail!("CONNACK refused: {}", a.code.name()),
        other => bail!("expected CONNACK, got {}", other.kind()),
    }
}

impl Conn {
    pub async fn send(&mut self, p: &Packet) -> Result<()> {
        let mut buf = BytesMut::new();
        p.encode(self.protocol, &mut buf)?;
        self.wr.write_all(&buf).await?;
        self.wr.flush().await?;
        Ok(())
    }

    /// Next packet from the server.
    pub async fn next(&mut self) -> Result<Packet> {
        loop {
            if let Some(p) = decode(&mut self.rbuf, Some(self.protocol), usize::MAX)? {
                return Ok(p);
            }
            self.rbuf.reserve(64 * 1024);
            if self.rd.read_buf(&mut self.rbuf).await? == 0 {
                bail!("connection closed by the broker");
            }
        }
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
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12]
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(ca.clone())
        .with_client_auth_cert(certs, key)?;
    if !resumption {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Ok(DeviceTls {
        id: id.to_owned(),
        config: Arc::new(cfg),
    })
}
