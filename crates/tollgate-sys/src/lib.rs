//! The one crate of Tollgate that may use `unsafe`: system calls with no safe wrapper in the
//! standard library or our dependencies. Today that is `getsockopt(TCP_INFO)`, which reads the
//! kernel's view of a TCP connection (round-trip time, retransmissions, unsent and
//! unacknowledged data) for transport-health detection, and `getrlimit`/`setrlimit` on
//! `RLIMIT_NOFILE`, so the server can raise its descriptor limit and size its connection budgets
//! from it.
//!
//! Every `unsafe` block is allowed individually and says why it is sound; everything exported
//! is safe to call. It must not grow business logic: anything that can be written safely lives
//! elsewhere.

use std::io;
use std::os::fd::BorrowedFd;

/// The kernel's view of one TCP connection (Linux `struct tcp_info`, the fields Tollgate uses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// Round-trip time variance, microseconds.
    pub rttvar_us: u32,
    /// Lowest round-trip time seen, microseconds.
    pub min_rtt_us: u32,
    /// Segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// Segments currently presumed lost.
    pub lost: u32,
    /// Segments sent and not yet acknowledged.
    pub unacked: u32,
    /// Bytes written by us that the kernel has not sent yet.
    pub notsent_bytes: u32,
    /// Congestion window, segments.
    pub snd_cwnd: u32,
    /// Bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// Bytes received from the peer.
    pub bytes_received: u64,
    /// Milliseconds since data last arrived from the peer.
    pub last_data_recv_ms: u32,
    /// Segments sent over the connection's life, retransmissions included (0 before Linux 4.2).
    pub segs_out: u32,
    /// Bytes sent over the connection's life, retransmissions included (0 before Linux 4.19).
    pub bytes_sent: u64,
    /// Bytes retransmitted over the connection's life (0 before Linux 4.19).
    pub bytes_retrans: u64,
    /// The most recent goodput measured by the kernel, bytes per second (0 before Linux 4.9).
    pub delivery_rate: u64,
}

/// Read `TCP_INFO` for the TCP socket `fd`.
#[cfg(target_os = "linux")]
pub fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    use std::os::fd::AsRawFd;
    #[allow(unsafe_code)]
    // SAFETY: `libc::tcp_info` is a plain C struct of integers, for which all-zero bytes are a
    // valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>())
        .map_err(|_| io::Error::other("tcp_info does not fit socklen_t"))?;
    #[allow(unsafe_code)]
    // SAFETY: `fd` is an open descriptor for as long as the borrow lives (`BorrowedFd`'s
    // contract); `info` is a live, writable `tcp_info` of exactly `len` bytes, and the kernel
    // writes at most `len` bytes into it (fewer on older kernels: the rest stays zero, still a
    // valid value); `len` is a valid, writable `socklen_t`. Nothing is retained past the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpInfo {
        rtt_us: info.tcpi_rtt,
        rttvar_us: info.tcpi_rttvar,
        min_rtt_us: info.tcpi_min_rtt,
        total_retrans: info.tcpi_total_retrans,
        lost: info.tcpi_lost,
        unacked: info.tcpi_unacked,
        notsent_bytes: info.tcpi_notsent_bytes,
        snd_cwnd: info.tcpi_snd_cwnd,
        bytes_acked: info.tcpi_bytes_acked,
        bytes_received: info.tcpi_bytes_received,
        last_data_recv_ms: info.tcpi_last_data_recv,
        segs_out: info.tcpi_segs_out,
        bytes_sent: info.tcpi_bytes_sent,
        bytes_retrans: info.tcpi_bytes_retrans,
        delivery_rate: info.tcpi_delivery_rate,
    })
}

/// `TCP_INFO` is Linux's; elsewhere there is nothing to read.
#[cfg(not(target_os = "linux"))]
pub fn tcp_info(_fd: BorrowedFd<'_>) -> io::Result<TcpInfo> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// The process's open-file limit (`RLIMIT_NOFILE`) after [`raise_nofile_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit found at start.
    pub before: u64,
    /// The soft limit now in force (the hard limit, when raising it worked).
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raise the soft open-file limit to the hard limit, and say what it is now. Failing to raise
/// it is not an error (the soft limit found is reported); failing to read it is.
#[cfg(target_os = "linux")]
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: `lim` is a live, writable `rlimit`; the kernel writes exactly one `rlimit` to it
    // and keeps no pointer past the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    let hard = lim.rlim_max;
    let mut soft = before;
    if before < hard {
        let want = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        #[allow(unsafe_code)]
        // SAFETY: `want` is a live, readable `rlimit`; the kernel only reads it, during the
        // call. Raising the soft limit up to the hard limit needs no privilege.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) };
        if rc == 0 {
            soft = hard;
        }
    }
    Ok(NofileLimit { before, soft, hard })
}

/// Elsewhere nothing is raised and the limit is unknown.
#[cfg(not(target_os = "linux"))]
pub fn raise_nofile_limit() -> io::Result<NofileLimit> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_file_limit_is_raised_to_the_hard_limit() {
        let l = super::raise_nofile_limit().expect("getrlimit");
        assert!(l.before <= l.soft && l.soft <= l.hard, "{l:?}");
        assert_eq!(
            l.soft, l.hard,
            "raising to the hard limit needs no privilege"
        );
        // A second call finds it raised already.
        let again = super::raise_nofile_limit().expect("getrlimit");
        assert_eq!(again.before, l.hard);
    }

    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn tcp_info_reads_a_live_loopback_connection_and_refuses_a_non_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(&[7u8; 4096]).expect("write");
        let mut buf = [0u8; 4096];
        server.read_exact(&mut buf).expect("read");
        let info = super::tcp_info(server.as_fd()).expect("TCP_INFO");
        assert_eq!(info.bytes_received, 4096);
        let c = super::tcp_info(client.as_fd()).expect("TCP_INFO");
        assert!(c.bytes_acked >= 4096, "{c:?}");
        assert!(c.rtt_us > 0, "an RTT was measured on loopback: {c:?}");
        // A file is not a socket: an error, never garbage.
        let f = std::fs::File::open("/proc/self/status").expect("open");
        assert!(super::tcp_info(f.as_fd()).is_err());
    }
}

/// Reads one socket's `TCP_INFO` from any thread without holding a second descriptor for it.
///
/// A duplicate descriptor would keep the socket's number from being reused, but costs a
/// descriptor per connection, which halves the connections a process limit holds. Instead the
/// probe keeps the number and a flag behind a lock of its own (one per connection, never shared
/// between connections): [`TcpInfoProbe::close`] clears the flag and must be called before the
/// socket is closed; [`ProbedSocket`] does so when it drops, so a read after the close returns
/// `None` instead of reading a socket that took over the number.
#[derive(Debug)]
pub struct TcpInfoProbe {
    fd: std::os::fd::RawFd,
    open: std::sync::Mutex<bool>,
}

impl TcpInfoProbe {
    /// `TCP_INFO` of the socket, or `None` once it was closed.
    pub fn read(&self) -> Option<io::Result<TcpInfo>> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !*open {
            return None;
        }
        #[allow(unsafe_code)]
        // SAFETY: the number was an open descriptor of the socket when the probe was made, and
        // `ProbedSocket` (the only way to make a probe) calls `close` before it drops the
        // socket, waiting for this lock: while the lock is held here with `open` still true, the
        // socket is not closed, so the number still names it. The borrow ends with this call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        Some(tcp_info(fd))
    }

    /// After this, [`TcpInfoProbe::read`] returns `None`. Waits for a read in progress.
    fn close(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }
}

/// A socket with its [`TcpInfoProbe`]: the probe can be shared (an `Arc`) with whoever samples
/// the connection, and is closed before the socket is.
#[derive(Debug)]
pub struct ProbedSocket<S: std::os::fd::AsFd> {
    socket: S,
    probe: std::sync::Arc<TcpInfoProbe>,
}

impl<S: std::os::fd::AsFd> ProbedSocket<S> {
    /// Wrap `socket`; the probe reads it until this value drops.
    pub fn new(socket: S) -> Self {
        use std::os::fd::AsRawFd;
        let probe = std::sync::Arc::new(TcpInfoProbe {
            fd: socket.as_fd().as_raw_fd(),
            open: std::sync::Mutex::new(true),
        });
        ProbedSocket { socket, probe }
    }

    /// The probe, to share.
    pub fn probe(&self) -> &std::sync::Arc<TcpInfoProbe> {
        &self.probe
    }
}

impl<S: std::os::fd::AsFd> std::ops::Deref for ProbedSocket<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.socket
    }
}

impl<S: std::os::fd::AsFd> std::ops::DerefMut for ProbedSocket<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.socket
    }
}

impl<S: std::os::fd::AsFd> Drop for ProbedSocket<S> {
    fn drop(&mut self) {
        // Runs before the `socket` field drops (and closes the descriptor).
        self.probe.close();
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    #[test]
    fn a_probe_reads_its_socket_until_the_socket_drops_and_never_after() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let (_server, _) = listener.accept().expect("accept");
        let sock = ProbedSocket::new(client);
        let probe = std::sync::Arc::clone(sock.probe());
        let first = probe.read().expect("open").expect("tcp_info");
        assert_eq!(first.bytes_received, 0);
        drop(sock);
        // Another socket may now take the number: the probe must not read it.
        let again = std::net::TcpStream::connect(addr).expect("connect again");
        assert!(probe.read().is_none(), "a closed probe must not read");
        drop(again);
    }
}
