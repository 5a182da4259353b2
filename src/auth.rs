//! Who a client is and what it may do: signed tokens (JWT) checked at the WebSocket upgrade,
//! on the REST API and on the admin API. A token names a subject, an expiry, the rooms or room
//! kinds it may enter and its permissions (`play`, `subscribe`, `chat`, `admin`). Keys: an
//! HS256 secret, or RS256/ES256 public keys from a PEM file or a JWKS file. With
//! `[auth] required = false` (the demo) a client without a token is anonymous and may do
//! everything but administer; a token given anyway must be valid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// `[auth]` of the config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Every WebSocket and REST session needs a valid token.
    pub required: bool,
    /// HS256 shared secret; the environment variable `TICKROOM_JWT_SECRET` overrides it.
    pub hs256_secret: String,
    /// A PEM file with an RSA (RS256) or EC P-256 (ES256) public key.
    pub public_key_file: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`); tokens pick their key by `kid`.
    pub jwks_file: Option<PathBuf>,
    /// If set, tokens must carry this `iss`.
    pub issuer: String,
    /// If set, tokens must carry this `aud`.
    pub audience: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "a token is required: send Authorization: Bearer <token>, ?token=, or the bearer.<token> subprotocol"
    )]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("auth setup: {0}")]
    Setup(String),
}

impl AuthError {
    /// A short stable name for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::Invalid(_) => "invalid",
            AuthError::Setup(_) => "setup",
        }
    }
}

/// What a session may do (a small fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    /// Send inputs in game rooms (and create game rooms).
    Play,
    /// Subscribe to symbols in ticker rooms (and prepare REST sessions).
    Subscribe,
    /// Send chat messages.
    Chat,
    /// Use the admin API.
    Admin,
}

impl Perm {
    fn parse(s: &str) -> Option<Perm> {
        Some(match s {
            "play" => Perm::Play,
            "subscribe" => Perm::Subscribe,
            "chat" => Perm::Chat,
            "admin" => Perm::Admin,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Play => "play",
            Perm::Subscribe => "subscribe",
            Perm::Chat => "chat",
            Perm::Admin => "admin",
        }
    }
}

/// The claims tickroom reads; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// Rooms it may enter by name (`"*"`: any); absent: any.
    rooms: Option<Vec<String>>,
    /// Room kinds it may enter (`game`, `ticker`, `chat`); absent: any.
    kinds: Option<Vec<String>>,
    /// Permissions; absent: `play`, `subscribe` and `chat`.
    perms: Option<Vec<String>>,
    /// The name shown in chat rooms; absent: `sub`.
    name: Option<String>,
}

/// Who a session is. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `None` for an anonymous client.
    pub subject: Option<Arc<str>>,
    /// The name shown in chat rooms (the token's `name`, else its subject).
    pub display_name: Option<Arc<str>>,
    perms: Vec<Perm>,
    rooms: Option<Arc<[String]>>,
    kinds: Option<Arc<[String]>>,
    /// When the token stops being valid.
    pub expires: Option<SystemTime>,
}

impl Identity {
    /// A client without a token where none is required: everything but administering.
    pub fn anonymous() -> Self {
        Self {
            subject: None,
            display_name: None,
            perms: vec![Perm::Play, Perm::Subscribe, Perm::Chat],
            rooms: None,
            kinds: None,
            expires: None,
        }
    }

    pub fn may(&self, perm: Perm) -> bool {
        self.perms.contains(&perm)
    }

    /// May it enter room `name` of kind `kind` (`game`, `ticker`, `chat`)?
    pub fn may_enter(&self, name: &str, kind: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| x == "*" || x == name))
            && self
                .kinds
                .as_ref()
                .is_none_or(|k| k.iter().any(|x| x == kind))
    }

    /// Time left before the token expires (`None`: never).
    pub fn time_left(&self, now: SystemTime) -> Option<Duration> {
        self.expires
            .map(|e| e.duration_since(now).unwrap_or(Duration::ZERO))
    }
}

/// Checks tokens. See the module docs.
pub struct Verifier {
    required: bool,
    /// (key id, key, algorithm); a key without an id serves every token.
    keys: Vec<(Option<String>, DecodingKey, Algorithm)>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("required", &self.required)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, AuthError> {
    std::fs::read(path).map_err(|e| AuthError::Setup(format!("{}: {e}", path.display())))
}

impl Verifier {
    /// Loads the keys of `config` (a bad key file stops the server at start).
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        let setup =
            |what: &str, e: jsonwebtoken::errors::Error| AuthError::Setup(format!("{what}: {e}"));
        let mut keys = Vec::new();
        let secret = std::env::var("TICKROOM_JWT_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| config.hs256_secret.clone());
        if !secret.is_empty() {
            let key = DecodingKey::from_secret(secret.as_bytes())
                .map_err(|e| setup("hs256_secret", e))?;
            keys.push((None, key, Algorithm::HS256));
        }
        if let Some(path) = &config.public_key_file {
            let pem = read(path)?;
            let (key, alg) = match DecodingKey::from_ec_pem(&pem) {
                Ok(k) => (k, Algorithm::ES256),
                Err(_) => (
                    DecodingKey::from_rsa_pem(&pem).map_err(|e| setup("public_key_file", e))?,
                    Algorithm::RS256,
                ),
            };
            keys.push((None, key, alg));
        }
        if let Some(path) = &config.jwks_file {
            let set: JwkSet = serde_json::from_slice(&read(path)?)
                .map_err(|e| AuthError::Setup(format!("{}: {e}", path.display())))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk).map_err(|e| setup("jwks_file", e))?;
                let alg = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    _ => return Err(AuthError::Setup("jwks_file: only RSA and EC keys".into())),
                };
                keys.push((jwk.common.key_id.clone(), key, alg));
            }
        }
        if config.required && keys.is_empty() {
            return Err(AuthError::Setup(
                "[auth] required = true needs hs256_secret (or TICKROOM_JWT_SECRET), public_key_file or jwks_file".into(),
            ));
        }
        Ok(Self {
            required: config.required,
            keys,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        })
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// True when tokens can be checked (some key is configured).
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Who presents `token` (`None`: no token given).
    pub fn identify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(token) = token else {
            return if self.required {
                Err(AuthError::Missing)
            } else {
                Ok(Identity::anonymous())
            };
        };
        if self.keys.is_empty() {
            return Err(AuthError::Invalid(
                "this server has no keys to check tokens".into(),
            ));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let (_, key, alg) = self
            .keys
            .iter()
            .find(|(kid, _, alg)| *alg == header.alg && (kid.is_none() || *kid == header.kid))
            .ok_or_else(|| AuthError::Invalid(format!("no key for {:?}", header.alg)))?;
        let mut v = Validation::new(*alg);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp", "sub"]);
        if !self.issuer.is_empty() {
            v.set_issuer(&[&self.issuer]);
        }
        if !self.audience.is_empty() {
            v.set_audience(&[&self.audience]);
        } else {
            v.validate_aud = false;
        }
        let claims = jsonwebtoken::decode::<Claims>(token, key, &v)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?
            .claims;
        let perms = match &claims.perms {
            None => vec![Perm::Play, Perm::Subscribe, Perm::Chat],
            Some(list) => list
                .iter()
                .map(|p| {
                    Perm::parse(p)
                        .ok_or_else(|| AuthError::Invalid(format!("unknown permission {p:?}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let subject: Arc<str> = claims.sub.into();
        Ok(Identity {
            display_name: Some(claims.name.map_or_else(|| subject.clone(), Into::into)),
            subject: Some(subject),
            perms,
            rooms: claims.rooms.map(Into::into),
            kinds: claims.kinds.map(Into::into),
            expires: Some(UNIX_EPOCH + Duration::from_secs(claims.exp)),
        })
    }
}

/// The token of a request: `Authorization: Bearer`, else the `token` query parameter, else a
/// `bearer.<token>` WebSocket subprotocol (browsers cannot set headers on a WebSocket).
pub fn token_of<'a>(headers: &'a http::HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    if let Some(t) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.trim());
    }
    if let Some(t) = query.and_then(|q| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v)
    }) {
        return Some(t);
    }
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("bearer."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(secret: &str, required: bool) -> Verifier {
        Verifier::new(&AuthConfig {
            required,
            hs256_secret: secret.into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn in_an_hour() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600
    }

    #[test]
    fn a_valid_token_names_who_and_what() {
        let v = hs("s3cret", true);
        let t = token(
            "s3cret",
            serde_json::json!({"sub": "alice", "exp": in_an_hour(), "rooms": ["arena"], "perms": ["play"], "name": "Al"}),
        );
        let id = v.identify(Some(&t)).unwrap();
        assert_eq!(id.subject.as_deref(), Some("alice"));
        assert_eq!(id.display_name.as_deref(), Some("Al"));
        assert!(id.may(Perm::Play) && !id.may(Perm::Chat) && !id.may(Perm::Admin));
        assert!(id.may_enter("arena", "game") && !id.may_enter("chat", "chat"));
    }

    #[test]
    fn missing_bad_and_expired_tokens_are_told_apart() {
        let v = hs("s3cret", true);
        assert!(matches!(v.identify(None), Err(AuthError::Missing)));
        let forged = token(
            "other",
            serde_json::json!({"sub": "a", "exp": in_an_hour()}),
        );
        assert!(matches!(
            v.identify(Some(&forged)),
            Err(AuthError::Invalid(_))
        ));
        let old = token(
            "s3cret",
            serde_json::json!({"sub": "a", "exp": 1_000_000_000u64}),
        );
        assert!(matches!(v.identify(Some(&old)), Err(AuthError::Expired)));
        let odd = token(
            "s3cret",
            serde_json::json!({"sub": "a", "exp": in_an_hour(), "perms": ["fly"]}),
        );
        assert!(matches!(v.identify(Some(&odd)), Err(AuthError::Invalid(_))));
        // Not required: no token is anonymous, a bad one is still refused.
        let open = hs("s3cret", false);
        assert_eq!(open.identify(None).unwrap(), Identity::anonymous());
        assert!(open.identify(Some(&forged)).is_err());
    }

    #[test]
    fn required_without_keys_is_a_setup_error() {
        let e = Verifier::new(&AuthConfig {
            required: true,
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, AuthError::Setup(_)));
    }

    #[test]
    fn the_token_comes_from_a_header_the_query_or_a_subprotocol() {
        let mut h = http::HeaderMap::new();
        assert_eq!(token_of(&h, Some("a=1&token=abc")), Some("abc"));
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "tickroom.v1, bearer.xyz".parse().unwrap(),
        );
        assert_eq!(token_of(&h, None), Some("xyz"));
        h.insert(http::header::AUTHORIZATION, "Bearer hdr".parse().unwrap());
        assert_eq!(token_of(&h, Some("token=abc")), Some("hdr"));
    }
}
