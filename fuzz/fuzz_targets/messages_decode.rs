#![no_main]
//! Every cluster message a peer can send us: decoding never panics.
use libfuzzer_sys::fuzz_target;
use slurp_protocol::Framed;
use slurp_protocol::messages::{
    ClusterRequest, ClusterResponse, ForwardRequest, ForwardResponse, ReplicateRequest,
    ReplicateResponse, SearchRequest, SearchResponse,
};

fuzz_target!(|data: &[u8]| {
    let limit = 1 << 20;
    let _ = ReplicateRequest::decode_limited(data, limit);
    let _ = ReplicateResponse::decode_limited(data, limit);
    let _ = ForwardRequest::decode_limited(data, limit);
    let _ = ForwardResponse::decode_limited(data, limit);
    let _ = SearchRequest::decode_limited(data, limit);
    let _ = SearchResponse::decode_limited(data, limit);
    let _ = ClusterRequest::decode_limited(data, limit);
    let _ = ClusterResponse::decode_limited(data, limit);
});
