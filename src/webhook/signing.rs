//! Webhook secrets and signatures, as the Standard Webhooks spec has them: a secret is
//! `whsec_` and the base64 of its key; a signature is `v1,` and the base64 of
//! HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"). The server must sign, so it
//! keeps each secret, sealed with AES-256-GCM under the operator's `webhooks.secret_key`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;

const PREFIX: &str = "whsec_";

/// The server's key for sealing webhook secrets.
pub struct SealingKey(LessSafeKey);

impl SealingKey {
    /// The key from its configured form, base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<SealingKey, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "webhooks.secret_key is not base64 (make one with `openssl rand -base64 32`)".to_owned())?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| format!("webhooks.secret_key must be 32 bytes, not {}", bytes.len()))?;
        Ok(SealingKey(LessSafeKey::new(key)))
    }

    /// Seals `secret` for the webhook `webhook_id`: base64 of nonce, ciphertext and tag. The
    /// webhook id is authenticated too, so a sealed secret copied to another row does not open.
    pub fn seal(&self, webhook_id: &str, secret: &str) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = secret.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(webhook_id.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| "sealing the webhook secret failed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(STANDARD.encode(out))
    }

    /// Opens what [`SealingKey::seal`] sealed for `webhook_id`.
    pub fn open(&self, webhook_id: &str, sealed: &str) -> Result<String, String> {
        let unreadable = || "a webhook secret does not open with webhooks.secret_key (was the key changed?)".to_owned();
        let bytes = STANDARD.decode(sealed).map_err(|_| unreadable())?;
        if bytes.len() < NONCE_LEN {
            return Err(unreadable());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut ciphertext = ciphertext.to_vec();
        let plain =
            self.0.open_in_place(nonce, Aad::from(webhook_id.as_bytes()), &mut ciphertext).map_err(|_| unreadable())?;
        String::from_utf8(plain.to_vec()).map_err(|_| unreadable())
    }
}

/// A new random secret, `whsec_` and 32 bytes in base64.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The `v1,…` signature of one message under `secret`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = STANDARD
        .decode(secret.strip_prefix(PREFIX).unwrap_or(secret))
        .map_err(|_| "a webhook secret is not base64".to_owned())?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut context = hmac::Context::with_key(&key);
    context.update(format!("{id}.{timestamp}.").as_bytes());
    context.update(body);
    Ok(format!("v1,{}", STANDARD.encode(context.sign().as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_webhook_and_key() {
        let key = SealingKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let secret = new_secret();
        let sealed = key.seal("wh_1", &secret).unwrap();
        assert!(!sealed.contains(&secret[PREFIX.len()..]));
        assert_eq!(key.open("wh_1", &sealed).unwrap(), secret);
        assert!(key.open("wh_2", &sealed).is_err());
        let other = SealingKey::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open("wh_1", &sealed).is_err());
        assert!(SealingKey::from_base64("c2hvcnQ=").is_err());
    }
}
