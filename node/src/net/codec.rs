//! The request-response codec of our protocols: one framed CBOR value per
//! stream direction, bounded in size.
//!
//! The writer closes its side after the value, so no length prefix is
//! needed: the reader reads at most `limit + 1` bytes and refuses the
//! message if it got more, before parsing anything. Decoding goes through
//! [`Framed::decode_limited`], which checks the kind and format version and
//! never panics on hostile bytes. Limits apply on both sides: a node never
//! sends what it would refuse to receive, so an oversized message fails
//! locally with a typed error instead of being cut off by the peer.

use std::io;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::prelude::*;
use libp2p::StreamProtocol;
use libp2p::request_response;
use slurp_protocol::{DecodeError, Framed};

use super::config::ProtocolLimits;
use super::stats::NetCounters;

/// Why a message could not be read or written; carried inside the
/// `io::Error` that libp2p's request-response reports, and recovered from it
/// by [`CodecError::from_io`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("message over the limit of {limit} bytes")]
    TooLarge { len: Option<usize>, limit: usize },
    #[error("{0}")]
    Decode(DecodeError),
    #[error("cannot encode: {0}")]
    Encode(String),
}

impl CodecError {
    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The codec error inside an I/O error, if there is one.
    pub fn from_io(e: &io::Error) -> Option<&CodecError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<CodecError>())
    }
}

/// A codec for one protocol whose requests are `Req` and responses `Resp`.
pub struct FramedCodec<Req, Resp> {
    limits: ProtocolLimits,
    /// Oversized messages are counted here: libp2p does not report a
    /// request that failed to read, so the codec is the one place that sees
    /// every refusal.
    counters: Arc<NetCounters>,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> FramedCodec<Req, Resp> {
    pub fn new(limits: ProtocolLimits, counters: Arc<NetCounters>) -> Self {
        FramedCodec {
            limits,
            counters,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> FramedCodec<Req, Resp> {
    fn counted<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result
            && matches!(CodecError::from_io(e), Some(CodecError::TooLarge { .. }))
        {
            NetCounters::bump(&self.counters.oversized_messages);
        }
        result
    }
}

impl<Req, Resp> Clone for FramedCodec<Req, Resp> {
    fn clone(&self) -> Self {
        FramedCodec::new(self.limits, self.counters.clone())
    }
}

/// Reads the rest of the stream, at most `limit` bytes.
async fn read_limited<T>(io: &mut T, limit: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    io.take(cap).read_to_end(&mut buf).await?;
    if buf.len() > limit {
        return Err(CodecError::TooLarge { len: None, limit }.into_io());
    }
    Ok(buf)
}

fn decode<M: Framed>(bytes: &[u8], limit: usize) -> io::Result<M> {
    M::decode_limited(bytes, limit).map_err(|e| CodecError::Decode(e).into_io())
}

/// Encodes a message, refusing it if it is over `limit`. Done before any
/// await, so the message itself never has to be `Sync`.
fn encode_limited<M: Framed>(message: &M, limit: usize) -> io::Result<Vec<u8>> {
    let bytes = message
        .encode()
        .map_err(|e| CodecError::Encode(e.0).into_io())?;
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: Some(bytes.len()),
            limit,
        }
        .into_io());
    }
    Ok(bytes)
}

async fn write_all<T>(io: &mut T, bytes: io::Result<Vec<u8>>) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    io.write_all(&bytes?).await?;
    io.close().await
}

impl<Req, Resp> request_response::Codec for FramedCodec<Req, Resp>
where
    Req: Framed + Send + 'static,
    Resp: Framed + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        let limit = self.limits.max_request_bytes;
        let bytes = self.counted(read_limited(io, limit).await)?;
        decode(&bytes, limit)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        let limit = self.limits.max_response_bytes;
        let bytes = self.counted(read_limited(io, limit).await)?;
        decode(&bytes, limit)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = self.counted(encode_limited(&req, self.limits.max_request_bytes));
        write_all(io, bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let bytes = self.counted(encode_limited(&res, self.limits.max_response_bytes));
        write_all(io, bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;
    use slurp_protocol::messages::{ClusterRequest, ClusterResponse};

    fn proto() -> StreamProtocol {
        StreamProtocol::new("/slurp/cluster/1")
    }

    #[test]
    fn round_trip_and_limits() {
        futures::executor::block_on(async {
            let mut codec = FramedCodec::<ClusterRequest, ClusterResponse>::new(
                ProtocolLimits::new(64, 8),
                Arc::default(),
            );
            let mut out = futures::io::Cursor::new(Vec::new());
            codec
                .write_request(&proto(), &mut out, ClusterRequest::Health)
                .await
                .unwrap();
            let bytes = out.into_inner();
            let mut input = futures::io::Cursor::new(bytes.clone());
            let back = codec.read_request(&proto(), &mut input).await.unwrap();
            assert_eq!(back, ClusterRequest::Health);

            // A response over the limit is refused on write and on read.
            let big = ClusterResponse::Layout {
                version: 1,
                layout: Some(slurp_protocol::Bytes(vec![0; 32])),
                history: Vec::new(),
            };
            let mut out = futures::io::Cursor::new(Vec::new());
            let err = codec
                .write_response(&proto(), &mut out, big.clone())
                .await
                .unwrap_err();
            assert!(matches!(
                CodecError::from_io(&err),
                Some(CodecError::TooLarge { limit: 8, .. })
            ));
            let mut input = futures::io::Cursor::new(big.encode().unwrap());
            let err = codec.read_response(&proto(), &mut input).await.unwrap_err();
            assert!(matches!(
                CodecError::from_io(&err),
                Some(CodecError::TooLarge {
                    len: None,
                    limit: 8
                })
            ));
            assert_eq!(codec.counters.snapshot().oversized_messages, 2);

            // Garbage and the wrong kind are decode errors, not panics.
            let mut input = futures::io::Cursor::new(vec![0xff, 0x00, 0x13]);
            let err = codec.read_request(&proto(), &mut input).await.unwrap_err();
            assert!(matches!(
                CodecError::from_io(&err),
                Some(CodecError::Decode(_))
            ));
            let mut input = futures::io::Cursor::new(
                ClusterResponse::Error(slurp_protocol::messages::RemoteError {
                    code: slurp_protocol::messages::ErrorCode::Internal,
                    message: String::new(),
                })
                .encode()
                .unwrap(),
            );
            let err = codec.read_request(&proto(), &mut input).await.unwrap_err();
            assert!(matches!(
                CodecError::from_io(&err),
                Some(CodecError::Decode(DecodeError::WrongKind { .. }))
            ));
        });
    }
}
