//! Who may make a call and how far it reaches: the data of the one authorization table (the
//! table itself, keyed by RPC, is `grpc::policy`; the decision is `Caller::admit`).

use super::Permission;

/// The access rule of one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No credential needed (starting and finishing a login).
    Public,
    /// Authenticated callers: members of an organization as `members` says (`None`: no member may
    /// make the call), and platform operators, on any organization, when `operators` is set.
    Guarded { members: Option<MemberAccess>, operators: bool },
    /// Host agents only, each by its own credential (`agent:connect`); no member or operator.
    Agent,
}

/// What a member of an organization needs to make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberAccess {
    /// The permission the call needs; `None`: every member may make it.
    pub needs: Option<Permission>,
    /// The permission that extends the call from the caller's own objects (sessions, keys,
    /// assigned resources, their own user) to every object of the organization; `None`: only
    /// their own.
    pub others: Option<Permission>,
    /// Whether members of a suspended organization may still make the call (reading it).
    pub while_suspended: bool,
}

/// Which objects an admitted call reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// The caller's own objects in its organization.
    #[default]
    Own,
    /// Every object of the caller's organization.
    Organization,
    /// Every organization: a platform operator's call.
    Platform,
}

impl Rule {
    /// Members holding `needs`; their own objects only.
    pub const fn own(needs: Option<Permission>) -> Rule {
        Rule::member(MemberAccess { needs, others: None, while_suspended: false })
    }

    /// Members holding `needs`; other members' objects too with `others`.
    pub const fn own_or_others(needs: Option<Permission>, others: Permission) -> Rule {
        Rule::member(MemberAccess { needs, others: Some(others), while_suspended: false })
    }

    /// Members holding `needs`, on every object of their organization.
    pub const fn organization(needs: Permission) -> Rule {
        Rule::member(MemberAccess { needs: Some(needs), others: Some(needs), while_suspended: false })
    }

    /// Platform operators only.
    pub const OPERATOR: Rule = Rule::Guarded { members: None, operators: true };

    /// The same rule, open to platform operators too.
    pub const fn and_operators(self) -> Rule {
        match self {
            Rule::Guarded { members, .. } => Rule::Guarded { members, operators: true },
            other => other,
        }
    }

    /// The same rule, open to members of a suspended organization too.
    pub const fn while_suspended(self) -> Rule {
        match self {
            Rule::Guarded { members: Some(access), operators } => {
                Rule::Guarded { members: Some(MemberAccess { while_suspended: true, ..access }), operators }
            }
            other => other,
        }
    }

    const fn member(access: MemberAccess) -> Rule {
        Rule::Guarded { members: Some(access), operators: false }
    }
}
