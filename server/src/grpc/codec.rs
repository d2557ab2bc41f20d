//! The gRPC codec of `ShouldRateLimit`: bytes on the wire become a
//! `RateLimitRequest` here, before step 2 of the request path.
//!
//! tonic's prost codec answers `INTERNAL` when a message does not decode,
//! which blames the server for the caller's bytes and skips the service,
//! so the call is not counted. This decoder hands the decode error to the
//! service instead ([`Decoded`]); [`super::RateLimitGrpc`] refuses it as
//! the caller's mistake (`INVALID_ARGUMENT`, counted in
//! `floodgate_calls_total`), through [`super::status`] like any other.

use bytes::Buf as _;
use floodgate_proto::{RateLimitRequest, RateLimitResponse};
use prost::Message as _;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A request message: the request, or why its bytes are not one.
pub(super) type Decoded = Result<RateLimitRequest, prost::DecodeError>;

/// Decodes [`Decoded`] requests and encodes `RateLimitResponse`s.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RequestCodec;

impl Codec for RequestCodec {
    type Encode = RateLimitResponse;
    type Decode = Decoded;
    type Encoder = ResponseEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder
    }
}

/// Writes a `RateLimitResponse` as protobuf.
#[derive(Debug)]
pub(super) struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = RateLimitResponse;
    type Error = Status;

    fn encode(&mut self, item: RateLimitResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // Encoding fails only for want of room, and the buffer grows.
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode RateLimitResponse: {e}")))
    }
}

/// Reads one message; never fails on its content (see the module docs).
#[derive(Debug)]
pub(super) struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = Decoded;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Decoded>, Status> {
        let decoded = RateLimitRequest::decode(&mut *src);
        // A message that stops decoding part-way leaves bytes behind: drop
        // them, or tonic would read them as the next message's header.
        src.advance(src.remaining());
        Ok(Some(decoded))
    }
}
