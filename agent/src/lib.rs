//! The Portcullis host agent: it holds the desired state the server sends (which addresses may
//! reach which ports, until when) and keeps one nftables table that says exactly that. The
//! kernel removes each address at its expiry by itself, so access closes on time even when the
//! agent and the server are both gone.

pub mod client;
pub mod nft;
pub mod state;

/// AgentService, as the agent calls it.
pub mod pb {
    tonic::include_proto!("portcullis.v1");
}
