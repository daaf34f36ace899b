//! The cluster network: one libp2p swarm behind one seam.
//!
//! Every node runs a swarm with Kademlia for discovery and routing and four
//! request-response protocols of our own (replication, API forwarding,
//! search fan-out, cluster state; see `docs/protocol.md`). The swarm is
//! owned by an [`EventLoop`]; the rest of the node talks to it only through
//! a cloneable [`NetClient`] and receives inbound requests and peer changes
//! as [`NetEvent`]s. That seam is why the store, the API and the workers
//! can be tested without sockets, and the network without the store.
//!
//! ```no_run
//! # async fn demo(dir: &std::path::Path) -> Result<(), slurp_node::net::NetError> {
//! use slurp_node::net::{self, NetConfig, NetEvent};
//! let key = net::identity::load_or_create(dir)?;
//! let (client, mut events, event_loop) = net::new(NetConfig::default(), key)?;
//! tokio::spawn(event_loop.run(std::future::pending()));
//! while let Some(event) = events.recv().await {
//!     if let NetEvent::InboundRequest { request, handle, .. } = event {
//!         // Serve `request`, then: client.respond(handle, response).await?;
//!         # let _ = (request, handle);
//!     }
//! }
//! # let _ = client;
//! # Ok(()) }
//! ```

pub mod behaviour;
pub mod codec;
pub mod config;
pub mod error;
pub mod event_loop;
pub mod faults;
pub mod identity;
pub mod protocols;
pub mod stats;

use std::collections::HashSet;
use std::sync::Arc;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use slurp_protocol::messages::{
    ClusterRequest, ClusterResponse, ForwardRequest, ForwardResponse, ReplicateRequest,
    ReplicateResponse, SearchRequest, SearchResponse,
};
use tokio::sync::{mpsc, oneshot};

pub use config::{NetConfig, ProtocolLimits};
pub use error::{IdentityError, NetError};
pub use event_loop::EventLoop;
pub use faults::{FaultRules, Faults};
pub use protocols::{Protocol, Request, Response, ResponseHandle};
pub use stats::NetStats;

use event_loop::{Command, peer_of};
use stats::NetCounters;

/// What the network tells the node.
#[derive(Debug)]
pub enum NetEvent {
    /// A peer asks something; answer with [`NetClient::respond`].
    InboundRequest {
        peer: PeerId,
        /// Boxed: a request is large next to the other events.
        request: Box<Request>,
        handle: ResponseHandle,
    },
    /// The first connection to a peer is up.
    PeerConnected { peer: PeerId, address: Multiaddr },
    /// The last connection to a peer closed.
    PeerDisconnected { peer: PeerId },
}

/// A handle to the network; cheap to clone. Every method fails with
/// [`NetError::ShutDown`] once the event loop has stopped.
#[derive(Clone, Debug)]
pub struct NetClient {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    counters: Arc<NetCounters>,
    /// Injected faults (tests only); shared by every clone.
    faults: Arc<std::sync::OnceLock<Faults>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::ListenAddrs(_) => "ListenAddrs",
            Command::Dial(..) => "Dial",
            Command::Bootstrap(_) => "Bootstrap",
            Command::ConnectedPeers(_) => "ConnectedPeers",
            Command::FindPeer(..) => "FindPeer",
            Command::Request(..) => "Request",
            Command::Respond(..) => "Respond",
        })
    }
}

/// Builds the swarm, starts listening and queues the bootstrap peers.
/// Returns the client, the event stream and the loop to spawn. Must be
/// called inside a Tokio runtime.
pub fn new(
    config: NetConfig,
    keypair: Keypair,
) -> Result<(NetClient, mpsc::Receiver<NetEvent>, EventLoop), NetError> {
    config.validate().map_err(NetError::Config)?;
    let peer_id = keypair.public().to_peer_id();
    let mut bootstrap_peers = Vec::with_capacity(config.bootstrap.len());
    for addr in &config.bootstrap {
        let peer = peer_of(addr).ok_or_else(|| NetError::InvalidAddress {
            addr: addr.clone(),
            reason: "a bootstrap address must end in /p2p/<peer id>".into(),
        })?;
        if peer != peer_id {
            bootstrap_peers.push((peer, addr.clone()));
        }
    }
    let counters = Arc::new(NetCounters::default());
    let mut swarm = behaviour::build_swarm(keypair, &config, &counters)?;
    let mut listeners = HashSet::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        listeners.insert(id);
    }
    for (peer, addr) in &bootstrap_peers {
        swarm.behaviour_mut().kad.add_address(peer, addr.clone());
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    let (command_tx, command_rx) = mpsc::channel(config.command_buffer.max(1));
    let (event_tx, event_rx) = mpsc::channel(config.event_buffer.max(1));
    let client = NetClient {
        commands: command_tx,
        peer_id,
        counters: counters.clone(),
        faults: Arc::default(),
    };
    let event_loop = EventLoop::new(
        swarm,
        config,
        command_rx,
        event_tx,
        counters,
        bootstrap_peers,
        listeners,
    );
    Ok((client, event_rx, event_loop))
}

impl NetClient {
    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, NetError>>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| NetError::ShutDown)?;
        rx.await.map_err(|_| NetError::ShutDown)?
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node listens on, once every configured listener
    /// has one (ports chosen by the system are known by then).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.call(Command::ListenAddrs).await
    }

    /// Connects to `addr`; returns the peer id that answered.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NetError> {
        self.call(|r| Command::Dial(addr, r)).await
    }

    /// Runs a Kademlia bootstrap now (it also runs every
    /// `bootstrap_interval`).
    pub async fn bootstrap(&self) -> Result<(), NetError> {
        self.call(Command::Bootstrap).await
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NetError> {
        self.call(Command::ConnectedPeers).await
    }

    /// Looks `peer` up through Kademlia; returns its addresses (they may
    /// end in `/p2p/<peer>`), which later requests to it use.
    pub async fn find_peer(&self, peer: PeerId) -> Result<Vec<Multiaddr>, NetError> {
        self.call(|r| Command::FindPeer(peer, r)).await
    }

    /// Sends a request and waits for its response (at most the configured
    /// request timeout once the stream is open). The peer is dialed if
    /// needed, with the addresses Kademlia and earlier connections know.
    pub async fn request(&self, peer: PeerId, request: Request) -> Result<Response, NetError> {
        if let Some(faults) = self.faults.get() {
            let this = self.clone();
            let send = move |request| {
                let this = this.clone();
                async move { this.send(peer, request).await }
            };
            return faults.carry(self.peer_id, peer, request, send).await;
        }
        self.send(peer, request).await
    }

    async fn send(&self, peer: PeerId, request: Request) -> Result<Response, NetError> {
        self.call(|r| Command::Request(peer, request, r)).await
    }

    /// Routes every later request of this node through `faults` (tests:
    /// the fault-injection suite; see [`faults`]). Once per client and its
    /// clones: false, and nothing changes, when one is installed already.
    pub fn install_faults(&self, faults: Faults) -> bool {
        self.faults.set(faults).is_ok()
    }

    /// The installed faults, if any.
    pub fn faults(&self) -> Option<&Faults> {
        self.faults.get()
    }

    /// Answers an inbound request. An answer over the protocol's response
    /// limit is not sent (the requester sees a refusal) and is counted in
    /// [`NetStats::oversized_messages`].
    pub async fn respond(
        &self,
        handle: ResponseHandle,
        response: Response,
    ) -> Result<(), NetError> {
        self.call(|r| Command::Respond(handle, response, r)).await
    }

    /// A replication request.
    pub async fn replicate(
        &self,
        peer: PeerId,
        request: ReplicateRequest,
    ) -> Result<ReplicateResponse, NetError> {
        match self.request(peer, request.into()).await? {
            Response::Replicate(r) => Ok(r),
            other => Err(mismatch(Protocol::Replicate, &other)),
        }
    }

    /// A forwarded API call.
    pub async fn forward(
        &self,
        peer: PeerId,
        request: ForwardRequest,
    ) -> Result<ForwardResponse, NetError> {
        match self.request(peer, request.into()).await? {
            Response::Forward(r) => Ok(r),
            other => Err(mismatch(Protocol::Forward, &other)),
        }
    }

    /// A search fan-out request.
    pub async fn search(
        &self,
        peer: PeerId,
        request: SearchRequest,
    ) -> Result<SearchResponse, NetError> {
        match self.request(peer, request.into()).await? {
            Response::Search(r) => Ok(r),
            other => Err(mismatch(Protocol::Search, &other)),
        }
    }

    /// A cluster state request.
    pub async fn cluster(
        &self,
        peer: PeerId,
        request: ClusterRequest,
    ) -> Result<ClusterResponse, NetError> {
        match self.request(peer, request.into()).await? {
            Response::Cluster(r) => Ok(r),
            other => Err(mismatch(Protocol::Cluster, &other)),
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }
}

fn mismatch(expected: Protocol, got: &Response) -> NetError {
    NetError::WrongResponse {
        expected: expected.name(),
        got: got.protocol().name(),
    }
}
