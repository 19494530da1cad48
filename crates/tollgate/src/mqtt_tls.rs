//! The MQTT listener's TLS transport: rustls's *unbuffered* server connection driven over a
//! tokio `TcpStream`, holding no byte buffer while the connection is idle.
//!
//! Owns: the TLS handshake, record encryption and decryption, close_notify, and the three byte
//! buffers (received records, decrypted bytes not yet read, records not yet written), each
//! allocated when bytes arrive or leave and freed as soon as it is drained.
//! Must not: interpret MQTT, or decide who may connect (the listener does, from the peer's
//! certificate once [`TlsStream::accept`] returns).
//!
//! Why not tokio-rustls (which the control listener still uses): it drives rustls's buffered
//! `ServerConnection`, whose 4 KiB record buffer lives as long as the connection. A fleet is
//! mostly idle connections, and that buffer was a fifth of the memory each one held.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tollgate_sys::ProbedSocket;

/// Bytes read from the socket at a time (what rustls's own buffer reads).
const READ_CHUNK: usize = 4096;
/// The largest TLS record on the wire: header, 2^14 bytes of plaintext, and the most expansion
/// TLS 1.2 allows.
const MAX_RECORD: usize = 5 + 16_384 + 2_048;
/// While handshaking, a handshake message may span records; rustls accepts messages of up to
/// 64 KiB (a long client chain).
const MAX_HANDSHAKE_BUFFER: usize = 0x1_0000 + MAX_RECORD;
/// Encrypted bytes queued beyond which a write waits for the socket.
const HIGH_WATER: usize = 256 * 1024;
/// Room to reserve per record when encrypting (header, content type, tag; TLS 1.2's explicit
/// nonce), before asking rustls for the exact size.
const RECORD_OVERHEAD: usize = 64;

/// A server-side TLS connection over TCP, after (or during) its handshake.
pub struct TlsStream {
    tcp: ProbedSocket<TcpStream>,
    conn: UnbufferedServerConnection,
    /// Received bytes not yet processed; unallocated while nothing is pending.
    incoming: Vec<u8>,
    /// Decrypted bytes not yet read, `plain[plain_pos..]`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Records not yet written to the socket, `outgoing[out_pos..]`.
    outgoing: Vec<u8>,
    out_pos: usize,
    handshake_done: bool,
    /// The peer sent close_notify: reads end cleanly once `plain` is drained.
    peer_closed: bool,
    /// The socket reached end of stream.
    eof: bool,
    close_queued: bool,
    /// A TLS error ends the connection; it is kept to answer every later call.
    failed: Option<rustls::Error>,
    /// The reader, when a write decrypts bytes it waits for.
    read_waker: Option<Waker>,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("incoming", &self.incoming.len())
            .field("plain", &(self.plain.len() - self.plain_pos))
            .field("outgoing", &(self.outgoing.len() - self.out_pos))
            .field("handshake_done", &self.handshake_done)
            .finish_non_exhaustive()
    }
}

/// Where [`TlsStream::pump`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// The handshake needs more bytes from the peer.
    NeedsData,
    /// Application data may be written (and read, as it arrives).
    Traffic,
    /// Both sides sent close_notify.
    Closed,
}

/// What [`TlsStream::pump`] should do once application data may be written.
#[derive(Clone, Copy)]
enum Then<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

impl TlsStream {
    /// Complete the server side of a handshake on `tcp`. A TLS error comes back as an
    /// `InvalidData` I/O error wrapping the `rustls::Error`, after the alert that tells the
    /// peer why was sent (best effort).
    pub async fn accept(
        tcp: ProbedSocket<TcpStream>,
        config: Arc<ServerConfig>,
    ) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut s = TlsStream {
            tcp,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_pos: 0,
            outgoing: Vec::new(),
            out_pos: 0,
            handshake_done: false,
            peer_closed: false,
            eof: false,
            close_queued: false,
            failed: None,
            read_waker: None,
        };
        std::future::poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }

    /// The rustls connection, for the negotiated parameters and the peer's certificates.
    pub fn connection(&self) -> &UnbufferedServerConnection {
        &self.conn
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let pumped = match self.pump(Then::Nothing) {
                Ok(p) => p,
                Err(e) => {
                    // Send the alert rustls queued, if the socket takes it now.
                    let _ = self.poll_write_out(cx);
                    return Poll::Ready(Err(tls_error(e)));
                }
            };
            ready!(self.poll_write_out(cx))?;
            match pumped {
                Pumped::Traffic => {
                    self.handshake_done = true;
                    return Poll::Ready(Ok(()));
                }
                Pumped::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the handshake",
                    )))
                }
                Pumped::NeedsData => {
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the peer closed the connection during the handshake",
                        )));
                    }
                }
            }
        }
    }

    /// Feed the received bytes to rustls until it needs more, or application data may be
    /// written; queue whatever it wants sent; move decrypted bytes to `plain`; then do `then`.
    fn pump(&mut self, then: Then<'_>) -> Result<Pumped, rustls::Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.pump_inner(then);
        if let Err(e) = &r {
            // What rustls queued (an alert telling the peer why) is still sent.
            self.drain_encodes();
            self.failed = Some(e.clone());
        }
        r
    }

    fn pump_inner(&mut self, then: Then<'_>) -> Result<Pumped, rustls::Error> {
        let plain_before = self.plain.len();
        let result = loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming[..]);
            let step = match state {
                Err(e) => Err(e),
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    let mut res = Ok(None);
                    while let Some(rec) = r.next_record() {
                        match rec {
                            Ok(rec) => {
                                discard += rec.discard;
                                self.plain.extend_from_slice(rec.payload);
                            }
                            Err(e) => {
                                res = Err(e);
                                break;
                            }
                        }
                    }
                    res
                }
                // Early data is never enabled in the server configuration (it could be
                // replayed), so rustls never offers it.
                Ok(ConnectionState::ReadEarlyData(_)) => Err(rustls::Error::General(
                    "early data, which this server never enables".into(),
                )),
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode_into(&mut self.outgoing, |buf| e.encode(buf)).map(|()| None)
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    // The records are queued in `outgoing`, in order, and leave with the next
                    // write to the socket.
                    t.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Pumped::NeedsData)),
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    Ok(Some(Pumped::Closed))
                }
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    let done = match then {
                        Then::Nothing => Ok(()),
                        Then::Encrypt(data) => {
                            encrypt_into(&mut self.outgoing, data.len(), |buf| w.encrypt(data, buf))
                        }
                        Then::CloseNotify => {
                            encrypt_into(&mut self.outgoing, 0, |buf| w.queue_close_notify(buf))
                        }
                    };
                    done.map(|()| Some(Pumped::Traffic))
                }
                Ok(_) => Err(rustls::Error::General(
                    "unexpected state of the TLS connection".into(),
                )),
            };
            // The state borrowed `incoming`; it is handled, so its bytes may go.
            if discard > 0 {
                self.incoming.drain(..discard);
            }
            match step {
                Ok(None) => continue,
                Ok(Some(p)) => break Ok(p),
                Err(e) => break Err(e),
            }
        };
        // A buffer grown for a large record goes once the record is processed.
        if self.incoming.is_empty() && self.incoming.capacity() > READ_CHUNK {
            self.incoming = Vec::new();
        }
        if self.plain.len() > plain_before {
            if let Some(w) = self.read_waker.take() {
                w.wake();
            }
        }
        result
    }

    /// After an error, take the alert rustls queued. One call only: the queued record comes
    /// out before rustls reads any more of the buffer, and a second call would make it parse
    /// the bytes that failed again. rustls is given the same buffer as always: its handshake
    /// deframer remembers positions in it, and any other slice would not hold what they point
    /// at.
    fn drain_encodes(&mut self) {
        let UnbufferedStatus { state, discard } =
            self.conn.process_tls_records(&mut self.incoming[..]);
        if let Ok(ConnectionState::EncodeTlsData(mut e)) = state {
            let _ = encode_into(&mut self.outgoing, |buf| e.encode(buf));
        }
        if discard > 0 {
            self.incoming.drain(..discard);
        }
    }

    /// Read more bytes from the socket into `incoming`: `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let limit = if self.handshake_done {
            MAX_RECORD
        } else {
            MAX_HANDSHAKE_BUFFER
        };
        let filled = self.incoming.len();
        if filled >= limit {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS record larger than the protocol allows",
            )));
        }
        loop {
            match self.tcp.poll_read_ready(cx) {
                Poll::Pending => {
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            // Allocated only now that bytes are waiting, so an idle connection holds none.
            // Read into spare capacity: nothing is zeroed first.
            let mut want = READ_CHUNK;
            if filled >= 5 {
                let record =
                    5 + usize::from(u16::from_be_bytes([self.incoming[3], self.incoming[4]]));
                want = want.max(record.saturating_sub(filled));
            }
            let room = (filled + want).min(limit) - filled;
            self.incoming.reserve_exact(room);
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(0) => {
                    self.eof = true;
                    return Poll::Ready(Ok(0));
                }
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Write queued records to the socket until none are left.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.outgoing.len() {
            let n =
                ready!(Pin::new(&mut *self.tcp).poll_write(cx, &self.outgoing[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.outgoing.clear();
        self.out_pos = 0;
        if self.outgoing.capacity() > HIGH_WATER {
            self.outgoing = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain.clear();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(tls_error(e.clone())));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
            // What rustls queues while reading (a key update's answer) leaves with the next
            // write: the reader must not take the writer's place as the socket's write waker.
            match this.poll_fill(cx) {
                Poll::Pending => {
                    // Nothing to read: the connection is idle (or between bursts), and keeps
                    // no buffer while it waits. A busy one reuses them.
                    this.plain = Vec::new();
                    if this.out_pos >= this.outgoing.len() {
                        this.outgoing = Vec::new();
                        this.out_pos = 0;
                    }
                    this.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(_)) => {
                    if let Err(e) = this.pump(Then::Nothing) {
                        return Poll::Ready(Err(tls_error(e)));
                    }
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() - this.out_pos >= HIGH_WATER {
            ready!(this.poll_write_out(cx))?;
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.pump(Then::Encrypt(data)).map_err(tls_error)?;
        // Start sending now; what the socket does not take yet leaves with the flush.
        if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut *this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued && this.failed.is_none() {
            this.close_queued = true;
            this.pump(Then::CloseNotify).map_err(tls_error)?;
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut *this.tcp).poll_shutdown(cx)
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Append what `encode` writes to `out`, growing it to the size rustls asks for.
fn encode_into(
    out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = 0;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(s)) if s.required_size > room => {
                room = s.required_size;
            }
            Err(EncodeError::AlreadyEncoded) => {
                out.truncate(start);
                return Ok(());
            }
            Err(e) => {
                out.truncate(start);
                return Err(rustls::Error::General(format!(
                    "encoding a TLS record: {e}"
                )));
            }
        }
    }
}

/// Append what `encrypt` writes to `out`, growing it to the size rustls asks for.
fn encrypt_into(
    out: &mut Vec<u8>,
    plaintext: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = plaintext + RECORD_OVERHEAD * (plaintext / 16_384 + 1);
    loop {
        out.resize(start + room, 0);
        match encrypt(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) if s.required_size > room => {
                room = s.required_size;
            }
            Err(e) => {
                out.truncate(start);
                return Err(rustls::Error::General(format!(
                    "encrypting a TLS record: {e}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    struct Pki {
        server: Arc<ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        anonymous: Arc<rustls::ClientConfig>,
    }

    fn pki() -> Pki {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(vec![name.to_owned()])
                .expect("params")
                .signed_by(&key, &issuer)
                .expect("cert");
            (
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("root");
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            Arc::clone(&provider),
        )
        .build()
        .expect("verifier");
        let (chain, key) = leaf("localhost");
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config");
        let (chain, key) = leaf("device-1");
        let client = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(Arc::clone(&roots))
            .with_client_auth_cert(chain, key)
            .expect("client config");
        let anonymous = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Pki {
            server: Arc::new(server),
            client: Arc::new(client),
            anonymous: Arc::new(anonymous),
        }
    }

    /// A listener on 127.0.0.1 whose first connection is accepted with [`TlsStream::accept`].
    async fn serve_one(
        config: Arc<ServerConfig>,
    ) -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<io::Result<TlsStream>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            TlsStream::accept(ProbedSocket::new(tcp), config).await
        });
        (addr, task)
    }

    async fn dial(
        addr: std::net::SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
    }

    /// What the stream holds once a read found nothing to return (as the driver's always
    /// pending read does on an idle connection).
    fn held_when_idle(s: &mut TlsStream) -> usize {
        let mut b = [0u8; 16];
        let mut rb = ReadBuf::new(&mut b);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(
            Pin::new(&mut *s).poll_read(&mut cx, &mut rb).is_pending(),
            "nothing was sent, so nothing is read"
        );
        s.incoming.capacity() + s.plain.capacity() + s.outgoing.capacity()
    }

    #[tokio::test]
    async fn data_crosses_both_ways_in_many_records_and_an_idle_connection_holds_no_buffer() {
        let pki = pki();
        let (addr, server) = serve_one(Arc::clone(&pki.server)).await;
        let mut client = dial(addr, pki.client).await.expect("client handshake");
        let mut server = server.await.expect("task").expect("server handshake");
        let peer = server
            .connection()
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        assert!(
            peer.is_some(),
            "the client's certificate is available after the handshake"
        );

        // 100 KB: several full records, and reads that end mid-record.
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&payload).await.expect("client write");
        client.flush().await.expect("client flush");
        let mut got = vec![0u8; payload.len()];
        server.read_exact(&mut got).await.expect("server read");
        assert_eq!(got, payload);
        server.write_all(&payload).await.expect("server write");
        server.flush().await.expect("server flush");
        let mut back = vec![0u8; payload.len()];
        client.read_exact(&mut back).await.expect("client read");
        assert_eq!(back, payload);

        assert_eq!(
            held_when_idle(&mut server),
            0,
            "an idle connection keeps no byte buffer: {server:?}"
        );

        // A small exchange after idling works and leaves nothing behind either.
        client.write_all(b"ping").await.expect("write");
        client.flush().await.expect("flush");
        let mut four = [0u8; 4];
        server.read_exact(&mut four).await.expect("read");
        assert_eq!(&four, b"ping");
        assert_eq!(held_when_idle(&mut server), 0, "{server:?}");
    }

    #[tokio::test]
    async fn close_notify_ends_reads_cleanly_and_a_bare_tcp_close_is_an_unexpected_eof() {
        let pki = pki();
        // The server closes: the client reads a clean end of stream.
        let (addr, server) = serve_one(Arc::clone(&pki.server)).await;
        let mut client = dial(addr, Arc::clone(&pki.client))
            .await
            .expect("handshake");
        let mut server = server.await.expect("task").expect("server handshake");
        server.shutdown().await.expect("server shutdown");
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).await.expect("clean end"), 0);

        // The client closes with close_notify: the server reads a clean end of stream.
        let (addr, server) = serve_one(Arc::clone(&pki.server)).await;
        let mut client = dial(addr, Arc::clone(&pki.client))
            .await
            .expect("handshake");
        let mut server = server.await.expect("task").expect("server handshake");
        client.shutdown().await.expect("client shutdown");
        assert_eq!(server.read(&mut buf).await.expect("clean end"), 0);

        // The client's TCP connection drops without close_notify: the server is told. (No
        // session tickets: a client closing with them unread would reset the connection.)
        let mut no_tickets = (*pki.server).clone();
        no_tickets.send_tls13_tickets = 0;
        let (addr, server) = serve_one(Arc::new(no_tickets)).await;
        let client = dial(addr, pki.client).await.expect("handshake");
        let mut server = server.await.expect("task").expect("server handshake");
        drop(client.into_inner().0);
        let e = server.read(&mut buf).await.expect_err("truncation");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_client_without_a_certificate_gets_an_alert_and_the_server_a_rustls_error() {
        let pki = pki();
        let (addr, server) = serve_one(Arc::clone(&pki.server)).await;
        let client = async {
            let mut c = dial(addr, pki.anonymous).await?;
            // TLS 1.3: the client learns of the refusal on its first read.
            let mut buf = [0u8; 1];
            c.read(&mut buf).await
        };
        let (client, server) = tokio::join!(client, server);
        let e = server.expect("task").expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let inner = e
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .expect("a rustls error inside");
        assert_eq!(inner, &rustls::Error::NoCertificatesPresented);
        let ce = client.expect_err("the client was told");
        assert!(
            ce.to_string().contains("CertificateRequired") || ce.to_string().contains("alert"),
            "the client received the alert: {ce}"
        );
    }

    #[tokio::test]
    async fn garbage_instead_of_a_client_hello_is_a_tls_error_not_a_hang() {
        let pki = pki();
        let (addr, server) = serve_one(Arc::clone(&pki.server)).await;
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("the server answers at once")
            .expect("task")
            .expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
