//! Counters of the network layer, plain atomics read by
//! [`NetClient::stats`](super::NetClient::stats); the node's metrics
//! registry exports them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by the event loop and every client.
#[derive(Debug, Default)]
pub struct NetCounters {
    pub connections_established: AtomicU64,
    pub connections_closed: AtomicU64,
    pub dial_failures: AtomicU64,
    pub outbound_requests: AtomicU64,
    pub outbound_failures: AtomicU64,
    pub outbound_timeouts: AtomicU64,
    pub inbound_requests: AtomicU64,
    pub inbound_failures: AtomicU64,
    pub responses_sent: AtomicU64,
    pub oversized_messages: AtomicU64,
    pub inbound_dropped: AtomicU64,
    pub kad_queries: AtomicU64,
}

/// A snapshot of [`NetCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NetStats {
    pub connections_established: u64,
    pub connections_closed: u64,
    pub dial_failures: u64,
    pub outbound_requests: u64,
    pub outbound_failures: u64,
    pub outbound_timeouts: u64,
    pub inbound_requests: u64,
    /// Inbound requests that could not be read or answered.
    pub inbound_failures: u64,
    pub responses_sent: u64,
    /// Messages refused for their size, either direction.
    pub oversized_messages: u64,
    /// Inbound requests refused because the node's event queue was full.
    pub inbound_dropped: u64,
    pub kad_queries: u64,
}

impl NetCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> NetStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetStats {
            connections_established: get(&self.connections_established),
            connections_closed: get(&self.connections_closed),
            dial_failures: get(&self.dial_failures),
            outbound_requests: get(&self.outbound_requests),
            outbound_failures: get(&self.outbound_failures),
            outbound_timeouts: get(&self.outbound_timeouts),
            inbound_requests: get(&self.inbound_requests),
            inbound_failures: get(&self.inbound_failures),
            responses_sent: get(&self.responses_sent),
            oversized_messages: get(&self.oversized_messages),
            inbound_dropped: get(&self.inbound_dropped),
            kad_queries: get(&self.kad_queries),
        }
    }
}
