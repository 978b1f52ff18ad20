//! Warden guarding itself: TLS on both listeners with reloading certificates ([`tls`],
//! [`conn`]), filters authenticated and bound to their node ids ([`filter_auth`]), API callers
//! authenticated with roles ([`api_auth`], [`oidc`]) behind one gate that also limits failed
//! authentications, refuses cross-site requests and audits every call ([`guard`],
//! [`audit_log`]), outbound calls that cannot be turned against the network ([`outbound`]), the
//! credentials a first start makes for this machine ([`local`]) and `warden init` ([`init`]).

pub mod api_auth;
pub mod audit_log;
pub mod conn;
pub mod credentials;
pub mod filter_auth;
pub mod guard;
pub mod init;
pub mod local;
pub mod oidc;
pub mod outbound;
pub mod tls;
