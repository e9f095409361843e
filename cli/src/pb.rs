//! Generated protobuf and gRPC client code for `portcullis.v1`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod v1 {
    tonic::include_proto!("portcullis.v1");
}

/// The encoded descriptors of every `portcullis.v1` file and what they import.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("portcullis_descriptor");
