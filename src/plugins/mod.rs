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
pub mod health;
pub mod kms;
pub mod socket;

use tokio::task::JoinHandle;

/// A background task, aborted when this handle is dropped.
#[derive(Debug)]
pub struct TaskGuard(JoinHandle<()>);

impl TaskGuard {
    /// Guard `task`.
    pub fn new(task: JoinHandle<()>) -> Self {
        TaskGuard(task)
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
