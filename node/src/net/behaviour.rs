//! The composed libp2p behaviour and the swarm built around it.
//!
//! Connection limits come first so a connection over the limit is denied
//! before any other behaviour sets up a handler for it. Identify tells us
//! the addresses a peer listens on, which Kademlia needs to route to peers
//! that dialed in; Kademlia runs in server mode under our own protocol name
//! so slurp clusters never mix with the public IPFS DHT; ping keeps idle
//! connections honest; and each of our protocols is its own
//! request-response behaviour with its own codec limits.

use std::sync::Arc;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::identity::Keypair;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    PeerId, StreamProtocol, Swarm, SwarmBuilder, connection_limits, identify, kad, noise, ping,
    tcp, yamux,
};
use slurp_protocol::Framed;
use slurp_protocol::messages::{
    ClusterRequest, ClusterResponse, ForwardRequest, ForwardResponse, ReplicateRequest,
    ReplicateResponse, SearchRequest, SearchResponse,
};

use super::codec::FramedCodec;
use super::config::{NetConfig, ProtocolLimits};
use super::error::NetError;
use super::protocols::Protocol;
use super::stats::NetCounters;

/// Kademlia's protocol name: ours, not the public `/ipfs/kad/1.0.0`.
pub const KAD_PROTOCOL: &str = "/slurp/kad/1.0.0";
/// Identify's protocol name.
pub const IDENTIFY_PROTOCOL: &str = "/slurp/id/1.0.0";

pub(crate) type Rr<Req, Resp> = request_response::Behaviour<FramedCodec<Req, Resp>>;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub replicate: Rr<ReplicateRequest, ReplicateResponse>,
    pub forward: Rr<ForwardRequest, ForwardResponse>,
    pub search: Rr<SearchRequest, SearchResponse>,
    pub cluster: Rr<ClusterRequest, ClusterResponse>,
}

fn request_response<Req, Resp>(
    protocol: Protocol,
    limits: ProtocolLimits,
    config: &NetConfig,
    counters: &Arc<NetCounters>,
) -> Rr<Req, Resp>
where
    Req: Framed + Send + 'static,
    Resp: Framed + Send + 'static,
{
    request_response::Behaviour::with_codec(
        FramedCodec::new(limits, counters.clone()),
        [(StreamProtocol::new(protocol.name()), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(config.max_concurrent_streams),
    )
}

impl Behaviour {
    fn new(key: &Keypair, config: &NetConfig, counters: &Arc<NetCounters>) -> Self {
        let peer_id = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_established_connections))
            .with_max_established_per_peer(Some(config.max_connections_per_peer));
        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config.set_query_timeout(config.kad_query_timeout);
        // The event loop bootstraps on its own interval, re-adding the
        // configured bootstrap peers each time.
        kad_config.set_periodic_bootstrap_interval(None);
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        kad.set_mode(Some(kad::Mode::Server));
        Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                    .with_agent_version(format!("slurp/{}", env!("CARGO_PKG_VERSION"))),
            ),
            ping: ping::Behaviour::new(ping::Config::new()),
            kad,
            replicate: request_response(Protocol::Replicate, config.replicate, config, counters),
            forward: request_response(Protocol::Forward, config.forward, config, counters),
            search: request_response(Protocol::Search, config.search, config, counters),
            cluster: request_response(Protocol::Cluster, config.cluster, config, counters),
        }
    }
}

/// Builds the swarm: TCP and QUIC, Noise, Yamux, our behaviour, plus the
/// in-process memory transport (`/memory/N` addresses), on which tests
/// run several nodes in one process without sockets. Must run inside a
/// Tokio runtime.
pub(crate) fn build_swarm(
    keypair: Keypair,
    config: &NetConfig,
    counters: &Arc<NetCounters>,
) -> Result<Swarm<Behaviour>, NetError> {
    let transport = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let psk = match &config.swarm_key {
        Some(path) => Some(read_swarm_key(path)?),
        None => None,
    };
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_other_transport(|key| tcp_transport(key, psk).map_err(Into::into))
        .map_err(|e| transport(&e))?
        .with_other_transport(|key| {
            use libp2p::Transport;
            use libp2p::core::upgrade::Version;
            Ok(libp2p::core::transport::MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default())
                .boxed())
        })
        .map_err(|e| transport(&e))?
        .with_behaviour(|key| Behaviour::new(key, config, counters))
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
        .build();
    Ok(swarm)
}

/// Reads a private-network key file (the format `go-libp2p` and `ipfs` use:
/// `/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits).
pub fn read_swarm_key(path: &std::path::Path) -> Result<PreSharedKey, NetError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| NetError::Config(format!("net.swarm_key {}: {e}", path.display())))?;
    text.trim_end().parse::<PreSharedKey>().map_err(|e| {
        NetError::Config(format!(
            "net.swarm_key {} is not a private-network key: {e}",
            path.display()
        ))
    })
}

/// TCP with Noise and Yamux; with a private-network key, every TCP
/// connection first runs the pnet handshake, so a peer without the key
/// never reaches Noise, let alone a protocol of ours.
fn tcp_transport(
    key: &Keypair,
    psk: Option<PreSharedKey>,
) -> Result<libp2p::core::transport::Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    use libp2p::Transport;
    use libp2p::core::upgrade::Version;
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let noise = noise::Config::new(key)?;
    Ok(match psk {
        Some(psk) => tcp
            .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
        None => tcp
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
    })
}
