//! Compiles the protos in `proto/` into Rust and writes the descriptor set used by gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/portcullis/v1/agent.proto",
    "proto/portcullis/v1/approval.proto",
    "proto/portcullis/v1/audit.proto",
    "proto/portcullis/v1/auth.proto",
    "proto/portcullis/v1/error_reason.proto",
    "proto/portcullis/v1/identity_provider.proto",
    "proto/portcullis/v1/organization.proto",
    "proto/portcullis/v1/resource.proto",
    "proto/portcullis/v1/resource_ip.proto",
    "proto/portcullis/v1/session.proto",
    "proto/portcullis/v1/user.proto",
    "proto/portcullis/v1/webhook.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // A vendored protoc, so `cargo build` needs no system protobuf compiler.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        // Written by hand (src/pb.rs), so one encoding of a session state serves every watcher.
        .extern_path(".portcullis.v1.WatchSessionResponse", "crate::pb::WatchSessionResponse")
        // Clients are made from channels (`XClient::new`): a generated `connect` constructor
        // would clash with AgentService's `Connect` method.
        .build_transport(false)
        .file_descriptor_set_path(out_dir.join("portcullis_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["proto"])?;
    Ok(())
}
