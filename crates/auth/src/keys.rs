//! Ed25519 signing keys and their public halves: loading PKCS#8 PEM (what `openssl
//! genpkey -algorithm ed25519` writes), key ids (RFC 7638 thumbprints) and JSON Web Keys
//! (RFC 8037). A private key never reaches `Debug` or a log.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The DER prefix of an RFC 8410 Ed25519 private key in PKCS#8 v1 (48 bytes in all):
/// SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } }.
/// The format is fixed for Ed25519, so comparing the prefix is a complete parser.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text holds no `-----BEGIN PRIVATE KEY-----` block.
    #[error("no PEM private key block found")]
    NoPem,
    /// The PEM body is not base64.
    #[error("PEM body is not base64")]
    Base64,
    /// The DER is not an Ed25519 PKCS#8 v1 private key.
    #[error("not an Ed25519 PKCS#8 private key (expected `openssl genpkey -algorithm ed25519`)")]
    NotEd25519,
    /// A JWK is not an Ed25519 public key.
    #[error("not an Ed25519 JWK: {0}")]
    BadJwk(&'static str),
}

/// A private signing key and its id.
#[derive(Clone)]
pub struct PrivateKey {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// A key from its 32 secret bytes.
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(secret);
        Self {
            kid: thumbprint(&key.verifying_key()),
            key,
        }
    }

    /// A fresh random key (tests and ephemeral development setups).
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random number generator failed");
        Self::from_bytes(&secret)
    }

    /// Every private key in `pem` (one or more PKCS#8 blocks), in order.
    pub fn from_pem_all(pem: &str) -> Result<Vec<Self>, KeyError> {
        const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
        const END: &str = "-----END PRIVATE KEY-----";
        let mut keys = Vec::new();
        let mut rest = pem;
        while let Some(start) = rest.find(BEGIN) {
            let after = &rest[start + BEGIN.len()..];
            let end = after.find(END).ok_or(KeyError::NoPem)?;
            let body: String = after[..end].split_whitespace().collect();
            let der = STANDARD.decode(body).map_err(|_| KeyError::Base64)?;
            keys.push(Self::from_pkcs8_der(&der)?);
            rest = &after[end + END.len()..];
        }
        if keys.is_empty() {
            return Err(KeyError::NoPem);
        }
        Ok(keys)
    }

    /// A key from PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let secret = der
            .strip_prefix(&PKCS8_ED25519_PREFIX[..])
            .and_then(|s| <&[u8; 32]>::try_from(s).ok())
            .ok_or(KeyError::NotEd25519)?;
        Ok(Self::from_bytes(secret))
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            key: self.key.verifying_key(),
        }
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

/// A public verification key and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    key: VerifyingKey,
}

/// One public key as a JSON Web Key (the fields of `ferrobank.identity.v1.Jwk`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    /// "OKP".
    pub kty: String,
    /// "Ed25519".
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    /// The key id.
    pub kid: String,
    /// "EdDSA".
    pub alg: String,
    /// "sig".
    pub use_: String,
}

impl PublicKey {
    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// As a JSON Web Key.
    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: URL_SAFE_NO_PAD.encode(self.key.as_bytes()),
            kid: self.kid.clone(),
            alg: "EdDSA".to_owned(),
            use_: "sig".to_owned(),
        }
    }

    /// From a JSON Web Key; anything but an Ed25519 signing key is refused.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
            return Err(KeyError::BadJwk("kty/crv is not OKP/Ed25519"));
        }
        if !jwk.alg.is_empty() && jwk.alg != "EdDSA" {
            return Err(KeyError::BadJwk("alg is not EdDSA"));
        }
        if !jwk.use_.is_empty() && jwk.use_ != "sig" {
            return Err(KeyError::BadJwk("use is not sig"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(&jwk.x)
            .map_err(|_| KeyError::BadJwk("x is not base64url"))?;
        let bytes = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| KeyError::BadJwk("x is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadJwk("bad point"))?;
        if key.is_weak() {
            return Err(KeyError::BadJwk("weak key"));
        }
        Ok(Self {
            kid: if jwk.kid.is_empty() {
                thumbprint(&key)
            } else {
                jwk.kid.clone()
            },
            key,
        })
    }
}

/// RFC 7638 JWK thumbprint of an Ed25519 key: SHA-256 over the canonical JSON of its
/// required members, base64url. Deterministic, so no kid needs configuring.
fn thumbprint(key: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The keys an issuer holds: the first signs, all are published.
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Vec<PrivateKey>,
}

impl KeyRing {
    /// A ring whose first key signs; `None` when `keys` is empty.
    pub fn new(keys: Vec<PrivateKey>) -> Option<Self> {
        if keys.is_empty() {
            None
        } else {
            Some(Self { keys })
        }
    }

    /// The key new tokens are signed with.
    pub fn signing(&self) -> &PrivateKey {
        &self.keys[0]
    }

    /// Every public key, the signing key's first.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.iter().map(PrivateKey::public).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PEM written by `openssl genpkey -algorithm ed25519` loads, with a stable kid;
    /// garbage and other key types are refused.
    #[test]
    fn pem_loads_and_other_keys_are_refused() {
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n\
                   -----END PRIVATE KEY-----\n";
        let keys = PrivateKey::from_pem_all(pem).unwrap();
        assert_eq!(keys.len(), 1);
        let again = PrivateKey::from_pem_all(pem).unwrap();
        assert_eq!(keys[0].kid(), again[0].kid());
        let jwk = keys[0].public().to_jwk();
        assert_eq!(PublicKey::from_jwk(&jwk).unwrap(), keys[0].public());
        assert!(matches!(
            PrivateKey::from_pem_all("nope"),
            Err(KeyError::NoPem)
        ));
        let rsa_like = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8=\n-----END PRIVATE KEY-----";
        assert!(matches!(
            PrivateKey::from_pem_all(rsa_like),
            Err(KeyError::NotEd25519)
        ));
    }
}
