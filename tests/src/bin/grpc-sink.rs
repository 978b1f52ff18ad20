//! A gRPC sink for benchmarks (not a test): accepts any gRPC call over HTTP/2 cleartext, reads
//! and discards every message, and answers OK when the client ends its stream. `make bench`
//! points Envoy's native `http_grpc` access logger at it, to compare the Warden filter with
//! Envoy's own gRPC access log without measuring a receiver's storage.
//!
//! `GET /stats` answers `{"calls": N, "messages": N, "bytes": N}`: what arrived.
//!
//! Usage: `grpc-sink [LISTEN_ADDR]` (default `127.0.0.1:0`); prints the bound address on stdout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{any, get};
use axum::{Json, Router};
use http_body_util::BodyExt;

/// What arrived.
#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// Counts gRPC messages in a byte stream: each is a flag byte, a 4-byte big-endian length, then
/// the message.
#[derive(Default)]
struct Framing {
    /// Bytes of the current message still to skip.
    skip: u64,
    /// Header bytes of the next message gathered so far.
    header: Vec<u8>,
}

impl Framing {
    /// Consumes `chunk`; returns the messages that started in it.
    fn feed(&mut self, mut chunk: &[u8]) -> u64 {
        let mut started = 0;
        while !chunk.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                chunk = &chunk[n..];
                self.skip -= n as u64;
                continue;
            }
            let need = 5 - self.header.len();
            let n = need.min(chunk.len());
            self.header.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.header.len() == 5 {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.skip = u64::from(len);
                self.header.clear();
                started += 1;
            }
        }
        started
    }
}

async fn call(State(counts): State<Arc<Counts>>, request: Request) -> Response {
    counts.calls.fetch_add(1, Relaxed);
    let mut body = request.into_body();
    let mut framing = Framing::default();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            counts.bytes.fetch_add(data.len() as u64, Relaxed);
            counts.messages.fetch_add(framing.feed(data), Relaxed);
        }
    }
    // A trailers-only answer: OK, no message.
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("grpc-status", "0")
        .body(Body::empty())
        .unwrap_or_default()
}

async fn stats(State(counts): State<Arc<Counts>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "calls": counts.calls.load(Relaxed),
        "messages": counts.messages.load(Relaxed),
        "bytes": counts.bytes.load(Relaxed),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| anyhow::anyhow!("listen address {listen:?}: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    println!("{}", listener.local_addr()?);
    let counts = Arc::new(Counts::default());
    let app = Router::new()
        .route("/stats", get(stats))
        .fallback(any(call))
        .with_state(counts);
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_across_chunk_boundaries() {
        let mut stream = Vec::new();
        for len in [3u32, 0, 300] {
            stream.push(0);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for cut in 1..stream.len() {
            let mut f = Framing::default();
            let n = f.feed(&stream[..cut]) + f.feed(&stream[cut..]);
            assert_eq!(n, 3, "cut at {cut}");
        }
    }
}
