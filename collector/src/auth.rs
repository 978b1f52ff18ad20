//! The optional shared bearer token filters present on every gRPC call
//! (`authorization: Bearer <token>`, configured as `grpc.token`).

use crate::error::Error;
use tonic::metadata::MetadataMap;

/// Checks the `authorization` metadata of incoming calls.
#[derive(Debug, Clone, Default)]
pub struct BearerAuth {
    token: Option<String>,
}

impl BearerAuth {
    /// `None` accepts every call.
    pub fn new(token: Option<String>) -> Self {
        BearerAuth { token }
    }

    /// Accepts the call, or says what is missing. The message never echoes the presented token.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Error> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        match presented {
            None => Err(Error::Unauthenticated(
                "missing `authorization: Bearer <token>` metadata".into(),
            )),
            Some(t) if constant_time_eq(t.trim().as_bytes(), expected.as_bytes()) => Ok(()),
            Some(_) => Err(Error::Unauthenticated("invalid bearer token".into())),
        }
    }
}

/// Compares without an early exit so response timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn no_token_configured_accepts_everything() {
        assert!(BearerAuth::new(None).check(&md(None)).is_ok());
    }

    #[test]
    fn the_right_token_is_accepted_and_others_refused() {
        let auth = BearerAuth::new(Some("s3cret".into()));
        assert!(auth.check(&md(Some("Bearer s3cret"))).is_ok());
        assert_eq!(
            auth.check(&md(Some("Bearer nope")))
                .unwrap_err()
                .grpc_code(),
            tonic::Code::Unauthenticated
        );
        assert!(
            auth.check(&md(None))
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }
}
