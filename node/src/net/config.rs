//! Network settings (`[net]`): where the swarm listens, whom it bootstraps
//! from, and every limit of its protocols.
//!
//! Every limit is a key with a default that works on a small cluster, so a
//! node needs no `[net]` section to join one beyond its bootstrap peers.

use std::time::Duration;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// Size limits of one request-response protocol, in encoded bytes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtocolLimits {
    /// Largest request of this protocol the node sends or accepts, in
    /// encoded bytes.
    pub max_request_bytes: usize,
    /// Largest response of this protocol the node sends or accepts, in
    /// encoded bytes.
    pub max_response_bytes: usize,
}

impl ProtocolLimits {
    pub const fn new(max_request_bytes: usize, max_response_bytes: usize) -> Self {
        ProtocolLimits {
            max_request_bytes,
            max_response_bytes,
        }
    }
}

const MIB: usize = 1024 * 1024;

/// The swarm's configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// Multiaddrs to listen on (TCP and QUIC on loopback by default; a
    /// cluster node lists its routable addresses).
    #[schemars(with = "Vec<String>")]
    pub listen: Vec<Multiaddr>,
    /// Peers to join through, multiaddrs each ending in `/p2p/<peer id>`.
    #[schemars(with = "Vec<String>")]
    pub bootstrap: Vec<Multiaddr>,
    /// A libp2p private-network key file (`/key/swarm/psk/1.0.0/`, made by
    /// `slurp node swarm-key`): TCP connections then complete only between
    /// nodes holding the same key, before any protocol of ours sees them.
    /// An outer fence, not the trust boundary: QUIC connections are not
    /// covered and are admitted by certificate only.
    #[schemars(with = "Option<String>")]
    pub swarm_key: Option<std::path::PathBuf>,
    /// A connection with no stream open for this long is closed, a
    /// duration such as `60s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idle_connection_timeout: Duration,
    /// A request to a peer without a response after this long fails with a
    /// timeout, a duration such as `10s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub request_timeout: Duration,
    /// Streams of one request-response protocol open at once per
    /// connection, inbound and outbound together, a count; streams over it
    /// are dropped by libp2p.
    pub max_concurrent_streams: usize,
    /// Requests of one protocol in flight to one peer, a count; more wait in
    /// a queue in the order they were made. Keep it at most half of
    /// `max_concurrent_streams`, so two peers asking each other at full
    /// rate never overflow a connection.
    pub max_outbound_streams_per_peer: usize,
    /// Requests of one protocol queued for one peer, a count; past it a
    /// request fails at once as overloaded.
    pub max_queued_requests_per_peer: usize,
    /// Established connections at most, inbound and outbound together, a
    /// count.
    pub max_established_connections: u32,
    /// Established connections at most to one peer, a count.
    pub max_connections_per_peer: u32,
    /// A Kademlia query (lookup, bootstrap) gives up after this long, a
    /// duration such as `30s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub kad_query_timeout: Duration,
    /// How often the node re-runs the Kademlia bootstrap, a duration such
    /// as `5m`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub bootstrap_interval: Duration,
    /// Events (inbound requests, connections) queued for the node before
    /// new inbound requests are refused, a count.
    pub event_buffer: usize,
    /// Commands queued from clients of the swarm before callers wait, a
    /// count.
    pub command_buffer: usize,
    /// Size limits of replication (sealed versions sent between replicas).
    pub replicate: ProtocolLimits,
    /// Size limits of forwarding (an API call relayed to a member that
    /// holds the key).
    pub forward: ProtocolLimits,
    /// Size limits of distributed search (queries and their hits).
    pub search: ProtocolLimits,
    /// Size limits of the cluster protocol (hello, health, layouts,
    /// tokens).
    pub cluster: ProtocolLimits,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            bootstrap: vec![],
            swarm_key: None,
            idle_connection_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_concurrent_streams: 128,
            max_outbound_streams_per_peer: 64,
            max_queued_requests_per_peer: 4096,
            max_established_connections: 512,
            max_connections_per_peer: 4,
            kad_query_timeout: Duration::from_secs(30),
            bootstrap_interval: Duration::from_secs(300),
            event_buffer: 1024,
            command_buffer: 256,
            // A batch of sealed versions; the decoder's default ceiling.
            replicate: ProtocolLimits::new(16 * MIB, 16 * MIB),
            // An API body (8 MiB by default) plus the call around it.
            forward: ProtocolLimits::new(9 * MIB, 16 * MIB),
            search: ProtocolLimits::new(MIB, 8 * MIB),
            cluster: ProtocolLimits::new(MIB, 4 * MIB),
        }
    }
}

impl NetConfig {
    /// Refuses settings the swarm cannot run with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |key: &str, value: usize| {
            if value == 0 {
                Err(format!("net.{key} must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("max_concurrent_streams", self.max_concurrent_streams)?;
        positive(
            "max_outbound_streams_per_peer",
            self.max_outbound_streams_per_peer,
        )?;
        positive("event_buffer", self.event_buffer)?;
        positive("command_buffer", self.command_buffer)?;
        if self.max_outbound_streams_per_peer > self.max_concurrent_streams {
            return Err(format!(
                "net.max_outbound_streams_per_peer ({}) must not exceed net.max_concurrent_streams ({})",
                self.max_outbound_streams_per_peer, self.max_concurrent_streams
            ));
        }
        for (key, value) in [
            ("request_timeout", self.request_timeout),
            ("kad_query_timeout", self.kad_query_timeout),
            ("bootstrap_interval", self.bootstrap_interval),
            ("idle_connection_timeout", self.idle_connection_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("net.{key} must be longer than zero"));
            }
        }
        for (name, limits) in [
            ("replicate", self.replicate),
            ("forward", self.forward),
            ("search", self.search),
            ("cluster", self.cluster),
        ] {
            positive(
                &format!("{name}.max_request_bytes"),
                limits.max_request_bytes,
            )?;
            positive(
                &format!("{name}.max_response_bytes"),
                limits.max_response_bytes,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml_and_unknown_keys_fail() {
        let c = NetConfig::default();
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("request_timeout = \"10s\""), "{text}");
        let back: NetConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let partial: NetConfig = toml::from_str(
            "bootstrap = [\"/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\"]\n[search]\nmax_request_bytes = 10\nmax_response_bytes = 20\n",
        )
        .unwrap();
        assert_eq!(partial.search, ProtocolLimits::new(10, 20));
        assert_eq!(partial.bootstrap.len(), 1);
        assert!(toml::from_str::<NetConfig>("listen_on = []").is_err());
        assert!(
            toml::from_str::<NetConfig>(
                "[search]\nmax_request_bytes = 1\nmax_response_bytes = 1\nextra = 2"
            )
            .is_err()
        );
    }

    #[test]
    fn validation_names_the_key() {
        assert_eq!(NetConfig::default().validate(), Ok(()));
        let mut c = NetConfig::default();
        c.max_outbound_streams_per_peer = c.max_concurrent_streams + 1;
        assert!(
            c.validate()
                .unwrap_err()
                .contains("max_outbound_streams_per_peer")
        );
        let c = NetConfig {
            request_timeout: Duration::ZERO,
            ..NetConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("request_timeout"));
        let mut c = NetConfig::default();
        c.cluster.max_response_bytes = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .contains("cluster.max_response_bytes")
        );
    }
}
