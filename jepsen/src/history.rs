//! Operation histories: what each client asked, what it heard back, and when.
//!
//! Invariant: an [`Op`] records exactly what the client observed, nothing
//! inferred. Timestamps are monotonic nanoseconds from one clock shared by all
//! clients of a run. An op whose outcome is [`Outcome::Info`] is indeterminate:
//! it may or may not have taken effect, and the checker treats its completion
//! as +infinity whatever `complete_ns` says (that field is kept for latency
//! plots only).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An op's index in [`History::ops`].
pub type OpId = usize;

/// How an operation ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The server acknowledged it; `output` holds what it answered.
    Ok,
    /// Definitely had no effect and observed nothing (refused before being
    /// applied: not leader, sealed, bad request). The checker drops it.
    Fail,
    /// Indeterminate: timed out or the connection was lost after sending.
    /// It may take effect at any time after its invoke, or never.
    Info,
}

/// What the client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Input {
    /// Register: read the key's current version and value.
    Read,
    /// Register: unconditional write.
    Write {
        /// Value written.
        value: String,
    },
    /// Register: write only if the key is at `expected` (0 = must not exist).
    Cas {
        /// Version the caller expects.
        expected: u64,
        /// Value written on success.
        value: String,
    },
    /// Set: add a unique element.
    Add {
        /// Element added; never added twice in one history.
        element: String,
    },
    /// Set: read every element.
    ReadSet,
}

impl Input {
    /// True for set operations, false for register operations.
    pub fn is_set_op(&self) -> bool {
        matches!(self, Input::Add { .. } | Input::ReadSet)
    }

    fn name(&self) -> &'static str {
        match self {
            Input::Read => "read",
            Input::Write { .. } => "write",
            Input::Cas { .. } => "cas",
            Input::Add { .. } => "add",
            Input::ReadSet => "read_set",
        }
    }
}

/// A version and the value stored at it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Versioned {
    /// KV version, counting from 1 for the first write.
    pub version: u64,
    /// Value at that version.
    pub value: String,
}

/// What the server answered to an [`Outcome::Ok`] op.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Output {
    /// Answer to [`Input::Read`]; `None` when the key does not exist.
    Read {
        /// Current version and value, if any.
        found: Option<Versioned>,
    },
    /// Answer to a successful [`Input::Write`] or [`Input::Cas`].
    Written {
        /// The version the write created.
        version: u64,
    },
    /// Answer to [`Input::Cas`] when the key was not at the expected version.
    /// The CAS was applied as a no-op, so it is checked, not dropped.
    CasMismatch {
        /// The version the server found (0 = absent), when it said.
        actual: Option<u64>,
    },
    /// Answer to [`Input::ReadSet`].
    Elements {
        /// Every element present.
        elements: BTreeSet<String>,
    },
}

/// One operation by one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client (logical process) that ran it; a client runs one op at a time.
    pub process: u64,
    /// The KV key (register) or set name it touched.
    pub key: String,
    /// What was asked.
    pub input: Input,
    /// What was answered; required for `Ok` ops except `Add`.
    pub output: Option<Output>,
    /// When the request was sent.
    pub invoke_ns: u64,
    /// When the answer (or the give-up) came; `None` if it never did.
    pub complete_ns: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Op {
    /// Completion time as the checker sees it: `None` means +infinity.
    pub fn effective_complete_ns(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Info => None,
            Outcome::Ok | Outcome::Fail => self.complete_ns,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{} {:?} ", self.process, self.key)?;
        match &self.input {
            Input::Read => write!(f, "read()")?,
            Input::Write { value } => write!(f, "write({value:?})")?,
            Input::Cas { expected, value } => write!(f, "cas({expected}, {value:?})")?,
            Input::Add { element } => write!(f, "add({element:?})")?,
            Input::ReadSet => write!(f, "read_set()")?,
        }
        match &self.output {
            None => {}
            Some(Output::Read { found: None }) => write!(f, " -> none")?,
            Some(Output::Read { found: Some(v) }) => write!(f, " -> v{} {:?}", v.version, v.value)?,
            Some(Output::Written { version }) => write!(f, " -> v{version}")?,
            Some(Output::CasMismatch { actual: Some(a) }) => write!(f, " -> mismatch (at v{a})")?,
            Some(Output::CasMismatch { actual: None }) => write!(f, " -> mismatch")?,
            Some(Output::Elements { elements }) => write!(f, " -> {} elements", elements.len())?,
        }
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        };
        match self.complete_ns {
            Some(c) => write!(f, " {outcome} [{}..{c}]", self.invoke_ns),
            None => write!(f, " {outcome} [{}..]", self.invoke_ns),
        }
    }
}

/// A history that cannot be checked as recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// An `Ok` or `Fail` op without a completion time.
    #[error("op {op}: {outcome:?} without a completion time")]
    MissingCompletion {
        /// The op.
        op: OpId,
        /// Its outcome.
        outcome: Outcome,
    },
    /// An op that completed before it was invoked.
    #[error("op {op}: completes at {complete_ns} ns, before its invoke at {invoke_ns} ns")]
    CompletesBeforeInvoke {
        /// The op.
        op: OpId,
        /// Invoke time.
        invoke_ns: u64,
        /// Completion time.
        complete_ns: u64,
    },
    /// An `Ok` op whose output does not answer its input.
    #[error("op {op}: ok {input} cannot answer {output}")]
    OutputMismatch {
        /// The op.
        op: OpId,
        /// The input's name.
        input: &'static str,
        /// What was found instead.
        output: String,
    },
    /// One key used both as a register and as a set.
    #[error("key {key:?} has both register and set operations")]
    MixedKey {
        /// The key.
        key: String,
    },
    /// The same element added twice to one set.
    #[error("op {op}: element {element:?} of set {key:?} was already added by op {first}")]
    DuplicateAdd {
        /// The second add.
        op: OpId,
        /// The first add.
        first: OpId,
        /// The set.
        key: String,
        /// The element.
        element: String,
    },
}

/// Every operation of a run, in invoke order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The operations; an op's index is its [`OpId`].
    pub ops: Vec<Op>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record that `process` sent `input` on `key` at `now_ns`. Until
    /// [`History::complete`] is called the op is indeterminate (`Info`), which
    /// is exactly what a request that never hears back is.
    pub fn invoke(
        &mut self,
        process: u64,
        key: impl Into<String>,
        input: Input,
        now_ns: u64,
    ) -> OpId {
        self.ops.push(Op {
            process,
            key: key.into(),
            input,
            output: None,
            invoke_ns: now_ns,
            complete_ns: None,
            outcome: Outcome::Info,
        });
        self.ops.len() - 1
    }

    /// Record how op `id` ended.
    pub fn complete(&mut self, id: OpId, outcome: Outcome, output: Option<Output>, now_ns: u64) {
        let op = &mut self.ops[id];
        op.outcome = outcome;
        op.output = output;
        op.complete_ns = Some(now_ns);
    }

    /// Check that every op can be interpreted: completions after invokes, `Ok`
    /// outputs that answer their inputs, one kind of object per key, unique adds.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let mut kinds: std::collections::HashMap<&str, bool> = Default::default();
        let mut adds: std::collections::HashMap<(&str, &str), OpId> = Default::default();
        for (id, op) in self.ops.iter().enumerate() {
            match (op.outcome, op.complete_ns) {
                (Outcome::Ok | Outcome::Fail, None) => {
                    return Err(HistoryError::MissingCompletion {
                        op: id,
                        outcome: op.outcome,
                    })
                }
                (_, Some(c)) if c < op.invoke_ns => {
                    return Err(HistoryError::CompletesBeforeInvoke {
                        op: id,
                        invoke_ns: op.invoke_ns,
                        complete_ns: c,
                    })
                }
                _ => {}
            }
            if *kinds.entry(&op.key).or_insert(op.input.is_set_op()) != op.input.is_set_op() {
                return Err(HistoryError::MixedKey {
                    key: op.key.clone(),
                });
            }
            if let Input::Add { element } = &op.input {
                if let Some(&first) = adds.get(&(op.key.as_str(), element.as_str())) {
                    return Err(HistoryError::DuplicateAdd {
                        op: id,
                        first,
                        key: op.key.clone(),
                        element: element.clone(),
                    });
                }
                adds.insert((&op.key, element), id);
            }
            if op.outcome == Outcome::Ok {
                let fits = matches!(
                    (&op.input, &op.output),
                    (Input::Read, Some(Output::Read { .. }))
                        | (Input::Write { .. }, Some(Output::Written { .. }))
                        | (
                            Input::Cas { .. },
                            Some(Output::Written { .. } | Output::CasMismatch { .. })
                        )
                        | (Input::Add { .. }, None)
                        | (Input::ReadSet, Some(Output::Elements { .. }))
                );
                if !fits {
                    return Err(HistoryError::OutputMismatch {
                        op: id,
                        input: op.input.name(),
                        output: format!("{:?}", op.output),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_then_complete_round_trips_through_json() {
        let mut h = History::new();
        let w = h.invoke(1, "k", Input::Write { value: "a".into() }, 10);
        h.complete(w, Outcome::Ok, Some(Output::Written { version: 1 }), 20);
        let r = h.invoke(2, "k", Input::Read, 30);
        assert_eq!(h.ops[r].outcome, Outcome::Info, "pending is indeterminate");
        h.validate().unwrap();
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(serde_json::from_str::<History>(&json).unwrap(), h);
        assert_eq!(
            h.ops[w].to_string(),
            r#"p1 "k" write("a") -> v1 ok [10..20]"#
        );
    }

    #[test]
    fn validate_rejects_uninterpretable_histories() {
        let mut h = History::new();
        let w = h.invoke(1, "k", Input::Write { value: "a".into() }, 10);
        h.complete(w, Outcome::Ok, Some(Output::Read { found: None }), 20);
        assert!(matches!(
            h.validate(),
            Err(HistoryError::OutputMismatch { op: 0, .. })
        ));

        let mut h = History::new();
        let w = h.invoke(1, "k", Input::Read, 10);
        h.complete(w, Outcome::Ok, Some(Output::Read { found: None }), 5);
        assert!(matches!(
            h.validate(),
            Err(HistoryError::CompletesBeforeInvoke { .. })
        ));

        let mut h = History::new();
        h.invoke(1, "k", Input::Read, 10);
        h.invoke(2, "k", Input::ReadSet, 10);
        assert!(matches!(h.validate(), Err(HistoryError::MixedKey { .. })));

        let mut h = History::new();
        h.invoke(
            1,
            "s",
            Input::Add {
                element: "x".into(),
            },
            10,
        );
        h.invoke(
            2,
            "s",
            Input::Add {
                element: "x".into(),
            },
            11,
        );
        assert!(matches!(
            h.validate(),
            Err(HistoryError::DuplicateAdd {
                first: 0,
                op: 1,
                ..
            })
        ));
    }
}
