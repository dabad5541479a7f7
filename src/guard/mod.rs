//! The guard: the one front door every operation passes (authenticate →
//! authorize → run → record). This part holds what the guard records as
//! metrics ([`metrics`]).

pub mod metrics;
