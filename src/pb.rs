//! Generated protobuf and gRPC code for `portcullis.v1`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod v1 {
    tonic::include_proto!("portcullis.v1");

    pub use super::WatchSessionResponse;
}

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};

/// `portcullis.v1.WatchSessionResponse { Session session = 1; }`, with one addition: a server
/// can send a message encoded beforehand, so a state watched by thousands is encoded once and
/// the same bytes go to every stream. Decoding fills `session` as generated code would.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct WatchSessionResponse {
    /// session is the session's current state.
    pub session: Option<v1::Session>,
    /// This message's encoding, sent as it is (when set, `session` is not looked at).
    encoded: Option<Bytes>,
}

impl WatchSessionResponse {
    const SESSION_TAG: u32 = 1;

    pub fn new(session: v1::Session) -> WatchSessionResponse {
        WatchSessionResponse { session: Some(session), encoded: None }
    }

    /// A message that sends `encoded` (made by [`WatchSessionResponse::encode`]) as it is.
    pub fn pre_encoded(encoded: Bytes) -> WatchSessionResponse {
        WatchSessionResponse { session: None, encoded: Some(encoded) }
    }

    /// The encoding of the message carrying `session`.
    pub fn encode(session: &v1::Session) -> Bytes {
        let mut buf = Vec::with_capacity(prost::encoding::message::encoded_len(Self::SESSION_TAG, session));
        prost::encoding::message::encode(Self::SESSION_TAG, session, &mut buf);
        Bytes::from(buf)
    }
}

impl prost::Message for WatchSessionResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match (&self.encoded, &self.session) {
            (Some(encoded), _) => buf.put_slice(encoded),
            (None, Some(session)) => prost::encoding::message::encode(Self::SESSION_TAG, session, buf),
            (None, None) => {}
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag != Self::SESSION_TAG {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        let session = self.session.get_or_insert_with(Default::default);
        prost::encoding::message::merge(wire_type, session, buf, ctx).map_err(|mut err| {
            err.push("WatchSessionResponse", "session");
            err
        })
    }

    fn encoded_len(&self) -> usize {
        match (&self.encoded, &self.session) {
            (Some(encoded), _) => encoded.len(),
            (None, Some(session)) => prost::encoding::message::encoded_len(Self::SESSION_TAG, session),
            (None, None) => 0,
        }
    }

    fn clear(&mut self) {
        *self = WatchSessionResponse::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_pre_encoded_response_is_the_same_bytes_as_an_encoded_one() {
        let session = v1::Session { id: "0192".into(), revision: 7, ..Default::default() };
        // Generated code for the same shape (`Session session = 1`) is the reference.
        let generated = v1::GetSessionResponse { session: Some(session.clone()) }.encode_to_vec();
        let direct = WatchSessionResponse::new(session.clone()).encode_to_vec();
        let shared = WatchSessionResponse::pre_encoded(WatchSessionResponse::encode(&session)).encode_to_vec();
        assert_eq!(direct, generated);
        assert_eq!(shared, generated);
        let decoded = WatchSessionResponse::decode(shared.as_slice()).expect("decodes");
        assert_eq!(decoded, WatchSessionResponse::new(session));
    }
}

/// The encoded descriptors of every `portcullis.v1` file, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("portcullis_descriptor");
