//! kstash: a Raft-replicated secrets store for Kubernetes.
//!
//! Dependencies point one way (see ARCHITECTURE.md):
//! `api → service (guard) → {auth, acl} → barrier → raft → storage`.

pub mod acl;
pub mod api;
pub mod auth;
pub mod barrier;
pub mod bench;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod data_dir;
pub mod gatekeeper;
pub mod guard;
pub mod keys;
pub mod keyspace;
#[cfg(test)]
mod layers;
pub mod plugins;
pub mod raft;
pub mod secret;
pub mod server;
pub mod service;
pub mod state;
pub mod storage;
