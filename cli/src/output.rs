//! How answers are printed: tables for people, the API's JSON (`--output json`, proto3 JSON as
//! grpcurl prints it) for scripts, or ids only (`--quiet`).

use crate::errors::Failure;
use prost_reflect::{DescriptorPool, DynamicMessage};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// What the command line asked for.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
    /// Ids only (tables) and no progress lines.
    pub quiet: bool,
}

impl Output {
    /// Whether answers go out as JSON (and nothing else on stdout).
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Whether people-facing lines (tables, progress) are printed.
    pub fn chatty(&self) -> bool {
        !self.json() && !self.quiet
    }

    /// Prints `message` (of the API's `full_name`, e.g. "portcullis.v1.GetSessionResponse") as JSON.
    pub fn print_json<M: prost::Message>(&self, message: &M, full_name: &str) -> Result<(), Failure> {
        println!("{}", to_json(message, full_name)?);
        Ok(())
    }
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    // Built into the binary by build.rs: decoding it cannot fail unless the build is broken.
    POOL.get_or_init(|| DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap_or_default())
}

/// The proto3 JSON of `message`: field names in lowerCamelCase, enums by name, 64-bit integers
/// as strings, defaults left out.
pub fn to_json<M: prost::Message>(message: &M, full_name: &str) -> Result<String, Failure> {
    let descriptor = pool().get_message_by_name(full_name).ok_or_else(|| format!("no descriptor for {full_name}"))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice()).map_err(|e| e.to_string())?;
    Ok(serde_json::to_string_pretty(&dynamic).map_err(|err| err.to_string())?)
}
