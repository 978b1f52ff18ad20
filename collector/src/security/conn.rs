//! Accepted connections of both listeners, plaintext or TLS, each carrying what is known of its
//! peer ([`ConnInfo`]: address, whether TLS protects it, the verified client certificate).
//!
//! TLS handshakes run in their own tasks, so a client that opens a connection and never
//! finishes its handshake delays nobody; handshakes that fail or time out are counted. The
//! stream of ready connections feeds tonic (`Stream`) and axum (`Listener`) alike, and both hand
//! the [`ConnInfo`] to request handlers.

use super::tls::{PeerCertificate, ReloadingTls};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// What is known of a connection's peer.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// Whether TLS protects the connection.
    pub tls: bool,
    /// The client certificate the peer presented and the CA verified.
    pub peer: Option<Arc<PeerCertificate>>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One accepted connection, ready for HTTP.
pub struct Connection {
    io: Io,
    info: ConnInfo,
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// How accepted sockets are set up.
#[derive(Debug, Clone, Copy)]
pub struct AcceptOptions {
    /// TCP keepalive (a vanished peer's streams are noticed).
    pub keepalive: Option<Duration>,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
}

/// Counters of one listener's handshakes.
#[derive(Debug, Default)]
pub struct HandshakeCounters {
    /// Handshakes that failed (no or a wrong client certificate, not TLS, a bad version).
    pub failed: AtomicU64,
    /// Handshakes that did not finish in time.
    pub timed_out: AtomicU64,
}

/// The connections a listener accepted, ready for a server.
pub struct Accepted {
    rx: mpsc::Receiver<Connection>,
    local: SocketAddr,
}

impl Accepted {
    /// Accepts on `listener` until `stop`; with `tls`, only connections that complete a
    /// handshake come out.
    pub fn start(
        listener: TcpListener,
        tls: Option<Arc<ReloadingTls>>,
        options: AcceptOptions,
        counters: Arc<HandshakeCounters>,
        mut stop: watch::Receiver<bool>,
        what: &'static str,
    ) -> io::Result<Accepted> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.wait_for(|s| *s) => return,
                };
                let (tcp, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, keep serving.
                        tracing::warn!(listener = what, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // A gRPC response is headers, data and trailers in separate writes; with Nagle
                // the last would wait for the peer's delayed ACK (40 ms).
                let _ = tcp.set_nodelay(true);
                if let Some(idle) = options.keepalive {
                    let keepalive = socket2::TcpKeepalive::new().with_time(idle);
                    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
                }
                let Some(tls) = tls.as_ref().map(|t| t.current()) else {
                    let conn = Connection {
                        io: Io::Plain(tcp),
                        info: ConnInfo {
                            remote,
                            tls: false,
                            peer: None,
                        },
                    };
                    if tx.send(conn).await.is_err() {
                        return;
                    }
                    continue;
                };
                let tx = tx.clone();
                let counters = Arc::clone(&counters);
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                    let handshake =
                        tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp)).await;
                    let stream = match handshake {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            counters.failed.fetch_add(1, Relaxed);
                            tracing::debug!(listener = what, %remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            counters.timed_out.fetch_add(1, Relaxed);
                            tracing::debug!(listener = what, %remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    let peer = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|leaf| PeerCertificate::from_der(leaf))
                        .map(Arc::new);
                    let conn = Connection {
                        io: Io::Tls(Box::new(stream)),
                        info: ConnInfo {
                            remote,
                            tls: true,
                            peer,
                        },
                    };
                    let _ = tx.send(conn).await;
                });
            }
        });
        Ok(Accepted { rx, local })
    }
}

impl futures::Stream for Accepted {
    type Item = io::Result<Connection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl axum::serve::Listener for Accepted {
    type Io = Connection;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => {
                let info = conn.info.clone();
                (conn, info)
            }
            // The accept loop stopped: the server is shutting down and stops accepting anyway.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnInfo {
            remote: self.local,
            tls: false,
            peer: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Accepted>>
    for ConnInfo
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Accepted>) -> Self {
        stream.remote_addr().clone()
    }
}
