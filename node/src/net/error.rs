//! Typed errors of the network layer, so callers can tell a slow peer from
//! an absent one, a refusal from a protocol mismatch, and retry accordingly.

use std::path::PathBuf;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use slurp_protocol::DecodeError;

/// Why the node identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("node identity {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node identity {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("cannot build the transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("invalid address {addr}: {reason}")]
    InvalidAddress { addr: Multiaddr, reason: String },
    #[error("peer {peer} did not answer within {after:?}")]
    Timeout { peer: PeerId, after: Duration },
    #[error("the Kademlia {query} timed out")]
    QueryTimeout { query: &'static str },
    #[error("peer {peer} is unreachable: {reason}")]
    PeerUnreachable { peer: PeerId, reason: String },
    #[error("dialing {addr} failed: {reason}")]
    DialFailed { addr: Multiaddr, reason: String },
    #[error("peer {0} was not found in the cluster")]
    PeerNotFound(PeerId),
    #[error("no peer is known to bootstrap from")]
    NoKnownPeers,
    #[error("the connection to {peer} closed before the response")]
    ConnectionClosed { peer: PeerId },
    #[error("peer {peer} supports none of {protocol}")]
    UnsupportedProtocol {
        peer: PeerId,
        protocol: &'static str,
    },
    #[error("request of {len} bytes is over the {protocol} limit of {limit}")]
    RequestTooLarge {
        protocol: &'static str,
        len: usize,
        limit: usize,
    },
    #[error("response from {peer} is over the {protocol} limit of {limit} bytes")]
    ResponseTooLarge {
        peer: PeerId,
        protocol: &'static str,
        limit: usize,
    },
    #[error("peer {peer} closed the stream without a response (refused or failed)")]
    Refused { peer: PeerId },
    #[error("cannot decode the {protocol} response from {peer}: {source}")]
    Decode {
        peer: PeerId,
        protocol: &'static str,
        #[source]
        source: Box<DecodeError>,
    },
    #[error("cannot encode a {protocol} message: {reason}")]
    Encode {
        protocol: &'static str,
        reason: String,
    },
    #[error("stream to {peer} failed: {reason}")]
    Stream { peer: PeerId, reason: String },
    #[error("a {got} response cannot answer a {expected} request")]
    WrongResponse {
        expected: &'static str,
        got: &'static str,
    },
    #[error("the requester is gone; the response was not sent")]
    ResponseChannelClosed,
    #[error("{queued} requests already wait for peer {peer}")]
    Overloaded { peer: PeerId, queued: usize },
    #[error("the network is shut down")]
    ShutDown,
}
