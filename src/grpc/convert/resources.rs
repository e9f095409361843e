//! Resources and their providers: ResourceService.

use super::*;

pub fn resource_to_pb(model: resource::Model) -> Result<pb::Resource, StoreError> {
    let approval = model.approval_policy()?.map(|policy| approval_to_pb(&policy));
    let provider = match crate::store::queries::resources::provider_config(&model)? {
        ProviderConfig::Memory(memory) => pb::resource::Provider::Memory(pb::MemoryProvider {
            latency_ms: memory.latency_ms,
            fail_addresses: memory.fail_addresses.iter().map(ToString::to_string).collect(),
            transient_failures: memory.transient_failures,
        }),
        ProviderConfig::AwsSecurityGroup(aws) => pb::resource::Provider::AwsSecurityGroup(pb::AwsSecurityGroup {
            region: aws.region,
            group_id: aws.group_id,
            protocol: aws.protocol,
            from_port: u32::from(aws.from_port),
            to_port: u32::from(aws.to_port),
            endpoint_url: aws.endpoint_url,
            role_arn: aws.role_arn,
            max_rules: aws.max_rules,
        }),
        ProviderConfig::GcpFirewall(gcp) => pb::resource::Provider::GcpFirewall(pb::GcpFirewall {
            project: gcp.project,
            network: gcp.network,
            protocol: gcp.protocol,
            ports: gcp.ports,
            target_tags: gcp.target_tags,
            target_service_accounts: gcp.target_service_accounts,
            priority: u32::from(gcp.priority),
            endpoint_url: gcp.endpoint_url,
        }),
        ProviderConfig::AzureNetworkSecurityGroup(azure) => {
            pb::resource::Provider::AzureNetworkSecurityGroup(pb::AzureNetworkSecurityGroup {
                subscription_id: azure.subscription_id,
                resource_group: azure.resource_group,
                nsg_name: azure.nsg_name,
                protocol: azure.protocol,
                destination_port_ranges: azure.destination_port_ranges,
                destination_address_prefix: azure.destination_address_prefix,
                priority_range: Some(pb::PriorityRange {
                    first: u32::from(azure.priority_first),
                    last: u32::from(azure.priority_last),
                }),
                endpoint_url: azure.endpoint_url,
            })
        }
        ProviderConfig::HostFirewall(host) => pb::resource::Provider::HostFirewall(pb::HostFirewall {
            agent_id: host.agent_id,
            protocol: host.protocol,
            ports: host.ports.into_iter().map(u32::from).collect(),
        }),
    };
    Ok(pb::Resource {
        id: model.id,
        name: model.name,
        description: model.description,
        provider: Some(provider),
        created_at: Some(timestamp(model.created_at)),
        updated_at: Some(timestamp(model.updated_at)),
        last_check: last_check(model.checked_at, model.check_status.as_deref(), model.check_message),
        approval,
    })
}

fn approval_to_pb(policy: &domain::ApprovalPolicy) -> pb::ApprovalPolicy {
    pb::ApprovalPolicy {
        required: true,
        approvals: policy.approvals,
        approver_user_ids: policy.approver_user_ids.clone(),
        approver_groups: policy.approver_groups.clone(),
        justification_required: policy.justification_required,
        pending_timeout: Some(prost_types::Duration { seconds: i64::from(policy.pending_timeout_secs), nanos: 0 }),
        auto_approve_groups: policy.auto_approve_groups.clone(),
    }
}

/// A request's approval policy, checked in shape (`None`: not required), or violations under
/// `resource.approval.…`.
pub fn approval_from_pb(approval: Option<&pb::ApprovalPolicy>) -> Result<Option<domain::ApprovalPolicy>> {
    let Some(approval) = approval else { return Ok(None) };
    let input = domain::ApprovalInput {
        required: approval.required,
        approvals: approval.approvals,
        approver_user_ids: &approval.approver_user_ids,
        approver_groups: &approval.approver_groups,
        justification_required: approval.justification_required,
        // A fraction of a second rounds up, so it is never read as "unset".
        pending_timeout_secs: approval.pending_timeout.map(|d| d.seconds.saturating_add(i64::from(d.nanos > 0))),
        auto_approve_groups: &approval.auto_approve_groups,
    };
    let mut violations = Violations::default();
    let policy = domain::ApprovalPolicy::check(&input, "resource.approval", &mut violations);
    if violations.is_empty() { Ok(policy) } else { Err(violations.into()) }
}

/// A resource's last periodic check, once one has finished.
fn last_check(
    checked_at: Option<DateTime<Utc>>,
    status: Option<&str>,
    message: Option<String>,
) -> Option<pb::ResourceCheck> {
    let (checked_at, status) = (checked_at?, status?);
    let status = pb::CheckStatus::from_str_name(&format!("CHECK_STATUS_{status}")).unwrap_or_default();
    Some(pb::ResourceCheck {
        status: status.into(),
        message: message.unwrap_or_default(),
        checked_at: Some(timestamp(checked_at)),
    })
}

/// The provider of a request's resource, or violations under `resource.<provider>.…`.
pub fn provider_from_pb(provider: pb::resource::Provider) -> Result<ProviderConfig> {
    let mut violations = Violations::default();
    let port = |violations: &mut Violations, field: &str, value: u32| -> u16 {
        u16::try_from(value).unwrap_or_else(|_| {
            violations.add(field, "must be at most 65535");
            0
        })
    };
    let config = match provider {
        pb::resource::Provider::Memory(memory) => {
            let mut fail_addresses = Vec::new();
            for (index, address) in memory.fail_addresses.iter().enumerate() {
                match address.parse::<IpAddr>() {
                    Ok(ip) => fail_addresses.push(ip),
                    Err(_) => {
                        violations.add(format!("resource.memory.fail_addresses[{index}]"), "must be an IP address")
                    }
                }
            }
            ProviderConfig::Memory(domain::MemoryProvider {
                latency_ms: memory.latency_ms,
                fail_addresses,
                transient_failures: memory.transient_failures,
            })
        }
        pb::resource::Provider::AwsSecurityGroup(aws) => {
            let from_port = port(&mut violations, "resource.aws_security_group.from_port", aws.from_port);
            let to_port = port(&mut violations, "resource.aws_security_group.to_port", aws.to_port);
            ProviderConfig::AwsSecurityGroup(domain::AwsSecurityGroup {
                region: aws.region,
                group_id: aws.group_id,
                protocol: aws.protocol,
                from_port,
                to_port,
                endpoint_url: aws.endpoint_url,
                role_arn: aws.role_arn,
                max_rules: aws.max_rules,
            })
        }
        pb::resource::Provider::GcpFirewall(gcp) => {
            let priority = port(&mut violations, "resource.gcp_firewall.priority", gcp.priority);
            ProviderConfig::GcpFirewall(domain::GcpFirewall {
                project: gcp.project,
                network: gcp.network,
                protocol: gcp.protocol,
                ports: gcp.ports,
                target_tags: gcp.target_tags,
                target_service_accounts: gcp.target_service_accounts,
                priority,
                endpoint_url: gcp.endpoint_url,
            })
        }
        pb::resource::Provider::AzureNetworkSecurityGroup(azure) => {
            use domain::AzureNetworkSecurityGroup as Nsg;
            let field = "resource.azure_network_security_group.priority_range";
            let (first, last) = match azure.priority_range {
                Some(range) => (
                    port(&mut violations, &format!("{field}.first"), range.first),
                    port(&mut violations, &format!("{field}.last"), range.last),
                ),
                None => Nsg::DEFAULT_PRIORITIES,
            };
            let prefix = azure.destination_address_prefix;
            ProviderConfig::AzureNetworkSecurityGroup(Nsg {
                subscription_id: azure.subscription_id,
                resource_group: azure.resource_group,
                nsg_name: azure.nsg_name,
                // Azure's spelling, whatever case was given; anything else is reported as given.
                protocol: Nsg::protocol_named(&azure.protocol).map_or(azure.protocol, str::to_owned),
                destination_port_ranges: azure.destination_port_ranges,
                destination_address_prefix: if prefix.is_empty() { "*".to_owned() } else { prefix },
                priority_first: first,
                priority_last: last,
                endpoint_url: azure.endpoint_url,
            })
        }
        pb::resource::Provider::HostFirewall(host) => {
            let mut ports = Vec::with_capacity(host.ports.len());
            for (index, value) in host.ports.iter().enumerate() {
                ports.push(port(&mut violations, &format!("resource.host_firewall.ports[{index}]"), *value));
            }
            ProviderConfig::HostFirewall(domain::HostFirewall {
                agent_id: host.agent_id,
                protocol: host.protocol,
                ports,
            })
        }
    };
    if violations.is_empty() { Ok(config) } else { Err(violations.into()) }
}
