//! The tokio driver: reads bytes, waits for the mailbox, the control channel, the store's
//! watermark and the deadlines, and writes each batch of responses with one `write_all`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout_at, Instant};
use tollgate_events::{EventKind, RefusalReason};
use tollgate_mqtt::{
    decode, BytesMut, ConnAck, Connect, DecodeError, Packet, Protocol, ReasonCode,
};

use super::progress::Verdict;
use super::{Conn, End, Now, IDLE_CHUNK, READ_CHUNK};
use crate::session::{Control, ControlInbox};
use crate::{PeerIdentity, Shared};

/// Serve one connection. The stream is split before the future is made: an async fn keeps its
/// arguments' space for as long as it lives, and this future lives as long as the connection,
/// so it holds the two halves' handles instead of room for a whole TLS stream.
pub(crate) fn run<S>(
    shared: Arc<Shared>,
    stream: S,
    peer: PeerIdentity,
) -> impl std::future::Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (rd, wr) = tokio::io::split(stream);
    serve_split(Box::new(Opening {
        shared,
        rd,
        wr,
        peer,
    }))
}

/// What serving a connection starts from, boxed so the long-lived future keeps only a pointer
/// to it (and nothing once it is taken apart).
struct Opening<S> {
    shared: Arc<Shared>,
    rd: tokio::io::ReadHalf<S>,
    wr: tokio::io::WriteHalf<S>,
    peer: PeerIdentity,
}

async fn serve_split<S>(opening: Box<Opening<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // The opening's values live in this block only: the `Conn` keeps its own `shared` and
    // `peer`, and the loop's state takes their room.
    let (mut conn, mut rd, mut wr, mut rbuf, inbox) = {
        let Opening {
            shared,
            mut rd,
            mut wr,
            peer,
        } = *opening;
        // Idle connections are the common case in a fleet: start small, grow under load.
        let mut rbuf = BytesMut::with_capacity(IDLE_CHUNK);
        let inbox = Arc::new(ControlInbox::default());
        // Boxed and freed once the session is attached: what stays for the connection's life
        // is the `Conn` and its loop, not room for every future the opening awaited.
        let opened = Box::pin(open(&shared, &mut rd, &mut wr, &mut rbuf, &peer, &inbox)).await;
        let Some(conn) = opened else {
            return;
        };
        (conn, rd, wr, rbuf, inbox)
    };
    let shared = Arc::clone(&conn.shared);
    let v5 = conn.protocol == tollgate_mqtt::Protocol::V5;
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    shared.stats.connects_total.fetch_add(1, Ordering::Relaxed);
    if v5 {
        shared.stats.connections_v5.fetch_add(1, Ordering::Relaxed);
        shared
            .stats
            .connects_v5_total
            .fetch_add(1, Ordering::Relaxed);
    }

    // 3. The packet loop.
    let end = conn.run_loop(&mut rd, &mut wr, &mut rbuf, &inbox).await;
    shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
    if v5 {
        shared.stats.connections_v5.fetch_sub(1, Ordering::Relaxed);
    }
    // A client that stopped reading would hold the close (TLS close_notify) forever.
    if !matches!(end, End::Stalled(_)) {
        let _ = tokio::time::timeout(shared.config.write_timeout, wr.shutdown()).await;
    }
    conn.finish(end);
}

/// CONNECT within the deadline, then identity, client id and session: the attached `Conn`, or
/// `None` once the client was answered and the refusal recorded.
async fn open<R, W>(
    shared: &Arc<Shared>,
    rd: &mut R,
    wr: &mut W,
    rbuf: &mut BytesMut,
    peer: &PeerIdentity,
    inbox: &Arc<ControlInbox>,
) -> Option<Conn>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = peer
        .connect_deadline
        .unwrap_or_else(|| Instant::now() + shared.config.connect_timeout);
    let max_packet = shared.config.max_packet_size as usize;

    // 1. CONNECT, within the deadline.
    let connect = match timeout_at(deadline, Box::pin(read_connect(rd, rbuf, max_packet))).await {
        Err(_) => {
            refuse(
                shared,
                peer,
                RefusalReason::Timeout,
                "no CONNECT before the deadline".into(),
            );
            return None;
        }
        Ok(Err(ReadError::Io(e))) => {
            refuse(
                shared,
                peer,
                RefusalReason::MalformedPacket,
                format!("closed before CONNECT: {e}"),
            );
            return None;
        }
        Ok(Err(ReadError::Decode(e))) => {
            let reason = match e {
                DecodeError::UnsupportedProtocol(_) => RefusalReason::UnsupportedProtocol,
                _ => RefusalReason::MalformedPacket,
            };
            // The protocol level is unknown: answer like a 3.1.1 server would.
            if matches!(e, DecodeError::UnsupportedProtocol(_)) {
                let mut out = BytesMut::new();
                let ack = ConnAck {
                    code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                    ..Default::default()
                };
                if Packet::ConnAck(ack)
                    .encode(Protocol::V311, &mut out)
                    .is_ok()
                {
                    let _ = wr.write_all(&out).await;
                    let _ = wr.flush().await;
                }
            }
            shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            refuse(shared, peer, reason, e.to_string());
            return None;
        }
        Ok(Ok(c)) => c,
    };
    if shared.shutting_down.load(Ordering::Acquire) {
        let _ = write_connack(
            wr,
            connect.protocol,
            ReasonCode::SERVER_UNAVAILABLE,
            "server shutting down",
        )
        .await;
        refuse(
            shared,
            peer,
            RefusalReason::ShuttingDown,
            "server shutting down".into(),
        );
        return None;
    }

    // 2. Identity, client id and session.
    let conn = match Box::pin(Conn::accept(shared, peer, connect, Arc::clone(inbox))).await {
        Ok(c) => c,
        Err((protocol, code, reason, why)) => {
            let _ = write_connack(wr, protocol, code, &why).await;
            refuse(shared, peer, reason, why);
            return None;
        }
    };
    Some(conn)
}

fn refuse(shared: &Shared, peer: &PeerIdentity, reason: RefusalReason, detail: String) {
    tracing::debug!(device = %peer.device_id, ?reason, %detail, "connection refused");
    *shared
        .stats
        .connect_refused
        .lock()
        .entry(reason.as_str())
        .or_default() += 1;
    shared.emit(EventKind::ConnectionRefused {
        addr: peer.addr,
        device: Some(peer.device_id.clone()),
        reason,
        detail,
    });
}

async fn write_connack<W: AsyncWrite + Unpin>(
    wr: &mut W,
    protocol: Protocol,
    code: ReasonCode,
    why: &str,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    let mut ack = ConnAck {
        code,
        ..Default::default()
    };
    if protocol == Protocol::V5 {
        ack.properties.reason_string = Some(why.to_owned());
    }
    if Packet::ConnAck(ack).encode(protocol, &mut out).is_ok() {
        wr.write_all(&out).await?;
        wr.flush().await?;
    }
    Ok(())
}

enum ReadError {
    Io(String),
    Decode(DecodeError),
}

async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    rbuf: &mut BytesMut,
    max_packet: usize,
) -> Result<Connect, ReadError> {
    loop {
        match decode(rbuf, None, max_packet) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            Ok(Some(_)) => return Err(ReadError::Decode(DecodeError::FirstPacketNotConnect)),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Decode(e)),
        }
        rbuf.reserve(IDLE_CHUNK);
        match rd.read_buf(rbuf).await {
            Ok(0) => return Err(ReadError::Io("end of stream".into())),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e.to_string())),
        }
    }
}

impl Conn {
    pub(super) async fn run_loop<R, W>(
        &mut self,
        rd: &mut R,
        wr: &mut W,
        rbuf: &mut BytesMut,
        ctrl: &ControlInbox,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let max_packet = self.shared.config.max_packet_size as usize;
        let packet_timeout = self.shared.config.packet_timeout;
        let mut last_rx = Instant::now();
        let session = Arc::clone(&self.session);
        let probe = self.peer.transport.clone();

        // A revocation or policy change published while this connection was attaching never
        // reached it as a Recheck: compare snapshots once now.
        if self.gate.stale(&self.shared) {
            if let Some(end) = self.recheck() {
                let _ = self.flush(wr).await;
                return end;
            }
        }
        // Packets that arrived with CONNECT.
        if let Some(end) = self.process_input(rbuf, max_packet, Now::current()) {
            let _ = self.flush(wr).await;
            return end;
        }
        // A packet that has started (bytes in `rbuf` that are not a whole packet yet) must be
        // complete by then, whatever the keep-alive.
        let mut packet_deadline = (!rbuf.is_empty()).then(|| Instant::now() + packet_timeout);
        let cert_deadline = self.cert_deadline;
        let mut wm = self.out.wm.clone();
        loop {
            if self.pump_mailbox(Now::current()) {
                // More is queued than one batch: come back for it without waiting.
                session.notify.notify_one();
            }
            if !self.dequeued.is_empty() {
                let ops = std::mem::take(&mut self.dequeued);
                self.persist(ops);
            }
            self.out.release_held();
            let wait_store = !self.out.held.is_empty() || self.wm_blocked;
            if let Err(e) = self.flush(wr).await {
                return self.write_failed(&e);
            }
            let next_sample = if probe.is_some() {
                self.progress.next_sample()
            } else {
                None
            };
            let window_open = self.window_open();
            let ka_deadline = self.keep_alive.map(|ka| last_rx + ka);
            let next_timer = [ka_deadline, cert_deadline, packet_deadline, next_sample]
                .into_iter()
                .flatten()
                .min();
            if rbuf.capacity() == rbuf.len() {
                rbuf.reserve(IDLE_CHUNK);
            }
            let spare = rbuf.capacity() - rbuf.len();
            tokio::select! {
                biased;
                c = ctrl.recv() => match c {
                    Control::Recheck => {
                        if let Some(end) = self.recheck() {
                            let _ = self.flush(wr).await;
                            return end;
                        }
                    }
                    Control::Close { code, reason } => {
                        self.out.push_disconnect(code, Some(reason.clone()));
                        let _ = self.flush(wr).await;
                        return End::Closed { code, reason };
                    }
                    Control::TakeOver(ack) => {
                        self.out.push_disconnect(ReasonCode::SESSION_TAKEN_OVER, Some("session taken over".into()));
                        let _ = self.flush(wr).await;
                        return End::TakenOver(ack);
                    }
                },
                r = rd.read_buf(rbuf) => match r {
                    Ok(0) => return End::Io("connection closed by peer".into()),
                    Ok(n) => {
                        last_rx = Instant::now();
                        let before = rbuf.len();
                        if let Some(end) = self.process_input(rbuf, max_packet, Now::current()) {
                            let _ = self.flush(wr).await;
                            return end;
                        }
                        packet_deadline = if rbuf.is_empty() {
                            None
                        } else if rbuf.len() < before || packet_deadline.is_none() {
                            // A new packet has started.
                            Some(last_rx + packet_timeout)
                        } else {
                            packet_deadline
                        };
                        // A read that filled the buffer means a busy client: read in big
                        // chunks. A quiet one keeps (or goes back to) a small buffer.
                        let busy = n >= spare;
                        if !busy && rbuf.is_empty() && rbuf.capacity() > 4 * READ_CHUNK {
                            *rbuf = BytesMut::new();
                        }
                        let want = if busy { READ_CHUNK } else { IDLE_CHUNK };
                        if rbuf.capacity() - rbuf.len() < want / 2 {
                            rbuf.reserve(want);
                        }
                        if std::mem::take(&mut self.congested) {
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(e) => return End::Io(e.to_string()),
                },
                _ = session.notify.notified(), if window_open => {}
                _ = async { if let Some(w) = wm.as_mut() { let _ = w.changed().await; } }, if wait_store && wm.is_some() => {}
                // One timer for every deadline (a `Sleep` each would bloat every connection).
                _ = async { if let Some(d) = next_timer { sleep_until(d).await } }, if next_timer.is_some() => {
                    let now = Instant::now();
                    let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
                    if due(ka_deadline) {
                        self.out.push_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT, Some("keep-alive timeout".into()));
                        let _ = self.flush(wr).await;
                        return End::KeepAlive;
                    }
                    if due(cert_deadline) {
                        let reason = "client certificate expired".to_owned();
                        self.out.push_disconnect(ReasonCode::NOT_AUTHORIZED, Some(reason.clone()));
                        let _ = self.flush(wr).await;
                        return End::Closed { code: ReasonCode::NOT_AUTHORIZED, reason };
                    }
                    if due(packet_deadline) {
                        let detail = format!(
                            "packet not completed within {} s ({} of {} bytes received)",
                            packet_timeout.as_secs_f32(),
                            rbuf.len(),
                            packet_len(rbuf).map_or_else(|| "?".to_owned(), |n| n.to_string()),
                        );
                        self.out.push_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT, Some(detail.clone()));
                        let _ = self.flush(wr).await;
                        return End::PacketTimeout(detail);
                    }
                    if due(next_sample) {
                        let sample = probe.as_ref().and_then(|p| p.sample());
                        if let Verdict::Stalled { unsent } = self.progress.sample(sample, now) {
                            return End::Stalled(format!(
                                "the client took nothing for {} s ({unsent} bytes unsent)",
                                self.shared.config.write_timeout.as_secs_f32()
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Write the outbox. Each write must make progress within the write timeout (a client that
    /// stops reading fills the socket's buffer and blocks us).
    pub(super) async fn flush<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> std::io::Result<()> {
        if self.out.wbuf.is_empty() {
            return Ok(());
        }
        let wt = self.shared.config.write_timeout;
        let stalled =
            || std::io::Error::new(std::io::ErrorKind::TimedOut, "client stopped reading");
        let mut off = 0;
        while let Some(rest) = self.out.wbuf.get(off..).filter(|r| !r.is_empty()) {
            match tokio::time::timeout(wt, wr.write(rest)).await {
                Err(_) => return Err(stalled()),
                Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => off += n,
                Ok(Err(e)) => return Err(e),
            }
        }
        match tokio::time::timeout(wt, wr.flush()).await {
            Err(_) => return Err(stalled()),
            Ok(r) => r?,
        }
        self.progress.wrote(off, Instant::now());
        self.out.wbuf.clear();
        if self.out.wbuf.capacity() > 256 * 1024 {
            self.out.wbuf = BytesMut::new();
        }
        Ok(())
    }

    /// How a failed write ends the connection.
    fn write_failed(&self, e: &std::io::Error) -> End {
        if e.kind() == std::io::ErrorKind::TimedOut {
            End::Stalled(format!(
                "a write made no progress for {} s",
                self.shared.config.write_timeout.as_secs_f32()
            ))
        } else {
            End::Io(e.to_string())
        }
    }
}

/// The length of the packet at the front of `buf` (fixed header included), once its header
/// has arrived.
fn packet_len(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for (i, b) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(1 + (i + 1) + len);
        }
    }
    None
}
