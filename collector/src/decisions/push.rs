//! `warden.v1.DenyListService/Subscribe`: pushes the deny list to filters (a snapshot or the
//! deltas since the filter's version first, then every change as it is committed), tracks what
//! each filter was sent and has acknowledged, and lets `warden ban` wait until a change has been
//! handed to every connected stream.

use crate::decisions::{Catchup, Change, Decisions};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::security::conn::ConnInfo;
use crate::security::filter_auth::{FilterAuth, SlotKind};
use crate::time::{now_ms, rfc3339};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use warden_proto::pb::deny_list_service_server::DenyListService;
use warden_proto::pb::{
    Delta, DenyListUpdate, FilterIdentity, FilterMessage, deny_list_update::Update, filter_message,
};

/// One connected filter, as `GET /api/v1/filters` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[schema(as = ConnectedFilter)]
pub struct FilterInfo {
    /// Stream id, unique for this collector run.
    pub stream_id: u64,
    /// Envoy node id.
    pub node_id: String,
    /// VM index.
    pub worker: u32,
    /// VM instance id.
    pub instance_id: String,
    /// Filter software version.
    pub filter_version: String,
    /// The credential the filter authenticated with.
    pub credential: String,
    /// Peer address of the stream.
    pub peer: String,
    /// RFC 3339.
    pub connected_since: String,
    /// Deny-list version last handed to the stream.
    pub version_sent: u64,
    /// Deny-list version last acknowledged by the filter.
    pub version_acked: u64,
    /// RFC 3339 of the last ack, or null.
    pub last_ack: Option<String>,
    /// Full snapshots sent on this stream.
    pub snapshots_sent: u64,
}

/// The connected filters.
#[derive(Default)]
pub struct Registry {
    streams: Mutex<HashMap<u64, FilterInfo>>,
    next_id: AtomicU64,
    progress: Notify,
}

impl Registry {
    fn add(&self, identity: &FilterIdentity, credential: &str, peer: String) -> u64 {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let info = FilterInfo {
            stream_id: id,
            node_id: identity.node_id.clone(),
            worker: identity.worker,
            instance_id: identity.instance_id.clone(),
            filter_version: identity.filter_version.clone(),
            credential: credential.to_string(),
            peer,
            connected_since: rfc3339(now_ms()),
            version_sent: 0,
            version_acked: 0,
            last_ack: None,
            snapshots_sent: 0,
        };
        if let Ok(mut m) = self.streams.lock() {
            m.insert(id, info);
        }
        id
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut FilterInfo)) {
        if let Some(info) = self
            .streams
            .lock()
            .ok()
            .as_mut()
            .and_then(|m| m.get_mut(&id))
        {
            f(info);
        }
        self.progress.notify_waiters();
    }

    fn remove(&self, id: u64) {
        if let Ok(mut m) = self.streams.lock() {
            m.remove(&id);
        }
        self.progress.notify_waiters();
    }

    /// The connected filters, ordered by node, worker and stream.
    pub fn list(&self) -> Vec<FilterInfo> {
        let mut v: Vec<FilterInfo> = self
            .streams
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| {
            (&a.node_id, a.worker, a.stream_id).cmp(&(&b.node_id, b.worker, b.stream_id))
        });
        v
    }

    /// Waits until every connected stream has been handed `version` (or has gone), at most
    /// `patience`. Returns whether that happened in time.
    pub async fn wait_sent(&self, version: u64, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let done = self
                .streams
                .lock()
                .map(|m| m.values().all(|f| f.version_sent >= version))
                .unwrap_or(true);
            if done {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// The Subscribe service.
pub struct Push {
    decisions: Arc<Decisions>,
    registry: Arc<Registry>,
    auth: Arc<FilterAuth>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl Push {
    /// Builds the service; streams end when `shutdown` becomes true.
    pub fn new(
        decisions: Arc<Decisions>,
        registry: Arc<Registry>,
        auth: Arc<FilterAuth>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Push {
            decisions,
            registry,
            auth,
            metrics,
            shutdown,
        }
    }
}

fn delta_update(c: &Change) -> DenyListUpdate {
    DenyListUpdate {
        update: Some(Update::Delta(Delta {
            from_version: c.from_version,
            version: c.version,
            upserts: c.upserts.clone(),
            removals: c.removals.clone(),
        })),
    }
}

type Outbound = mpsc::Sender<Result<DenyListUpdate, tonic::Status>>;

/// Sends a catch-up; returns the version the stream now has, or `None` if the client left.
async fn send_catchup(
    tx: &Outbound,
    catchup: Catchup,
    registry: &Registry,
    id: u64,
) -> Option<u64> {
    let version = match catchup {
        Catchup::UpToDate(v) => {
            let empty = Change {
                from_version: v,
                version: v,
                upserts: vec![],
                removals: vec![],
                oversized: false,
            };
            tx.send(Ok(delta_update(&empty))).await.ok()?;
            v
        }
        Catchup::Delta(c) => {
            tx.send(Ok(delta_update(&c))).await.ok()?;
            c.version
        }
        Catchup::Snapshot(s) => {
            for chunk in &s.chunks {
                tx.send(Ok(DenyListUpdate {
                    update: Some(Update::Snapshot(chunk.clone())),
                }))
                .await
                .ok()?;
            }
            registry.update(id, |f| f.snapshots_sent += 1);
            s.version
        }
    };
    registry.update(id, |f| f.version_sent = version);
    Some(version)
}

async fn catch_up(
    decisions: &Arc<Decisions>,
    known: u64,
) -> Result<(Catchup, broadcast::Receiver<Arc<Change>>), Error> {
    let d = Arc::clone(decisions);
    tokio::task::spawn_blocking(move || d.catch_up(known))
        .await
        .map_err(|e| Error::Storage(format!("snapshot task failed: {e}")))?
}

#[tonic::async_trait]
impl DenyListService for Push {
    type SubscribeStream = ReceiverStream<Result<DenyListUpdate, tonic::Status>>;

    async fn subscribe(
        &self,
        request: tonic::Request<tonic::Streaming<FilterMessage>>,
    ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let caller = self.auth.authenticate(request.metadata(), conn.as_ref())?;
        let slot = self.auth.acquire(&caller, SlotKind::Stream)?;
        let peer = conn.map(|c| c.remote.to_string()).unwrap_or_default();
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let Some(FilterMessage {
            message: Some(filter_message::Message::Subscribe(sub)),
        }) = first
        else {
            return Err(Error::invalid(
                "message",
                "the first message on a Subscribe stream must be `subscribe`",
            )
            .into());
        };
        let identity = sub.filter.unwrap_or_default();
        if identity.node_id.is_empty() {
            return Err(Error::invalid("subscribe.filter.node_id", "must not be empty").into());
        }
        // Only a filter whose credential covers the node id learns the list (and its reasons).
        self.auth.check_node(&caller, &identity.node_id)?;
        let (catchup, changes) = catch_up(&self.decisions, sub.known_version).await?;
        let (tx, rx) = mpsc::channel(16);
        let id = self.registry.add(&identity, caller.name(), peer.clone());
        self.metrics.filters_connected.fetch_add(1, Relaxed);
        tracing::info!(stream = id, node = %identity.node_id, worker = identity.worker, %peer, known_version = sub.known_version, "filter subscribed");
        let stream = StreamTask {
            id,
            tx,
            inbound,
            changes,
            decisions: Arc::clone(&self.decisions),
            registry: Arc::clone(&self.registry),
            shutdown: self.shutdown.clone(),
        };
        let registry = Arc::clone(&self.registry);
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(async move {
            stream.run(catchup).await;
            drop(slot);
            registry.remove(id);
            metrics.filters_connected.fetch_sub(1, Relaxed);
            tracing::info!(stream = id, "filter unsubscribed");
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

struct StreamTask {
    id: u64,
    tx: Outbound,
    inbound: tonic::Streaming<FilterMessage>,
    changes: broadcast::Receiver<Arc<Change>>,
    decisions: Arc<Decisions>,
    registry: Arc<Registry>,
    shutdown: watch::Receiver<bool>,
}

impl StreamTask {
    async fn run(mut self, first: Catchup) {
        let Some(mut sent) = send_catchup(&self.tx, first, &self.registry, self.id).await else {
            return;
        };
        if *self.shutdown.borrow() {
            return;
        }
        loop {
            tokio::select! {
                msg = self.inbound.message() => match msg {
                    Ok(Some(FilterMessage { message: Some(filter_message::Message::Ack(ack)) })) => {
                        self.registry.update(self.id, |f| {
                            f.version_acked = ack.version;
                            f.last_ack = Some(rfc3339(now_ms()));
                        });
                    }
                    Ok(Some(_)) => tracing::debug!(stream = self.id, "ignoring an unexpected message"),
                    Ok(None) | Err(_) => return,
                },
                change = self.changes.recv() => {
                    let resync = match change {
                        Ok(c) if c.version <= sent => false,
                        Ok(c) if c.from_version == sent && !c.oversized => {
                            if self.tx.send(Ok(delta_update(&c))).await.is_err() {
                                return;
                            }
                            sent = c.version;
                            self.registry.update(self.id, |f| f.version_sent = sent);
                            false
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if resync {
                        // Too big, out of order or lagged: catch up from what this stream has.
                        let Ok((catchup, changes)) = catch_up(&self.decisions, sent).await else { return };
                        self.changes = changes;
                        match send_catchup(&self.tx, catchup, &self.registry, self.id).await {
                            Some(v) => sent = v,
                            None => return,
                        }
                    }
                }
                _ = self.shutdown.changed() => return,
                _ = self.tx.closed() => return,
            }
        }
    }
}
