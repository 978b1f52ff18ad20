//! Runs the demo upstream (see `warden_e2e::upstream`) in the foreground.
//!
//! Usage: `demo-upstream [LISTEN_ADDR]` (default `127.0.0.1:8080`).

use std::net::SocketAddr;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let addr: SocketAddr = listen
        .parse()
        .map_err(|error| anyhow::anyhow!("listen address {listen:?}: {error}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {addr}: {error}"))?;
    eprintln!(
        "demo upstream listening on http://{}",
        listener.local_addr()?
    );
    warden_e2e::upstream::serve(listener).await?;
    Ok(())
}
