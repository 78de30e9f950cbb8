//! Optional bearer-token authentication with scopes (read < submit < admin).
//!
//! A synchronous interceptor checks `authorization: Bearer <token>` in constant time and puts
//! the caller (name + scope) into the request's extensions; each RPC then requires its scope.
//! With no tokens configured every caller is an anonymous admin. Tokens are never logged.
use std::sync::Arc;

use tonic::{Request, Status};

use super::status::ApiError;
use crate::config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Submit,
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "submit" => Some(Scope::Submit),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Who is calling, as established by the interceptor.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
    /// What this caller may use (its token's `quota`; `auth.anonymous_quota` without tokens).
    pub quota: config::Quota,
}

#[derive(Clone)]
pub struct Auth {
    tokens: Arc<Vec<(Vec<u8>, Caller)>>,
    anonymous_quota: config::Quota,
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(cfg: &config::Auth) -> Auth {
        let tokens = cfg
            .tokens
            .iter()
            .map(|t| {
                let scope = t
                    .scopes
                    .iter()
                    .filter_map(|s| Scope::parse(s))
                    .max()
                    .unwrap_or(Scope::Read);
                (
                    t.token.as_bytes().to_vec(),
                    Caller {
                        name: t.name.clone(),
                        scope,
                        quota: t.quota.clone(),
                    },
                )
            })
            .collect();
        Auth {
            tokens: Arc::new(tokens),
            anonymous_quota: cfg.anonymous_quota.clone(),
        }
    }

    /// True when no tokens are configured: every caller is an anonymous admin.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller presenting `token` (`None`: no credentials). Used by the gRPC interceptor
    /// and the dashboard alike.
    pub fn caller(&self, token: Option<&str>) -> Result<Caller, Status> {
        if self.tokens.is_empty() {
            return Ok(Caller {
                name: crate::quota::ANONYMOUS.into(),
                scope: Scope::Admin,
                quota: self.anonymous_quota.clone(),
            });
        }
        let Some(token) = token else {
            return Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>` metadata",
            ));
        };
        let mut found = None;
        for (t, caller) in self.tokens.iter() {
            if ct_eq(t, token.as_bytes()) {
                found = Some(caller.clone());
            }
        }
        found.ok_or_else(|| Status::unauthenticated("unknown bearer token"))
    }

    /// The tonic interceptor.
    pub fn intercept(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        let caller = self.caller(token)?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

/// The caller of `req` if it holds at least `scope`.
pub fn require<T>(req: &Request<T>, scope: Scope) -> Result<Caller, ApiError> {
    let caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthenticated("no credentials".into()))?;
    if caller.scope < scope {
        return Err(ApiError::PermissionDenied(
            format!(
                "this call needs the {scope:?} scope; token {:?} has {:?}",
                caller.name, caller.scope
            )
            .to_lowercase(),
        ));
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(&config::Auth {
            tokens: vec![
                config::Token {
                    name: "viewer".into(),
                    token: "r".repeat(20),
                    scopes: vec!["read".into()],
                    quota: Default::default(),
                },
                config::Token {
                    name: "ops".into(),
                    token: "a".repeat(20),
                    scopes: vec!["read".into(), "admin".into()],
                    quota: Default::default(),
                },
            ],
            anonymous_quota: Default::default(),
        })
    }

    fn with_token(t: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
        r
    }

    #[test]
    fn scopes_are_enforced() {
        let a = auth();
        let r = a.intercept(with_token(&"r".repeat(20))).unwrap();
        assert!(require(&r, Scope::Read).is_ok());
        assert!(matches!(
            require(&r, Scope::Admin),
            Err(ApiError::PermissionDenied(_))
        ));
        let r = a.intercept(with_token(&"a".repeat(20))).unwrap();
        assert_eq!(require(&r, Scope::Admin).unwrap().name, "ops");
        assert_eq!(
            a.intercept(with_token("nope")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            a.intercept(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn no_tokens_means_open() {
        let a = Auth::new(&config::Auth::default());
        let r = a.intercept(Request::new(())).unwrap();
        assert_eq!(require(&r, Scope::Admin).unwrap().name, "anonymous");
    }
}
