//! Ways to prove who you are besides an access token: today a Kubernetes
//! ServiceAccount's projected token ([`kubernetes`]). (The access-key login
//! lives in the service layer, beside the access tokens it mints.)
//!
//! Invariant: this module proves identities and never grants anything by
//! itself. What an identity may do is decided by the role it logs in with,
//! through the service layer and the replicated state.

pub mod kubernetes;
