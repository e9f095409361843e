//! Secrets at rest: what the server must read back (webhook signing secrets, token signing
//! keys) is kept sealed with AES-256-GCM under the operator's `sealing_key`, so a copy of the
//! database alone reveals none of them. Each secret is sealed for a context (the row it belongs
//! to), authenticated with it, so a sealed value copied to another row does not open.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Why a key or a secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealingError {
    #[error("{setting} is not base64 (make one with `openssl rand -base64 32`)")]
    NotBase64 { setting: String },
    #[error("{setting} must be 32 bytes, not {len}")]
    WrongLength { setting: String, len: usize },
    #[error("sealing a secret failed")]
    Seal,
    #[error("a secret of {context} does not open with sealing_key (was the key changed?)")]
    Unreadable { context: String },
    #[error("a secret of {context} is not text")]
    NotText { context: String },
}

/// The server's key for secrets at rest (`sealing_key`: base64 of 32 bytes).
pub struct SealingKey(LessSafeKey);

impl SealingKey {
    /// The key from its configured form, base64 of 32 bytes; `setting` names it in errors.
    pub fn from_base64(setting: &str, text: &str) -> Result<SealingKey, SealingError> {
        let bytes =
            STANDARD.decode(text.trim()).map_err(|_| SealingError::NotBase64 { setting: setting.to_owned() })?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| SealingError::WrongLength { setting: setting.to_owned(), len: bytes.len() })?;
        Ok(SealingKey(LessSafeKey::new(key)))
    }

    /// Seals `secret` for `context`: base64 of nonce, ciphertext and tag.
    pub fn seal(&self, context: &str, secret: &[u8]) -> Result<String, SealingError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = secret.to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut sealed)
            .map_err(|_| SealingError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(STANDARD.encode(out))
    }

    /// Opens a text secret sealed for `context`.
    pub fn open_text(&self, context: &str, sealed: &str) -> Result<String, SealingError> {
        String::from_utf8(self.open(context, sealed)?)
            .map_err(|_| SealingError::NotText { context: context.to_owned() })
    }

    /// Opens what [`SealingKey::seal`] sealed for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, SealingError> {
        let unreadable = || SealingError::Unreadable { context: context.to_owned() };
        let bytes = STANDARD.decode(sealed).map_err(|_| unreadable())?;
        if bytes.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut ciphertext = ciphertext.to_vec();
        let plain =
            self.0.open_in_place(nonce, Aad::from(context.as_bytes()), &mut ciphertext).map_err(|_| unreadable())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_context() {
        let key = SealingKey::from_base64("sealing_key", &STANDARD.encode([7u8; 32])).unwrap();
        let sealed = key.seal("webhook-1", b"whsec_abc").unwrap();
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(key.open("webhook-1", &sealed).unwrap(), b"whsec_abc");
        assert!(key.open("webhook-2", &sealed).is_err(), "copied to another row");
        let other = SealingKey::from_base64("sealing_key", &STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open("webhook-1", &sealed).is_err());
        let short =
            SealingKey::from_base64("sealing_key", "c2hvcnQ=").err().map(|err| err.to_string()).unwrap_or_default();
        assert!(short.contains("32 bytes"), "{short}");
    }
}
