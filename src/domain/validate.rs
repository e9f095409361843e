/// One bad field of a request, reported to the caller as a `google.rpc.BadRequest` violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path, in the request's proto field names (for example `resource.name`).
    pub field: String,
    /// What is wrong with it, for people.
    pub description: String,
}

/// Why a value is not acceptable, said for people: it becomes a violation's description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<&str> for Invalid {
    fn from(description: &str) -> Invalid {
        Invalid(description.to_owned())
    }
}

impl From<String> for Invalid {
    fn from(description: String) -> Invalid {
        Invalid(description)
    }
}

/// Collects every violation of a request so the caller can fix them all at once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    /// Records that `field` is wrong.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation { field: field.into(), description: description.into() });
    }

    /// Records a violation when `result` is an error.
    pub fn check<T>(&mut self, field: &str, result: Result<T, Invalid>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(Invalid(description)) => {
                self.add(field, description);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const MAX_NAME_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 2000;
const MAX_EMAIL_CHARS: usize = 254;

/// Trims a display name and checks it is present and of reasonable length.
pub fn validate_name(value: &str) -> Result<String, Invalid> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".into());
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(format!("must be at most {MAX_NAME_CHARS} characters").into());
    }
    if trimmed.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(trimmed.to_owned())
}

/// Trims a free-text description (of a resource, a webhook) and checks its length.
pub fn validate_description(value: &str) -> Result<String, Invalid> {
    if value.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(format!("must be at most {MAX_DESCRIPTION_CHARS} characters").into());
    }
    Ok(value.trim().to_owned())
}

/// Lower-cases an email address and checks its shape: one `@`, a non-empty local part,
/// and a domain with a dot. Delivery is the only real test; this catches typos and junk.
/// A person's full name is optional: blank means none, anything else must be a valid name.
pub fn validate_full_name(value: &str) -> Result<String, Invalid> {
    if value.trim().is_empty() { Ok(String::new()) } else { validate_name(value) }
}

pub fn normalize_email(value: &str) -> Result<String, Invalid> {
    let email = value.trim().to_lowercase();
    if email.is_empty() {
        return Err("must not be empty".into());
    }
    if email.len() > MAX_EMAIL_CHARS {
        return Err(format!("must be at most {MAX_EMAIL_CHARS} characters").into());
    }
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if valid { Ok(email) } else { Err("must be an email address like name@example.com".into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(normalize_email(" Ada@Example.COM "), Ok("ada@example.com".into()));
        for bad in ["", "ada", "ada@", "@example.com", "ada@example", "a b@example.com", "a@b@c.com"] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(validate_name("  prod db "), Ok("prod db".into()));
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"x".repeat(201)).is_err());
        assert!(validate_name("a\u{0}b").is_err());
    }
}
