//! Our request-response protocols as one typed pair of enums, so callers
//! send any request through one method and answer any inbound request
//! through one handle, while each protocol keeps its own stream protocol
//! name, codec and size limits underneath.

use libp2p::request_response::ResponseChannel;
use slurp_protocol::messages::{
    CLUSTER_PROTOCOL, ClusterRequest, ClusterResponse, FORWARD_PROTOCOL, ForwardRequest,
    ForwardResponse, REPLICATE_PROTOCOL, ReplicateRequest, ReplicateResponse, SEARCH_PROTOCOL,
    SearchRequest, SearchResponse,
};

/// One of our request-response protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Replicate,
    Forward,
    Search,
    Cluster,
}

impl Protocol {
    /// The stream protocol name negotiated for this protocol's current
    /// version.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Replicate => REPLICATE_PROTOCOL,
            Protocol::Forward => FORWARD_PROTOCOL,
            Protocol::Search => SEARCH_PROTOCOL,
            Protocol::Cluster => CLUSTER_PROTOCOL,
        }
    }
}

/// A request on any of our protocols.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Replicate(ReplicateRequest),
    Forward(ForwardRequest),
    Search(SearchRequest),
    Cluster(ClusterRequest),
}

impl Request {
    pub fn protocol(&self) -> Protocol {
        match self {
            Request::Replicate(_) => Protocol::Replicate,
            Request::Forward(_) => Protocol::Forward,
            Request::Search(_) => Protocol::Search,
            Request::Cluster(_) => Protocol::Cluster,
        }
    }
}

/// A response on any of our protocols.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Replicate(ReplicateResponse),
    Forward(ForwardResponse),
    Search(SearchResponse),
    Cluster(ClusterResponse),
}

impl Response {
    pub fn protocol(&self) -> Protocol {
        match self {
            Response::Replicate(_) => Protocol::Replicate,
            Response::Forward(_) => Protocol::Forward,
            Response::Search(_) => Protocol::Search,
            Response::Cluster(_) => Protocol::Cluster,
        }
    }
}

impl From<ReplicateRequest> for Request {
    fn from(r: ReplicateRequest) -> Self {
        Request::Replicate(r)
    }
}
impl From<ForwardRequest> for Request {
    fn from(r: ForwardRequest) -> Self {
        Request::Forward(r)
    }
}
impl From<SearchRequest> for Request {
    fn from(r: SearchRequest) -> Self {
        Request::Search(r)
    }
}
impl From<ClusterRequest> for Request {
    fn from(r: ClusterRequest) -> Self {
        Request::Cluster(r)
    }
}
impl From<ReplicateResponse> for Response {
    fn from(r: ReplicateResponse) -> Self {
        Response::Replicate(r)
    }
}
impl From<ForwardResponse> for Response {
    fn from(r: ForwardResponse) -> Self {
        Response::Forward(r)
    }
}
impl From<SearchResponse> for Response {
    fn from(r: SearchResponse) -> Self {
        Response::Search(r)
    }
}
impl From<ClusterResponse> for Response {
    fn from(r: ClusterResponse) -> Self {
        Response::Cluster(r)
    }
}

/// Where the answer to one inbound request goes. Pass it to
/// [`NetClient::respond`](super::NetClient::respond) with a response of the
/// same protocol; dropping it unanswered closes the stream, which the
/// requester sees as a refusal.
#[derive(Debug)]
pub struct ResponseHandle(pub(crate) Channel);

#[derive(Debug)]
pub(crate) enum Channel {
    Replicate(ResponseChannel<ReplicateResponse>),
    Forward(ResponseChannel<ForwardResponse>),
    Search(ResponseChannel<SearchResponse>),
    Cluster(ResponseChannel<ClusterResponse>),
}

impl ResponseHandle {
    /// The protocol the request came in on.
    pub fn protocol(&self) -> Protocol {
        match &self.0 {
            Channel::Replicate(_) => Protocol::Replicate,
            Channel::Forward(_) => Protocol::Forward,
            Channel::Search(_) => Protocol::Search,
            Channel::Cluster(_) => Protocol::Cluster,
        }
    }

    /// Whether the requester still waits for the answer.
    pub fn is_open(&self) -> bool {
        match &self.0 {
            Channel::Replicate(c) => c.is_open(),
            Channel::Forward(c) => c.is_open(),
            Channel::Search(c) => c.is_open(),
            Channel::Cluster(c) => c.is_open(),
        }
    }
}
