//! Kubernetes plugin front ends: sockets whose callers are Kubernetes
//! components, served over the same service layer and front door as the
//! client API (or, as a separate process, over the client library). Today:
//! the KMS v2 plugin of kube-apiserver ([`kms`]), and the wire contract of
//! the Secrets Store CSI provider ([`csi`]), whose provider comes with its
//! issue.
//!
//! Invariant: a plugin socket's caller is a [`crate::guard::Principal`] of
//! its own and passes the front door like any other; a plugin process holds
//! only an access token, used through the client library.

pub mod csi;
pub mod kms;
