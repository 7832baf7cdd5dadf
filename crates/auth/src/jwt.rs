//! Access tokens: compact JWS (RFC 7515) signed with EdDSA over Ed25519 (RFC 8037).
//!
//! The header is `{"alg":"EdDSA","typ":"JWT","kid":…}`; claims are `iss`, `aud`,
//! `sub` (user or service-account UUID), `role`, `sid` (session UUID, absent on service
//! tokens), `jti` (token UUID), `iat`, `nbf`, `exp`. Verification pins the algorithm to
//! EdDSA before looking at anything else, so `alg: none` and HS256-with-the-public-key
//! confusion never reach a key; it requires a known `kid`, a strict Ed25519 signature,
//! the configured issuer and audience, and `nbf`/`exp` within a small leeway.
//!
//! Deliberately small: a general JWT library would bring algorithms we must then forbid.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::{PrivateKey, PublicKey};
use crate::{Principal, Role};

/// The only algorithm accepted.
pub const ALG: &str = "EdDSA";

/// Tokens longer than this are refused before any decoding (a cheap DoS guard).
const MAX_TOKEN_LEN: usize = 4096;

/// A token's header.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// Signature algorithm; must be "EdDSA".
    pub alg: String,
    /// "JWT".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Id of the signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// A token's claims.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: the user's (or service account's) UUID.
    pub sub: String,
    /// Role name (`customer`, `operator`, `admin`, `service`).
    pub role: String,
    /// Session id, for tokens that came from a login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Token id.
    pub jti: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Expires at (Unix seconds).
    pub exp: i64,
}

/// Why a token was refused. Goes to the log, never to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url JSON parts, or too long.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not EdDSA (`none`, HS256, RS256, …).
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// No `kid`, or one no key set knows.
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// Past `exp` (plus leeway).
    #[error("expired")]
    Expired,
    /// Before `nbf` or `iat` (minus leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` is not the configured audience.
    #[error("wrong audience")]
    Audience,
    /// `sub`, `role`, `sid` or `jti` is not what a Ferrobank token carries.
    #[error("bad claims: {0}")]
    Claims(&'static str),
}

/// Signs `claims` with `key` (its kid goes into the header).
pub fn sign(claims: &Claims, key: &PrivateKey) -> String {
    let header = Header {
        alg: ALG.to_owned(),
        typ: Some("JWT".to_owned()),
        kid: Some(key.kid().to_owned()),
    };
    let header = serde_json::to_vec(&header).expect("a header serializes");
    let claims = serde_json::to_vec(claims).expect("claims serialize");
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let signature = key.signing_key().sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    token
}

/// A token split and its header checked, before the key is looked up.
#[derive(Debug)]
pub struct Unverified<'a> {
    signed: &'a str,
    claims: &'a str,
    signature: Signature,
    /// The signing key's id.
    pub kid: String,
}

/// Splits `token` and pins the algorithm; the caller then finds the key for `kid`.
pub fn parse(token: &str) -> Result<Unverified<'_>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = decode_json(header)?;
    if header.alg != ALG {
        return Err(TokenError::Algorithm(header.alg));
    }
    if header.typ.as_deref().is_some_and(|t| t != "JWT") {
        return Err(TokenError::Malformed);
    }
    let kid = header
        .kid
        .ok_or_else(|| TokenError::UnknownKey(String::new()))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let signature =
        <[u8; 64]>::try_from(signature.as_slice()).map_err(|_| TokenError::Malformed)?;
    let signed_len = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
    Ok(Unverified {
        signed: &token[..signed_len],
        claims,
        signature: Signature::from_bytes(&signature),
        kid,
    })
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// What a token must satisfy besides its signature.
#[derive(Clone, Debug)]
pub struct Validation {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Clock skew tolerated, in seconds.
    pub leeway_secs: i64,
}

/// A verified token: who it is for, and what revocation needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The principal the token speaks for.
    pub principal: Principal,
    /// The token's id.
    pub jti: Uuid,
    /// When it expires (Unix seconds).
    pub exp: i64,
    /// The signing key's id.
    pub kid: String,
}

impl Unverified<'_> {
    /// Checks the signature with `key` (whose kid must match) and the claims against
    /// `validation` at Unix time `now`.
    pub fn verify(
        &self,
        key: &PublicKey,
        validation: &Validation,
        now: i64,
    ) -> Result<Verified, TokenError> {
        if key.kid() != self.kid {
            return Err(TokenError::UnknownKey(self.kid.clone()));
        }
        key.verifying_key()
            .verify_strict(self.signed.as_bytes(), &self.signature)
            .map_err(|_| TokenError::Signature)?;
        let claims: Claims = decode_json(self.claims)?;
        if claims.iss != validation.issuer {
            return Err(TokenError::Issuer);
        }
        if claims.aud != validation.audience {
            return Err(TokenError::Audience);
        }
        let leeway = validation.leeway_secs;
        if now > claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        let not_before = claims.nbf.unwrap_or(claims.iat);
        if now < not_before.saturating_sub(leeway) || now < claims.iat.saturating_sub(leeway) {
            return Err(TokenError::NotYetValid);
        }
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| TokenError::Claims("sub"))?;
        let role = claims
            .role
            .parse::<Role>()
            .map_err(|()| TokenError::Claims("role"))?;
        let session_id = claims
            .sid
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|_| TokenError::Claims("sid"))?;
        if session_id.is_none() && role != Role::Service {
            return Err(TokenError::Claims("sid"));
        }
        let jti = Uuid::parse_str(&claims.jti).map_err(|_| TokenError::Claims("jti"))?;
        Ok(Verified {
            principal: Principal {
                user_id,
                role,
                session_id,
            },
            jti,
            exp: claims.exp,
            kid: self.kid.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> Claims {
        Claims {
            iss: "iss".into(),
            aud: "aud".into(),
            sub: Uuid::now_v7().to_string(),
            role: "customer".into(),
            sid: Some(Uuid::now_v7().to_string()),
            jti: Uuid::new_v4().to_string(),
            iat: now,
            nbf: Some(now),
            exp: now + 60,
        }
    }

    fn validation() -> Validation {
        Validation {
            issuer: "iss".into(),
            audience: "aud".into(),
            leeway_secs: 5,
        }
    }

    /// A signed token round-trips; a flipped payload byte or another key fails.
    #[test]
    fn sign_then_verify_and_tamper() {
        let key = PrivateKey::generate();
        let c = claims(1_000);
        let token = sign(&c, &key);
        let v = parse(&token)
            .unwrap()
            .verify(&key.public(), &validation(), 1_010)
            .unwrap();
        assert_eq!(v.principal.role, Role::Customer);
        assert_eq!(v.kid, key.kid());

        let mut c2 = c.clone();
        c2.role = "admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c2).unwrap());
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        let err = parse(&tampered)
            .unwrap()
            .verify(&key.public(), &validation(), 1_010)
            .unwrap_err();
        assert_eq!(err, TokenError::Signature);

        let err = parse(&token)
            .unwrap()
            .verify(&PrivateKey::generate().public(), &validation(), 1_010)
            .unwrap_err();
        assert!(matches!(err, TokenError::UnknownKey(_)));
    }

    /// Expiry and not-before honour the leeway exactly.
    #[test]
    fn time_claims_use_leeway() {
        let key = PrivateKey::generate();
        let token = sign(&claims(1_000), &key);
        let p = parse(&token).unwrap();
        assert!(p.verify(&key.public(), &validation(), 1_065).is_ok());
        assert_eq!(
            p.verify(&key.public(), &validation(), 1_066).unwrap_err(),
            TokenError::Expired
        );
        assert!(p.verify(&key.public(), &validation(), 995).is_ok());
        assert_eq!(
            p.verify(&key.public(), &validation(), 994).unwrap_err(),
            TokenError::NotYetValid
        );
    }

    /// `alg: none` and HS256 are refused before any key is consulted.
    #[test]
    fn algorithm_is_pinned() {
        for alg in ["none", "HS256", "RS256", "eddsa"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"k"}}"#));
            let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(0)).unwrap());
            let token = format!("{header}.{body}.");
            assert_eq!(
                parse(&token).unwrap_err(),
                TokenError::Algorithm(alg.to_owned())
            );
        }
        assert_eq!(parse("a.b").unwrap_err(), TokenError::Malformed);
        assert_eq!(parse("").unwrap_err(), TokenError::Malformed);
    }
}
