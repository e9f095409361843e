//! The attack matrix: what an attacker on the network or with a stolen piece could try, and
//! what the server answers.

use crate::common;
use crate::common::certs::TestCa;
use crate::common::{TestDb, TestServer, with_key};
use portcullis::pb::v1::user_service_client::UserServiceClient;
use portcullis::pb::v1::*;
use portcullis::settings::{Count, Seconds};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

mod authorization;
mod credentials;
mod endpoints;
mod limits;
mod tls;

/// Who the admin key belongs to, over `channel`: proves a whole authenticated call went through.
async fn whoami(server: &TestServer, channel: Channel) -> Result<String, tonic::Status> {
    let answer =
        UserServiceClient::new(channel).get_current_user(with_key(GetCurrentUserRequest {}, &server.admin_key)).await?;
    Ok(answer.into_inner().user.unwrap_or_default().email)
}

fn organizations(channel: &Channel) -> organization_service_client::OrganizationServiceClient<Channel> {
    organization_service_client::OrganizationServiceClient::new(channel.clone())
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}
