//! Generated protobuf and gRPC client code for `portcullis.v1`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod v1 {
    tonic::include_proto!("portcullis.v1");
}
