//! Delivery of login mail: SMTP for real, the server log for development.

use crate::config::{MailConfig, MailTransport, SmtpSecurity};
use crate::error::{Error, Result};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;

/// A message to one address.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl Mail {
    /// A login code, working once until `expires_at`.
    pub fn login_code(to: &str, code: &str, expires_at: DateTime<Utc>) -> Mail {
        let expiry = expires_at.to_rfc3339_opts(SecondsFormat::Secs, true);
        Mail {
            to: to.to_owned(),
            subject: format!("Your Portcullis login code: {code}"),
            body: format!(
                "Your Portcullis login code is {code}\n\nIt works once, until {expiry}.\n\
                 If you did not try to log in, ignore this mail.\n"
            ),
        }
    }

    /// Someone asks the recipient to approve their session.
    pub fn approval_requested(
        to: &str,
        requester: &str,
        session_id: &str,
        resources: &str,
        justification: &str,
    ) -> Mail {
        let why = if justification.is_empty() { "no justification given".to_owned() } else { justification.to_owned() };
        Mail {
            to: to.to_owned(),
            subject: format!("Portcullis: {requester} asks to open {resources}"),
            body: format!(
                "{requester} asks to open {resources} (session {session_id}).\n\nWhy: {why}\n\n\
                 Approve:  pcl approve {session_id} --reason \"WHY\"\n\
                 Deny:     pcl deny {session_id} --reason \"WHY\"\n"
            ),
        }
    }

    /// An approver decided on a session: the recipient's own (`whose` None), or, for another
    /// approver, `whose` requester's.
    pub fn approval_decided(
        to: &str,
        whose: Option<&str>,
        approver: &str,
        session_id: &str,
        approved: bool,
        opened: bool,
        reason: &str,
    ) -> Mail {
        let (verb, outcome) = match (approved, opened) {
            (false, _) => ("denied", "It will not open."),
            (true, true) => ("approved", "It has every approval it needs and is opening now."),
            (true, false) => ("approved", "It still waits for more approvals."),
        };
        let session = match whose {
            None => "your session".to_owned(),
            Some(requester) => format!("the session of {requester}"),
        };
        Mail {
            to: to.to_owned(),
            subject: format!("Portcullis: {approver} {verb} {session}"),
            body: format!("{approver} {verb} {session} {session_id}: {reason}\n\n{outcome}\n"),
        }
    }

    /// The recipient's organization logs its people in through its identity provider only.
    pub fn sso_required(to: &str, organization_id: &str) -> Mail {
        Mail {
            to: to.to_owned(),
            subject: "Portcullis: log in with single sign-on".to_owned(),
            body: format!(
                "Your organization logs you in through its identity provider, so no login code was sent.\n\
                 Log in with:\n\n  pcl login --sso --organization {organization_id}\n\n\
                 If you did not try to log in, ignore this mail.\n"
            ),
        }
    }

    /// The organizations (name, id) an address belongs to, when a login did not name one.
    pub fn organization_choice(to: &str, organizations: &[(String, String)]) -> Mail {
        let list: String = organizations.iter().map(|(name, id)| format!("  {name}: {id}\n")).collect();
        Mail {
            to: to.to_owned(),
            subject: "Portcullis: which organization?".to_owned(),
            body: format!(
                "Your address belongs to users of several organizations, so no login code was sent.\n\
                 Log in again naming one of them (organization_id):\n\n{list}\n\
                 If you did not try to log in, ignore this mail.\n"
            ),
        }
    }
}

/// A session about to expire, for the warning mail.
pub struct ExpiringSession<'a> {
    pub id: &'a str,
    pub expires_at: DateTime<Utc>,
    pub minutes_left: i64,
    pub addresses: Vec<&'a str>,
    pub resources: Vec<String>,
}

impl Mail {
    /// A session of the recipient's ends soon: which, when, what it opens, and how to extend it.
    pub fn expiry_warning(to: &str, session: &ExpiringSession<'_>) -> Mail {
        let expiry = session.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true);
        let resources: String = session.resources.iter().map(|name| format!("  - {name}\n")).collect();
        let (id, minutes) = (session.id, session.minutes_left);
        Mail {
            to: to.to_owned(),
            subject: format!("Portcullis: your access ends in {minutes} minutes"),
            body: format!(
                "Your Portcullis session {id} for {addresses} ends at {expiry}, in {minutes} minutes.\n\n\
                 It opens:\n{resources}\n\
                 To keep it, extend it before then:\n\n  pcl session extend {id} --minutes 60\n\n\
                 (or ExtendSession with the API). To stop these mails, set expiry_emails to false\n\
                 with UserService.UpdateCurrentUser.\n",
                addresses = session.addresses.join(" and "),
            ),
        }
    }
}

/// Why a mail could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("bad recipient: {0}")]
    Recipient(#[from] lettre::address::AddressError),
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
    #[error("the relay refused or could not be reached: {0}")]
    Relay(#[from] lettre::transport::smtp::Error),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends `mail`; the error says why it could not be sent.
    async fn send(&self, mail: Mail) -> std::result::Result<(), MailError>;
}

/// The mailer `config` asks for.
pub fn mailer(config: &MailConfig) -> Result<Arc<dyn Mailer>> {
    match config.transport {
        MailTransport::Log => Ok(Arc::new(LogMailer)),
        MailTransport::Smtp => Ok(Arc::new(SmtpMailer::new(config)?)),
    }
}

/// Prints codes to the server log: development only, never in production.
pub struct LogMailer;

#[async_trait]
impl Mailer for LogMailer {
    async fn send(&self, mail: Mail) -> std::result::Result<(), MailError> {
        tracing::warn!(email = %mail.to, subject = %mail.subject, body = %mail.body, "login mail (mail.transport = log: development only)");
        Ok(())
    }
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    pub fn new(config: &MailConfig) -> Result<SmtpMailer> {
        let from: Mailbox = config.from.parse().map_err(|_| Error::invalid("mail.from", "must be an email address"))?;
        let host = config.smtp_host.as_str();
        let builder = match config.smtp_security {
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)),
        }
        .map_err(|err| Error::internal(anyhow::anyhow!("smtp setup: {err}")))?;
        let mut builder = builder.port(config.smtp_port);
        if let (Some(username), Some(password)) = (&config.smtp_username, &config.smtp_password) {
            builder = builder.credentials(Credentials::new(username.clone(), password.expose().to_owned()));
        }
        Ok(SmtpMailer { transport: builder.build(), from })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: Mail) -> std::result::Result<(), MailError> {
        let to: Mailbox = mail.to.parse()?;
        let message = Message::builder().from(self.from.clone()).to(to).subject(mail.subject).body(mail.body)?;
        self.transport.send(message).await?;
        Ok(())
    }
}
