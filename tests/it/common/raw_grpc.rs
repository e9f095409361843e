//! Calling any RPC of the descriptor set without its generated client: requests are encoded
//! from the method's input descriptor, answers come back as bytes.

use bytes::{Buf, BufMut};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// One RPC of `portcullis.v1`.
#[derive(Debug, Clone)]
pub struct Method {
    pub service: String,
    pub name: String,
    /// The input message's full name, e.g. `.portcullis.v1.GetSessionRequest`.
    pub input: String,
    pub server_streaming: bool,
}

impl Method {
    pub fn path(&self) -> String {
        format!("/portcullis.v1.{}/{}", self.service, self.name)
    }
}

/// The messages and methods of the descriptor set the server serves.
pub struct Api {
    set: FileDescriptorSet,
    pub methods: Vec<Method>,
}

/// A value to put in a request field.
pub enum Fill {
    Text(String),
    Number(u64),
    Texts(Vec<String>),
}

impl Api {
    pub fn load() -> Api {
        let set = FileDescriptorSet::decode(portcullis::pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut methods = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "portcullis.v1") {
            for service in &file.service {
                for method in &service.method {
                    methods.push(Method {
                        service: service.name().to_owned(),
                        name: method.name().to_owned(),
                        input: method.input_type().to_owned(),
                        server_streaming: method.server_streaming(),
                    });
                }
            }
        }
        Api { set, methods }
    }

    fn message(&self, full_name: &str) -> Option<&DescriptorProto> {
        let name = full_name.strip_prefix(".portcullis.v1.")?;
        self.set.file.iter().flat_map(|f| f.message_type.iter()).find(|m| m.name() == name)
    }

    /// Encodes a `full_name` message whose fields `fill` answers for, by dotted path
    /// (`user.id`, `update_mask.paths`); nested messages are left out when nothing in them is.
    pub fn encode(&self, full_name: &str, fill: &dyn Fn(&str) -> Option<Fill>) -> Vec<u8> {
        self.encode_at(full_name, "", fill)
    }

    fn encode_at(&self, full_name: &str, prefix: &str, fill: &dyn Fn(&str) -> Option<Fill>) -> Vec<u8> {
        let mut out = Vec::new();
        if full_name == ".google.protobuf.FieldMask" {
            if let Some(Fill::Texts(paths)) = fill(&format!("{prefix}paths")) {
                for path in paths {
                    put_text(&mut out, 1, &path);
                }
            }
            return out;
        }
        let Some(message) = self.message(full_name) else { return out };
        for field in &message.field {
            let path = format!("{prefix}{}", field.name());
            let number = field.number() as u64;
            match field.r#type() {
                Type::Message => {
                    let nested = self.encode_at(field.type_name(), &format!("{path}."), fill);
                    if !nested.is_empty() {
                        put_bytes(&mut out, number, &nested);
                    }
                }
                _ => match fill(&path) {
                    Some(Fill::Text(text)) => put_text(&mut out, number, &text),
                    Some(Fill::Texts(texts)) if field.label() == Label::Repeated => {
                        for text in texts {
                            put_text(&mut out, number, &text);
                        }
                    }
                    Some(Fill::Number(value)) => {
                        put_varint(&mut out, number << 3);
                        put_varint(&mut out, value);
                    }
                    _ => {}
                },
            }
        }
        out
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_varint(out, (number << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_text(out: &mut Vec<u8>, number: u64, text: &str) {
    put_bytes(out, number, text.as_bytes());
}

/// Calls `method` with an encoded request and `key`; answers the response (a stream's first
/// message) as bytes.
pub async fn call(channel: &Channel, method: &Method, body: Vec<u8>, key: &str) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|err| Status::unavailable(err.to_string()))?;
    let path: http::uri::PathAndQuery = method.path().parse().expect("path");
    let request = super::with_key(body, key);
    if method.server_streaming {
        let mut stream = grpc.server_streaming(request, path, RawCodec).await?.into_inner();
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), stream.message()).await;
        return match first {
            Ok(message) => Ok(message?.unwrap_or_default()),
            Err(_) => Err(Status::deadline_exceeded("no first message")),
        };
    }
    Ok(grpc.unary(request, path, RawCodec).await?.into_inner())
}

/// Passes bytes through: requests are encoded by [`Api::encode`], answers are only searched.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let length = src.remaining();
        Ok(Some(src.copy_to_bytes(length).to_vec()))
    }
}
