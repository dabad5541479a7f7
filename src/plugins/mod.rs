//! Kubernetes plugin front ends: sockets whose callers are Kubernetes
//! components, served over the same service layer and front door as the
//! client API. Today: the KMS v2 wire contract ([`kms`]); the plugin that
//! serves it and the Secrets Store CSI provider come with their issues.

pub mod kms;
