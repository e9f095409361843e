//! Generated protobuf and gRPC code for `portcullis.v1`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod v1 {
    tonic::include_proto!("portcullis.v1");
}

/// The encoded descriptors of every `portcullis.v1` file, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("portcullis_descriptor");
