//! API key secrets and access tokens: minting and checking, no storage.

pub use crate::config::TokenAlgorithm;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// What an API key belongs to, told by how it starts, so a leaked key is easy to spot (and to
/// scan for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A member of an organization: `pcl_…`.
    Member,
    /// The platform operator: `pco_…`.
    Operator,
    /// A host agent: `pca_…`.
    Agent,
}

impl KeyKind {
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Member => "pcl_",
            KeyKind::Operator => "pco_",
            KeyKind::Agent => "pca_",
        }
    }
}

const PREFIX_LEN: usize = 4;
const BODY_LEN: usize = 40;
const LOOKUP_LEN: usize = 12;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly generated API key: the secret to show once, and what is stored.
pub struct GeneratedApiKey {
    pub secret: String,
    pub lookup: String,
    pub secret_hash: String,
}

/// Generates an API key: the kind's prefix + 40 random base62 characters + a 6-character CRC32
/// checksum.
pub fn generate_api_key(kind: KeyKind) -> GeneratedApiKey {
    let mut rng = rand::rng();
    let body: String = (0..BODY_LEN).map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())])).collect();
    let secret = format!("{}{body}{}", kind.prefix(), checksum(&body));
    GeneratedApiKey { lookup: lookup_of(&secret).to_owned(), secret_hash: hash_secret(&secret), secret }
}

/// The kind and public part (to find its row) of a well-formed key, or `None` when the key is
/// malformed or its checksum is wrong (a typo or a forgery: no database lookup needed).
pub fn parse_api_key(secret: &str) -> Option<(KeyKind, &str)> {
    let kind = [KeyKind::Member, KeyKind::Operator, KeyKind::Agent]
        .into_iter()
        .find(|kind| secret.starts_with(kind.prefix()))?;
    let body = &secret[PREFIX_LEN..];
    if body.len() != BODY_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (random, sum) = body.split_at(BODY_LEN);
    (checksum(random) == sum).then(|| (kind, lookup_of(secret)))
}

fn lookup_of(secret: &str) -> &str {
    &secret[..PREFIX_LEN + LOOKUP_LEN]
}

fn checksum(body: &str) -> String {
    let mut value = u64::from(crc32fast::hash(body.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// SHA-256 of a high-entropy secret (API keys): a slow hash adds nothing when the input is random.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares a presented secret with a stored hash in constant time.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    hash_secret(secret).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Shortest password accepted: long passphrases beat complexity rules.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// An argon2id hash (PHC string, with its own salt) of a user's password.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    use argon2::PasswordHasher;
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    let salt = argon2::password_hash::SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

/// Why a password cannot be set.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("must be at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("hashing the password failed: {0}")]
    Hash(argon2::password_hash::Error),
}

/// Checks a password against its stored argon2id hash (the comparison is constant-time).
pub fn password_matches(password: &str, stored: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::password_hash::PasswordHash::new(stored)
        .is_ok_and(|hash| argon2::Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The user's organization.
    pub org: String,
    /// The login session the token belongs to; closing it revokes the token.
    pub sid: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

const LEEWAY_SECS: u64 = 30;

/// The jsonwebtoken algorithm of a configured token algorithm.
fn jwt_algorithm(algorithm: TokenAlgorithm) -> Algorithm {
    match algorithm {
        TokenAlgorithm::HS256 => Algorithm::HS256,
        TokenAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// One token key with its id: an HMAC secret, or an Ed25519 seed.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: TokenAlgorithm,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl SigningKey {
    /// A new random 256-bit key (HMAC secret or Ed25519 seed).
    pub fn generate(algorithm: TokenAlgorithm) -> SigningKey {
        let mut secret = vec![0u8; 32];
        rand::rng().fill(secret.as_mut_slice());
        SigningKey { kid: crate::domain::new_id(), algorithm, secret }
    }

    /// The stored form of the secret.
    pub fn encoded_secret(&self) -> String {
        STANDARD.encode(&self.secret)
    }

    pub fn from_encoded(kid: String, algorithm: TokenAlgorithm, encoded: &str) -> Option<SigningKey> {
        STANDARD.decode(encoded).ok().map(|secret| SigningKey { kid, algorithm, secret })
    }

    fn encoding_key(&self) -> Result<EncodingKey, jsonwebtoken::errors::Error> {
        match self.algorithm {
            TokenAlgorithm::HS256 => Ok(EncodingKey::from_secret(&self.secret)),
            TokenAlgorithm::EdDSA => {
                use ed25519_dalek::pkcs8::EncodePrivateKey;
                let der =
                    self.ed25519()?.to_pkcs8_der().map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidEddsaKey)?;
                Ok(EncodingKey::from_ed_der(der.as_bytes()))
            }
        }
    }

    fn decoding_key(&self) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
        match self.algorithm {
            TokenAlgorithm::HS256 => Ok(DecodingKey::from_secret(&self.secret)),
            TokenAlgorithm::EdDSA => Ok(DecodingKey::from_ed_der(self.ed25519()?.verifying_key().as_bytes())),
        }
    }

    fn ed25519(&self) -> Result<ed25519_dalek::SigningKey, jsonwebtoken::errors::Error> {
        let seed: [u8; 32] =
            self.secret.as_slice().try_into().map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidEddsaKey)?;
        Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
    }
}

/// Why a token was refused; only logged, the caller just learns it is invalid.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token header unreadable or without kid")]
    Header,
    #[error("unknown signing key {0}")]
    UnknownKey(String),
    #[error("token rejected: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Signs with the newest key and verifies with any key that is not retired. Clones share their
/// keys, so a reload (after a rotation or retirement) reaches every user of them.
#[derive(Clone, Debug)]
pub struct TokenKeys {
    keys: std::sync::Arc<std::sync::RwLock<KeySet>>,
    issuer: String,
    audience: String,
}

#[derive(Debug)]
struct KeySet {
    signing: SigningKey,
    verifying: HashMap<String, SigningKey>,
}

impl KeySet {
    /// `keys` newest first; the first one signs.
    fn new(keys: Vec<SigningKey>) -> Option<KeySet> {
        let signing = keys.first()?.clone();
        let verifying = keys.into_iter().map(|key| (key.kid.clone(), key)).collect();
        Some(KeySet { signing, verifying })
    }
}

impl TokenKeys {
    /// `keys` newest first; the first one signs.
    pub fn new(keys: Vec<SigningKey>, issuer: String, audience: String) -> Option<TokenKeys> {
        let keys = std::sync::Arc::new(std::sync::RwLock::new(KeySet::new(keys)?));
        Some(TokenKeys { keys, issuer, audience })
    }

    /// Replaces the keys (newest first); an empty list changes nothing.
    pub fn replace(&self, keys: Vec<SigningKey>) {
        if let Some(set) = KeySet::new(keys) {
            *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = set;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Issues a token for `claims` (issuer and audience are filled in).
    pub fn sign(&self, mut claims: Claims) -> Result<String, jsonwebtoken::errors::Error> {
        claims.iss = self.issuer.clone();
        claims.aud = self.audience.clone();
        let signing = self.read().signing.clone();
        let mut header = Header::new(jwt_algorithm(signing.algorithm));
        header.kid = Some(signing.kid.clone());
        jsonwebtoken::encode(&header, &claims, &signing.encoding_key()?)
    }

    /// Checks signature, algorithm, issuer, audience, expiry and not-before.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Header)?;
        let kid = header.kid.ok_or(TokenError::Header)?;
        let key = self.read().verifying.get(&kid).cloned().ok_or_else(|| TokenError::UnknownKey(kid.clone()))?;
        // The key decides the algorithm: a token claiming another one fails.
        let mut validation = Validation::new(jwt_algorithm(key.algorithm));
        validation.algorithms = vec![jwt_algorithm(key.algorithm)];
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Ok(jsonwebtoken::decode::<Claims>(token, &key.decoding_key()?, &validation)?.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_parse_and_verify() {
        let key = generate_api_key(KeyKind::Member);
        assert!(key.secret.starts_with("pcl_"));
        assert_eq!(key.secret.len(), 50);
        assert_eq!(parse_api_key(&key.secret), Some((KeyKind::Member, key.lookup.as_str())));
        let operator = generate_api_key(KeyKind::Operator);
        assert!(operator.secret.starts_with("pco_"));
        assert_eq!(parse_api_key(&operator.secret), Some((KeyKind::Operator, operator.lookup.as_str())));
        let relabelled = operator.secret.replacen("pco_", "pcl_", 1);
        assert_eq!(parse_api_key(&relabelled).map(|(kind, _)| kind), Some(KeyKind::Member), "the prefix decides");
        assert!(secret_matches(&key.secret, &key.secret_hash));
        assert!(!key.secret_hash.contains(&key.secret[4..]));
        // One changed character breaks the checksum.
        let mut typo = key.secret.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert_eq!(parse_api_key(&String::from_utf8(typo).unwrap()), None);
        assert_eq!(parse_api_key("pcl_short"), None);
        assert_eq!(parse_api_key(""), None);
    }

    fn claims(exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "u".into(),
            org: "o".into(),
            sid: "s".into(),
            iss: String::new(),
            aud: String::new(),
            iat: now,
            nbf: now,
            exp: now + exp_offset,
        }
    }

    #[test]
    fn tokens_verify_only_with_matching_keys_and_claims() {
        for algorithm in [TokenAlgorithm::HS256, TokenAlgorithm::EdDSA] {
            let keys = TokenKeys::new(vec![SigningKey::generate(algorithm)], "iss".into(), "aud".into()).unwrap();
            let token = keys.sign(claims(60)).unwrap();
            assert_eq!(keys.verify(&token).unwrap().sub, "u", "{algorithm:?}");
            assert!(keys.verify(&keys.sign(claims(-120)).unwrap()).is_err(), "expired");
            let other_aud = TokenKeys::new(vec![keys.read().signing.clone()], "iss".into(), "other".into()).unwrap();
            assert!(other_aud.verify(&token).is_err(), "audience");
            let other_key = TokenKeys::new(vec![SigningKey::generate(algorithm)], "iss".into(), "aud".into()).unwrap();
            assert!(matches!(other_key.verify(&token), Err(TokenError::UnknownKey(_))));
        }
    }

    /// A token whose header claims another algorithm than its key's is refused, both ways.
    #[test]
    fn a_key_accepts_only_its_own_algorithm() {
        let ed = SigningKey::generate(TokenAlgorithm::EdDSA);
        // The same kid, but an HMAC key: the HS256 token must not pass as the EdDSA key's.
        let hs = SigningKey { algorithm: TokenAlgorithm::HS256, ..ed.clone() };
        let forged = TokenKeys::new(vec![hs], "iss".into(), "aud".into()).unwrap().sign(claims(60)).unwrap();
        let keys = TokenKeys::new(vec![ed], "iss".into(), "aud".into()).unwrap();
        assert!(keys.verify(&forged).is_err());
    }
}
