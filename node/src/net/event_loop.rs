//! The event loop: the only owner of the swarm.
//!
//! Everything else reaches the network through [`NetClient`](super::NetClient)
//! commands. The loop is one `select!` over swarm events, commands, the
//! bootstrap timer and shutdown; it keeps the callers' reply channels keyed
//! by the id libp2p gave their operation (a dial's connection id, a query
//! id, a request id) and answers each exactly once. Nothing in the loop
//! awaits anything but the `select!`, so one slow consumer cannot stall the
//! swarm: events are offered without waiting, and an inbound request that
//! finds the queue full is refused (its stream closes) and counted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::sync::Arc;

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol as AddrProtocol;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad};
use tokio::sync::{mpsc, oneshot};

use super::NetEvent;
use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::codec::CodecError;
use super::config::NetConfig;
use super::error::NetError;
use super::protocols::{Channel, Protocol, Request, Response, ResponseHandle};
use super::stats::NetCounters;
use slurp_protocol::DecodeError;

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

/// What a [`NetClient`](super::NetClient) asks of the loop.
pub(crate) enum Command {
    ListenAddrs(Reply<Vec<Multiaddr>>),
    Dial(Multiaddr, Reply<PeerId>),
    Bootstrap(Reply<()>),
    ConnectedPeers(Reply<Vec<PeerId>>),
    FindPeer(PeerId, Reply<Vec<Multiaddr>>),
    Request(PeerId, Request, Reply<Response>),
    Respond(ResponseHandle, Response, Reply<()>),
}

/// Owns the swarm; run it with [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: NetConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    counters: Arc<NetCounters>,
    /// Configured bootstrap peers, re-added to Kademlia on every round.
    bootstrap_peers: Vec<(PeerId, Multiaddr)>,
    listeners: HashSet<ListenerId>,
    listeners_ready: HashSet<ListenerId>,
    pending_listen: Vec<Reply<Vec<Multiaddr>>>,
    pending_dials: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
    pending_bootstrap: HashMap<kad::QueryId, Reply<()>>,
    pending_find: HashMap<kad::QueryId, (PeerId, Reply<Vec<Multiaddr>>)>,
    pending_requests: HashMap<(Protocol, OutboundRequestId), (PeerId, Reply<Response>)>,
    /// Requests in flight and waiting, per peer and protocol: libp2p fails
    /// a request that finds the connection's streams all in use, so the
    /// loop never opens more than `max_outbound_streams_per_peer`.
    outbound: HashMap<(PeerId, Protocol), Outbound>,
    /// Why the last dial of a peer failed, so that a request failing on
    /// the dial can say "connection refused" rather than only "could not
    /// dial". Cleared when a connection is made; bounded.
    dial_errors: HashMap<PeerId, String>,
}

#[derive(Default)]
struct Outbound {
    in_flight: usize,
    queue: VecDeque<(Request, Reply<Response>)>,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("peer", self.swarm.local_peer_id())
            .field("pending_requests", &self.pending_requests.len())
            .field("pending_dials", &self.pending_dials.len())
            .field(
                "pending_queries",
                &(self.pending_find.len() + self.pending_bootstrap.len()),
            )
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: NetConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        counters: Arc<NetCounters>,
        bootstrap_peers: Vec<(PeerId, Multiaddr)>,
        listeners: HashSet<ListenerId>,
    ) -> Self {
        EventLoop {
            swarm,
            config,
            commands,
            events,
            counters,
            bootstrap_peers,
            listeners,
            listeners_ready: HashSet::new(),
            pending_listen: Vec::new(),
            pending_dials: HashMap::new(),
            pending_bootstrap: HashMap::new(),
            pending_find: HashMap::new(),
            pending_requests: HashMap::new(),
            outbound: HashMap::new(),
            dial_errors: HashMap::new(),
        }
    }

    /// Runs until `shutdown` completes or every [`NetClient`](super::NetClient)
    /// is dropped. Dropping the swarm closes every connection; callers still
    /// waiting get [`NetError::ShutDown`].
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut bootstrap = tokio::time::interval(self.config.bootstrap_interval);
        bootstrap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = bootstrap.tick() => self.bootstrap_round(),
                () = &mut shutdown => break,
            }
        }
        // Close the listeners explicitly: the memory transport releases its
        // port only then (dropping it does not), and a node restarted in the
        // same process must be able to listen there again.
        let ids: HashSet<ListenerId> = self
            .listeners
            .union(&self.listeners_ready)
            .copied()
            .collect();
        for id in ids {
            self.swarm.remove_listener(id);
        }
        tracing::debug!(peer = %self.swarm.local_peer_id(), "network event loop stopped");
    }

    /// Re-adds the configured bootstrap peers and starts a Kademlia
    /// bootstrap. Peers that are gone only make the query shorter; the
    /// routing table keeps every peer learned since.
    fn bootstrap_round(&mut self) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        for (peer, addr) in &self.bootstrap_peers {
            kad.add_address(peer, addr.clone());
        }
        if kad.bootstrap().is_ok() {
            NetCounters::bump(&self.counters.kad_queries);
        }
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.swarm.listeners().cloned().collect()
    }

    fn answer_listen_waiters(&mut self) {
        if self.listeners.is_subset(&self.listeners_ready) {
            let addrs = self.listen_addrs();
            for reply in self.pending_listen.drain(..) {
                let _ = reply.send(Ok(addrs.clone()));
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                self.pending_listen.push(reply);
                self.answer_listen_waiters();
            }
            Command::Dial(addr, reply) => {
                let opts = DialOpts::from(addr.clone());
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.pending_dials.insert(id, (addr, reply));
                    }
                    Err(e) => {
                        NetCounters::bump(&self.counters.dial_failures);
                        let _ = reply.send(Err(NetError::DialFailed {
                            addr,
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Bootstrap(reply) => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                for (peer, addr) in &self.bootstrap_peers {
                    kad.add_address(peer, addr.clone());
                }
                match kad.bootstrap() {
                    Ok(id) => {
                        NetCounters::bump(&self.counters.kad_queries);
                        self.pending_bootstrap.insert(id, reply);
                    }
                    Err(kad::NoKnownPeers()) => {
                        let _ = reply.send(Err(NetError::NoKnownPeers));
                    }
                }
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(Ok(self.swarm.connected_peers().copied().collect()));
            }
            Command::FindPeer(target, reply) => {
                if target == *self.swarm.local_peer_id() {
                    let _ = reply.send(Ok(self.listen_addrs()));
                    return;
                }
                NetCounters::bump(&self.counters.kad_queries);
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(target);
                self.pending_find.insert(id, (target, reply));
            }
            Command::Request(peer, request, reply) => {
                let limit = self.config.max_outbound_streams_per_peer.max(1);
                let max_queue = self.config.max_queued_requests_per_peer;
                let slot = self.outbound.entry((peer, request.protocol())).or_default();
                if slot.in_flight < limit {
                    slot.in_flight += 1;
                    self.send_request(peer, request, reply);
                } else if slot.queue.len() >= max_queue {
                    let queued = slot.queue.len();
                    let _ = reply.send(Err(NetError::Overloaded { peer, queued }));
                } else {
                    slot.queue.push_back((request, reply));
                }
            }
            Command::Respond(handle, response, reply) => {
                let _ = reply.send(self.respond(handle, response));
            }
        }
    }

    /// Opens the stream of a request whose slot is already counted.
    fn send_request(&mut self, peer: PeerId, request: Request, reply: Reply<Response>) {
        NetCounters::bump(&self.counters.outbound_requests);
        let b = self.swarm.behaviour_mut();
        let key = match request {
            Request::Replicate(r) => (Protocol::Replicate, b.replicate.send_request(&peer, r)),
            Request::Forward(r) => (Protocol::Forward, b.forward.send_request(&peer, r)),
            Request::Search(r) => (Protocol::Search, b.search.send_request(&peer, r)),
            Request::Cluster(r) => (Protocol::Cluster, b.cluster.send_request(&peer, r)),
        };
        self.pending_requests.insert(key, (peer, reply));
    }

    /// A request to `peer` finished: its slot goes to the next waiting
    /// request whose caller still waits.
    fn release(&mut self, peer: PeerId, protocol: Protocol) {
        let key = (peer, protocol);
        let Some(slot) = self.outbound.get_mut(&key) else {
            return;
        };
        slot.in_flight = slot.in_flight.saturating_sub(1);
        let mut next = None;
        while let Some((request, reply)) = slot.queue.pop_front() {
            if !reply.is_closed() {
                slot.in_flight += 1;
                next = Some((request, reply));
                break;
            }
        }
        if slot.in_flight == 0 && slot.queue.is_empty() {
            self.outbound.remove(&key);
        }
        if let Some((request, reply)) = next {
            self.send_request(peer, request, reply);
        }
    }

    fn respond(&mut self, handle: ResponseHandle, response: Response) -> Result<(), NetError> {
        let expected = handle.protocol();
        let got = response.protocol();
        let b = self.swarm.behaviour_mut();
        let sent = match (handle.0, response) {
            (Channel::Replicate(c), Response::Replicate(r)) => {
                b.replicate.send_response(c, r).is_ok()
            }
            (Channel::Forward(c), Response::Forward(r)) => b.forward.send_response(c, r).is_ok(),
            (Channel::Search(c), Response::Search(r)) => b.search.send_response(c, r).is_ok(),
            (Channel::Cluster(c), Response::Cluster(r)) => b.cluster.send_response(c, r).is_ok(),
            _ => {
                return Err(NetError::WrongResponse {
                    expected: expected.name(),
                    got: got.name(),
                });
            }
        };
        if sent {
            Ok(())
        } else {
            Err(NetError::ResponseChannelClosed)
        }
    }

    fn emit(&mut self, event: NetEvent) {
        if let Err(e) = self.events.try_send(event)
            && let NetEvent::InboundRequest { peer, handle, .. } = e.into_inner()
        {
            // Dropping the handle closes the stream: the requester sees a
            // refusal and can try another replica.
            NetCounters::bump(&self.counters.inbound_dropped);
            tracing::warn!(%peer, protocol = handle.protocol().name(), "event queue full; inbound request refused");
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // A peer that dialed in is routable only once Kademlia knows
                // where it listens.
                // Loopback addresses are only worth keeping when the peer
                // sees us on loopback too, i.e. runs on this host.
                let kad_protocol = libp2p::StreamProtocol::new(KAD_PROTOCOL);
                if info.protocols.contains(&kad_protocol) {
                    let same_host = is_loopback(&info.observed_addr);
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    for addr in info.listen_addrs {
                        if same_host || !is_loopback(&addr) {
                            kad.add_address(&peer_id, addr);
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) => self.on_query(id, result, step.last),
            SwarmEvent::Behaviour(BehaviourEvent::Replicate(e)) => self.on_request_response(
                Protocol::Replicate,
                e,
                Request::Replicate,
                Channel::Replicate,
                Response::Replicate,
            ),
            SwarmEvent::Behaviour(BehaviourEvent::Forward(e)) => self.on_request_response(
                Protocol::Forward,
                e,
                Request::Forward,
                Channel::Forward,
                Response::Forward,
            ),
            SwarmEvent::Behaviour(BehaviourEvent::Search(e)) => self.on_request_response(
                Protocol::Search,
                e,
                Request::Search,
                Channel::Search,
                Response::Search,
            ),
            SwarmEvent::Behaviour(BehaviourEvent::Cluster(e)) => self.on_request_response(
                Protocol::Cluster,
                e,
                Request::Cluster,
                Channel::Cluster,
                Response::Cluster,
            ),
            SwarmEvent::Behaviour(_) => {}
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                tracing::debug!(%address, "listening");
                self.listeners_ready.insert(listener_id);
                self.answer_listen_waiters();
            }
            SwarmEvent::ListenerClosed { listener_id, .. } => {
                self.listeners.remove(&listener_id);
                self.answer_listen_waiters();
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                tracing::warn!(?listener_id, %error, "listener failed");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                NetCounters::bump(&self.counters.connections_established);
                self.dial_errors.remove(&peer_id);
                if let Some((_, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    self.emit(NetEvent::PeerConnected {
                        peer: peer_id,
                        address: endpoint.get_remote_address().clone(),
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                NetCounters::bump(&self.counters.connections_closed);
                if num_established == 0 {
                    self.emit(NetEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                peer_id,
            } => {
                NetCounters::bump(&self.counters.dial_failures);
                if let Some(peer) = peer_id {
                    if self.dial_errors.len() >= MAX_DIAL_ERRORS {
                        self.dial_errors.clear();
                    }
                    self.dial_errors.insert(peer, dial_error_reason(&error));
                }
                if let Some((addr, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetError::DialFailed {
                        addr,
                        reason: error.to_string(),
                    }));
                }
            }
            _ => {}
        }
    }

    fn on_query(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        match result {
            kad::QueryResult::Bootstrap(r) => {
                let failed = r.is_err();
                if (last || failed)
                    && let Some(reply) = self.pending_bootstrap.remove(&id)
                {
                    let _ = reply.send(match r {
                        Ok(_) => Ok(()),
                        Err(_) => Err(NetError::QueryTimeout { query: "bootstrap" }),
                    });
                }
            }
            kad::QueryResult::GetClosestPeers(r) => {
                let Some((target, reply)) = self.pending_find.remove(&id) else {
                    return;
                };
                let (peers, timed_out) = match r {
                    Ok(ok) => (ok.peers, false),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => (peers, true),
                };
                let found = peers.into_iter().find(|p| p.peer_id == target);
                let answer = match found {
                    Some(info) => {
                        let kad = &mut self.swarm.behaviour_mut().kad;
                        for addr in &info.addrs {
                            kad.add_address(&target, addr.clone());
                        }
                        // A peer asked directly reports no address for
                        // itself; the routing table has the ones we know.
                        let mut addrs = info.addrs;
                        for addr in self.routing_addresses(target) {
                            if !addrs.contains(&addr) {
                                addrs.push(addr);
                            }
                        }
                        if addrs.is_empty() {
                            Err(NetError::PeerNotFound(target))
                        } else {
                            Ok(addrs)
                        }
                    }
                    None if timed_out => Err(NetError::QueryTimeout { query: "lookup" }),
                    None => Err(NetError::PeerNotFound(target)),
                };
                let _ = reply.send(answer);
            }
            _ => {}
        }
    }

    /// The addresses of `peer` in the Kademlia routing table.
    fn routing_addresses(&mut self, peer: PeerId) -> Vec<Multiaddr> {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let Some(bucket) = kad.kbucket(peer) else {
            return Vec::new();
        };
        bucket
            .iter()
            .find(|entry| *entry.node.key.preimage() == peer)
            .map(|entry| entry.node.value.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn on_request_response<Req, Resp>(
        &mut self,
        protocol: Protocol,
        event: request_response::Event<Req, Resp>,
        wrap_request: fn(Req) -> Request,
        wrap_channel: fn(ResponseChannel<Resp>) -> Channel,
        wrap_response: fn(Resp) -> Response,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    NetCounters::bump(&self.counters.inbound_requests);
                    self.emit(NetEvent::InboundRequest {
                        peer,
                        request: Box::new(wrap_request(request)),
                        handle: ResponseHandle(wrap_channel(channel)),
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some((peer, reply)) =
                        self.pending_requests.remove(&(protocol, request_id))
                    {
                        let _ = reply.send(Ok(wrap_response(response)));
                        self.release(peer, protocol);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                NetCounters::bump(&self.counters.outbound_failures);
                let error = self.outbound_error(protocol, peer, error);
                tracing::debug!(%peer, protocol = protocol.name(), %error, "request failed");
                if let Some((peer, reply)) = self.pending_requests.remove(&(protocol, request_id)) {
                    let _ = reply.send(Err(error));
                    self.release(peer, protocol);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                NetCounters::bump(&self.counters.inbound_failures);
                tracing::debug!(%peer, protocol = protocol.name(), %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {
                NetCounters::bump(&self.counters.responses_sent);
            }
        }
    }

    fn outbound_error(&self, protocol: Protocol, peer: PeerId, error: OutboundFailure) -> NetError {
        match error {
            OutboundFailure::DialFailure => NetError::PeerUnreachable {
                peer,
                reason: self
                    .dial_errors
                    .get(&peer)
                    .cloned()
                    .unwrap_or_else(|| "no address of the peer could be dialed".into()),
            },
            OutboundFailure::Timeout => {
                NetCounters::bump(&self.counters.outbound_timeouts);
                NetError::Timeout {
                    peer,
                    after: self.config.request_timeout,
                }
            }
            OutboundFailure::ConnectionClosed => NetError::ConnectionClosed { peer },
            OutboundFailure::UnsupportedProtocols => NetError::UnsupportedProtocol {
                peer,
                protocol: protocol.name(),
            },
            OutboundFailure::Io(e) => match CodecError::from_io(&e) {
                Some(CodecError::TooLarge {
                    len: Some(len),
                    limit,
                }) => NetError::RequestTooLarge {
                    protocol: protocol.name(),
                    len: *len,
                    limit: *limit,
                },
                Some(CodecError::TooLarge { len: None, limit }) => NetError::ResponseTooLarge {
                    peer,
                    protocol: protocol.name(),
                    limit: *limit,
                },
                Some(CodecError::Decode(DecodeError::Empty)) => NetError::Refused { peer },
                Some(CodecError::Decode(source)) => NetError::Decode {
                    peer,
                    protocol: protocol.name(),
                    source: Box::new(source.clone()),
                },
                Some(CodecError::Encode(reason)) => NetError::Encode {
                    protocol: protocol.name(),
                    reason: reason.clone(),
                },
                None if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::BrokenPipe
                ) =>
                {
                    NetError::Refused { peer }
                }
                None => NetError::Stream {
                    peer,
                    reason: e.to_string(),
                },
            },
        }
    }
}

/// Whether an address is on a loopback interface.
fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(AddrProtocol::Ip4(ip)) => ip.is_loopback(),
        Some(AddrProtocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// The peer id at the end of a multiaddr (`.../p2p/<id>`), if any.
pub(crate) fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(AddrProtocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// Peers whose last dial error is remembered at most.
const MAX_DIAL_ERRORS: usize = 4096;

/// A dial error in a few words: the innermost cause of each address's
/// failure ("Connection refused (os error 111)"), not libp2p's nested
/// rendering with every multiaddr.
fn dial_error_reason(error: &libp2p::swarm::DialError) -> String {
    fn root(e: &(dyn std::error::Error + 'static)) -> String {
        let mut cur = e;
        while let Some(next) = cur.source() {
            cur = next;
        }
        cur.to_string()
    }
    match error {
        libp2p::swarm::DialError::NoAddresses => "no address of the peer is known".into(),
        libp2p::swarm::DialError::Transport(errors) => {
            let mut reasons: Vec<String> = errors.iter().map(|(_, e)| root(e)).collect();
            reasons.sort();
            reasons.dedup();
            if reasons.is_empty() {
                "no address of the peer answered".into()
            } else {
                reasons.join("; ")
            }
        }
        other => root(other),
    }
}
