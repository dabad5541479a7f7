//! Linearizability checker: the Wing–Gong / Lowe search with memoisation and
//! per-key partitioning, as Porcupine does it.
//!
//! Invariant: `Valid` is returned only when a linearization was found for
//! every partition; a search that runs out of its step or time budget yields
//! `Unknown`, never `Valid`.
//!
//! How the search works, per partition (one register key, or one element of
//! one set): call and return events are sorted by time into a doubly linked
//! list. Walking it, a call may be linearized when the model accepts it from
//! the current state; it is then lifted out of the list (with its return) and
//! the walk restarts from the head. Reaching a return event means that op had
//! to be linearized already, so the search backtracks (undo stack of lifted
//! calls and the states before them). A (linearized bitset, model state) pair
//! already explored is never explored again. `Fail` ops are dropped;
//! `Info` ops have no return event, so they may be linearized anywhere after
//! their invoke or never: the walk succeeds once no return event is left.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::{History, HistoryError, Input, Op, OpId, Outcome, Output};

/// How much work the checker may do before answering `Unknown`.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Search steps (list moves) allowed for one partition.
    pub max_steps_per_partition: u64,
    /// Wall-clock time for the whole check.
    pub time_limit: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_steps_per_partition: 20_000_000,
            time_limit: Duration::from_secs(120),
        }
    }
}

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Every partition has a linearization.
    Valid,
    /// Some partition has none; the first one found is explained.
    Invalid(Anomaly),
    /// The budget ran out before an answer; this is never a pass.
    Unknown {
        /// The partitions left undecided (`key` or `key/element`).
        partitions: Vec<String>,
    },
}

impl Verdict {
    /// Process exit code for the verdict: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid(_) => 1,
            Verdict::Unknown { .. } => 2,
        }
    }
}

/// A minimal account of why a partition is not linearizable: the longest
/// linearizable prefix the search found, and the op that could not follow it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Anomaly {
    /// The register key or set name.
    pub key: String,
    /// For a set, the element whose partition failed.
    pub element: Option<String>,
    /// The op that had completed but could not be linearized after the prefix.
    pub op: OpId,
    /// The last ops of the longest linearizable prefix (at most
    /// [`PREFIX_SHOWN`]), in linearization order, then `op`.
    pub ops: Vec<OpId>,
    /// Length of the longest linearizable prefix.
    pub prefix_len: usize,
    /// The model state after that prefix.
    pub state: String,
    /// The same, in words, one op per line.
    pub explanation: String,
}

/// How many ops of the longest linearizable prefix an [`Anomaly`] shows.
pub const PREFIX_SHOWN: usize = 6;

/// A verdict with the work it took. The counts stop at the first invalid
/// partition, where the check stops.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The answer.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Partitions checked (register keys plus set elements).
    pub partitions: usize,
    /// Ops given to the search (after dropping `Fail` ops and unanswered reads).
    pub ops_checked: usize,
    /// Search steps taken over all partitions.
    pub steps: u64,
}

/// Check a history: register keys against the versioned-register model, set
/// keys against the set model (partitioned per element).
pub fn check(history: &History, budget: &Budget) -> Result<Report, HistoryError> {
    history.validate()?;
    let deadline = Instant::now() + budget.time_limit;
    let mut by_key: BTreeMap<&str, Vec<OpId>> = BTreeMap::new();
    for (id, op) in history.ops.iter().enumerate() {
        by_key.entry(&op.key).or_default().push(id);
    }
    let mut report = Report {
        verdict: Verdict::Valid,
        partitions: 0,
        ops_checked: 0,
        steps: 0,
    };
    let mut unknown = Vec::new();
    for (key, ids) in by_key {
        let is_set = history.ops[ids[0]].input.is_set_op();
        let partitions = if is_set {
            set_partitions(history, &ids)
        } else {
            vec![register_partition(history, &ids)]
        };
        for part in partitions {
            report.partitions += 1;
            let mut meter = Meter::new(budget.max_steps_per_partition, deadline);
            let (outcome, ops_checked) = match &part {
                Partition::Register { model, calls } => {
                    (search(model, calls, &mut meter), calls.len())
                }
                Partition::Set { calls, .. } => (search(&SetModel, calls, &mut meter), calls.len()),
            };
            report.ops_checked += ops_checked;
            report.steps += meter.steps;
            let element = match &part {
                Partition::Set { element, .. } => Some(element.clone()),
                Partition::Register { .. } => None,
            };
            match outcome {
                Search::Linearizable => {}
                Search::OutOfBudget => unknown.push(match &element {
                    Some(e) => format!("{key}/{e}"),
                    None => key.to_string(),
                }),
                Search::Violation {
                    blocked,
                    prefix,
                    state,
                } => {
                    report.verdict =
                        Verdict::Invalid(explain(history, key, element, blocked, &prefix, state));
                    return Ok(report);
                }
            }
        }
    }
    if !unknown.is_empty() {
        report.verdict = Verdict::Unknown {
            partitions: unknown,
        };
    }
    Ok(report)
}

fn explain(
    history: &History,
    key: &str,
    element: Option<String>,
    blocked: OpId,
    prefix: &[OpId],
    state: String,
) -> Anomaly {
    let shown = &prefix[prefix.len().saturating_sub(PREFIX_SHOWN)..];
    let what = match &element {
        Some(e) => format!("set {key:?}, element {e:?}"),
        None => format!("key {key:?}"),
    };
    let mut text = format!(
        "{what}: no linearization explains op {blocked}.\n\
         longest linearizable prefix: {} ops, leaving the model at {state}; its last ops:\n",
        prefix.len()
    );
    for &id in shown {
        text.push_str(&format!("  op {id}: {}\n", history.ops[id]));
    }
    text.push_str(&format!(
        "cannot follow them:\n  op {blocked}: {}\n",
        history.ops[blocked]
    ));
    let mut ops = shown.to_vec();
    ops.push(blocked);
    Anomaly {
        key: key.to_string(),
        element,
        op: blocked,
        ops,
        prefix_len: prefix.len(),
        state,
        explanation: text,
    }
}

// ---------------------------------------------------------------------------
// Models

/// A sequential specification: a deterministic state machine that accepts or
/// rejects an op (with its observed output) from a state.
trait Model {
    type State: Clone + Eq + Hash;
    type Op;
    fn init(&self) -> Self::State;
    /// The state after `op`, or `None` if `op` cannot happen from `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
    fn describe(&self, state: &Self::State) -> String;
}

/// Register state: KV version (0 = absent) and the interned value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RegState {
    version: u64,
    value: Option<u32>,
}

/// A register op with its observation; `None` results are indeterminate.
#[derive(Clone, Debug)]
enum RegOp {
    Read(Option<(u64, u32)>),
    Write {
        value: u32,
        version: Option<u64>,
    },
    Cas {
        expected: u64,
        value: u32,
        result: Option<CasResult>,
    },
}

#[derive(Clone, Debug)]
enum CasResult {
    Written(u64),
    Mismatch(Option<u64>),
}

/// The kstash KV versioned register: each write makes version + 1; a CAS
/// writes only at the expected version (0 = absent).
struct RegisterModel {
    values: Vec<String>,
}

impl Model for RegisterModel {
    type State = RegState;
    type Op = RegOp;

    fn init(&self) -> RegState {
        RegState {
            version: 0,
            value: None,
        }
    }

    fn step(&self, s: &RegState, op: &RegOp) -> Option<RegState> {
        let written = |value: u32| RegState {
            version: s.version + 1,
            value: Some(value),
        };
        match op {
            RegOp::Read(seen) => {
                let now = s.value.map(|v| (s.version, v));
                (*seen == now).then_some(*s)
            }
            RegOp::Write { value, version } => match version {
                Some(v) if *v != s.version + 1 => None,
                _ => Some(written(*value)),
            },
            RegOp::Cas {
                expected,
                value,
                result,
            } => {
                let matches = *expected == s.version;
                match result {
                    // Indeterminate: applied as the server would have.
                    None if matches => Some(written(*value)),
                    None => Some(*s),
                    Some(CasResult::Written(v)) => {
                        (matches && *v == s.version + 1).then(|| written(*value))
                    }
                    Some(CasResult::Mismatch(actual)) => {
                        (!matches && actual.is_none_or(|a| a == s.version)).then_some(*s)
                    }
                }
            }
        }
    }

    fn describe(&self, s: &RegState) -> String {
        match s.value {
            None => "absent".to_string(),
            Some(v) => format!("v{} {:?}", s.version, self.values[v as usize]),
        }
    }
}

/// One element of a set: present or not.
#[derive(Clone, Debug)]
enum SetOp {
    Add,
    Read { contains: bool },
}

struct SetModel;

impl Model for SetModel {
    type State = bool;
    type Op = SetOp;

    fn init(&self) -> bool {
        false
    }

    fn step(&self, present: &bool, op: &SetOp) -> Option<bool> {
        match op {
            SetOp::Add => Some(true),
            SetOp::Read { contains } => (*contains == *present).then_some(*present),
        }
    }

    fn describe(&self, present: &bool) -> String {
        if *present { "present" } else { "absent" }.to_string()
    }
}

// ---------------------------------------------------------------------------
// Partitions

/// An op as the search sees it; `complete: None` is +infinity.
struct Call<O> {
    id: OpId,
    op: O,
    invoke: u64,
    complete: Option<u64>,
}

enum Partition {
    Register {
        model: RegisterModel,
        calls: Vec<Call<RegOp>>,
    },
    Set {
        element: String,
        calls: Vec<Call<SetOp>>,
    },
}

/// Ops that enter the search: `Fail` ops had no effect and are dropped, and so
/// are reads without an answer, which neither change nor observe anything.
fn kept(op: &Op) -> bool {
    match op.outcome {
        Outcome::Fail => false,
        Outcome::Ok => true,
        Outcome::Info => !matches!(op.input, Input::Read | Input::ReadSet),
    }
}

fn register_partition<'a>(history: &'a History, ids: &[OpId]) -> Partition {
    let mut values = Vec::new();
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut intern = |v: &'a str, values: &mut Vec<String>| -> u32 {
        *index.entry(v).or_insert_with(|| {
            values.push(v.to_string());
            (values.len() - 1) as u32
        })
    };
    let mut calls = Vec::new();
    for &id in ids {
        let op = &history.ops[id];
        if !kept(op) {
            continue;
        }
        let output = if op.outcome == Outcome::Ok {
            op.output.as_ref()
        } else {
            None
        };
        let reg = match (&op.input, output) {
            (Input::Read, Some(Output::Read { found })) => RegOp::Read(
                found
                    .as_ref()
                    .map(|f| (f.version, intern(&f.value, &mut values))),
            ),
            (Input::Write { value }, out) => RegOp::Write {
                value: intern(value, &mut values),
                version: match out {
                    Some(Output::Written { version }) => Some(*version),
                    _ => None,
                },
            },
            (Input::Cas { expected, value }, out) => RegOp::Cas {
                expected: *expected,
                value: intern(value, &mut values),
                result: match out {
                    Some(Output::Written { version }) => Some(CasResult::Written(*version)),
                    Some(Output::CasMismatch { actual }) => Some(CasResult::Mismatch(*actual)),
                    _ => None,
                },
            },
            // validate() guarantees ok reads carry a read output and keys are
            // not mixed; nothing else reaches here.
            _ => continue,
        };
        calls.push(Call {
            id,
            op: reg,
            invoke: op.invoke_ns,
            complete: op.effective_complete_ns(),
        });
    }
    Partition::Register {
        model: RegisterModel { values },
        calls,
    }
}

/// A set with unique adds is, per element, a register that goes from absent
/// to present once; every answered read observes every element.
fn set_partitions(history: &History, ids: &[OpId]) -> Vec<Partition> {
    let mut elements: BTreeSet<&str> = BTreeSet::new();
    for &id in ids {
        match (&history.ops[id].input, &history.ops[id].output) {
            (Input::Add { element }, _) => {
                elements.insert(element);
            }
            (Input::ReadSet, Some(Output::Elements { elements: seen })) => {
                elements.extend(seen.iter().map(String::as_str));
            }
            _ => {}
        }
    }
    let mut calls: BTreeMap<&str, Vec<Call<SetOp>>> =
        elements.iter().map(|e| (*e, Vec::new())).collect();
    for &id in ids {
        let op = &history.ops[id];
        if !kept(op) {
            continue;
        }
        let call = |op_: SetOp| Call {
            id,
            op: op_,
            invoke: op.invoke_ns,
            complete: op.effective_complete_ns(),
        };
        match (&op.input, &op.output) {
            (Input::Add { element }, _) => calls
                .get_mut(element.as_str())
                .expect("collected")
                .push(call(SetOp::Add)),
            (Input::ReadSet, Some(Output::Elements { elements: seen })) => {
                for (e, list) in calls.iter_mut() {
                    list.push(call(SetOp::Read {
                        contains: seen.contains(*e),
                    }));
                }
            }
            _ => {}
        }
    }
    calls
        .into_iter()
        .map(|(e, calls)| Partition::Set {
            element: e.to_string(),
            calls,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Search

enum Search {
    Linearizable,
    Violation {
        blocked: OpId,
        prefix: Vec<OpId>,
        state: String,
    },
    OutOfBudget,
}

struct Meter {
    steps: u64,
    max_steps: u64,
    deadline: Instant,
}

impl Meter {
    fn new(max_steps: u64, deadline: Instant) -> Self {
        Self {
            steps: 0,
            max_steps,
            deadline,
        }
    }

    /// Count one step; false once the budget is spent.
    fn tick(&mut self) -> bool {
        if self.steps >= self.max_steps {
            return false;
        }
        if self.steps.is_multiple_of(1024) && Instant::now() >= self.deadline {
            return false;
        }
        self.steps += 1;
        true
    }
}

/// The set of calls linearized so far.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

#[derive(Clone, Copy)]
enum Event {
    Head,
    Call(usize),
    Return(usize),
}

/// Doubly linked list of events with O(1) remove and restore (restores must
/// come in the reverse order of the removes).
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    event: Vec<Event>,
    call_node: Vec<usize>,
    return_node: Vec<usize>,
}

impl Events {
    fn new<O>(calls: &[Call<O>]) -> Self {
        // On equal times calls sort before returns: touching ops are concurrent.
        let mut sorted: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * calls.len());
        for (k, c) in calls.iter().enumerate() {
            sorted.push((c.invoke, false, k));
            if let Some(t) = c.complete {
                sorted.push((t, true, k));
            }
        }
        sorted.sort_unstable();
        let len = sorted.len() + 1;
        let mut events = Events {
            next: vec![NIL; len],
            prev: vec![NIL; len],
            event: Vec::with_capacity(len),
            call_node: vec![NIL; calls.len()],
            return_node: vec![NIL; calls.len()],
        };
        events.event.push(Event::Head);
        for (i, &(_, is_return, k)) in sorted.iter().enumerate() {
            let node = i + 1;
            events.prev[node] = i;
            events.next[i] = node;
            if is_return {
                events.event.push(Event::Return(k));
                events.return_node[k] = node;
            } else {
                events.event.push(Event::Call(k));
                events.call_node[k] = node;
            }
        }
        events
    }

    fn remove(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn restore(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        if n != NIL {
            self.prev[n] = x;
        }
    }

    fn lift(&mut self, k: usize) {
        self.remove(self.call_node[k]);
        if self.return_node[k] != NIL {
            self.remove(self.return_node[k]);
        }
    }

    fn unlift(&mut self, k: usize) {
        if self.return_node[k] != NIL {
            self.restore(self.return_node[k]);
        }
        self.restore(self.call_node[k]);
    }
}

fn search<M: Model>(model: &M, calls: &[Call<M::Op>], meter: &mut Meter) -> Search {
    let mut list = Events::new(calls);
    let mut state = model.init();
    let mut linearized = Bitset::new(calls.len());
    let mut seen: HashSet<(Bitset, M::State)> = HashSet::new();
    // Undo stack: the call lifted and the state before it.
    let mut undo: Vec<(usize, M::State)> = Vec::new();
    let mut best: Option<(usize, usize, Vec<OpId>, String)> = None;
    let mut node = list.next[HEAD];
    loop {
        if node == NIL {
            return Search::Linearizable;
        }
        if !meter.tick() {
            return Search::OutOfBudget;
        }
        match list.event[node] {
            Event::Head => unreachable!("the head is never after another node"),
            Event::Call(k) => {
                if let Some(after) = model.step(&state, &calls[k].op) {
                    linearized.set(k);
                    if seen.insert((linearized.clone(), after.clone())) {
                        undo.push((k, std::mem::replace(&mut state, after)));
                        list.lift(k);
                        node = list.next[HEAD];
                        continue;
                    }
                    linearized.clear(k);
                }
                node = list.next[node];
            }
            Event::Return(k) => {
                if best.as_ref().is_none_or(|b| undo.len() > b.0) {
                    let prefix = undo.iter().map(|(c, _)| calls[*c].id).collect();
                    best = Some((undo.len(), calls[k].id, prefix, model.describe(&state)));
                }
                let Some((lifted, before)) = undo.pop() else {
                    let (_, blocked, prefix, state) = best.expect("recorded above");
                    return Search::Violation {
                        blocked,
                        prefix,
                        state,
                    };
                };
                linearized.clear(lifted);
                state = before;
                list.unlift(lifted);
                node = list.next[list.call_node[lifted]];
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Set summary

/// What the last answered read of a set shows, Jepsen's set-checker numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetSummary {
    /// The set.
    pub key: String,
    /// The read summarised: the answered `read_set` invoked last.
    pub final_read: Option<OpId>,
    /// Adds acknowledged (`Ok`).
    pub acknowledged: usize,
    /// Adds whose outcome is unknown (`Info`).
    pub indeterminate: usize,
    /// Acknowledged before the final read began, yet missing from it.
    pub lost: Vec<String>,
    /// In the final read but never added (or added by a `Fail` op).
    pub unexpected: Vec<String>,
    /// Indeterminate adds that the final read shows took effect.
    pub recovered: Vec<String>,
}

/// One [`SetSummary`] per set key, in key order.
pub fn set_summaries(history: &History) -> Vec<SetSummary> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        if op.input.is_set_op() {
            by_key.entry(&op.key).or_default().push(op);
        }
    }
    let mut out = Vec::new();
    for (key, ops) in by_key {
        let final_read = history
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| {
                op.key == key && op.outcome == Outcome::Ok && op.input == Input::ReadSet
            })
            .max_by_key(|(_, op)| op.invoke_ns);
        let empty = BTreeSet::new();
        let (final_id, final_invoke, seen) = match final_read {
            Some((id, op)) => match &op.output {
                Some(Output::Elements { elements }) => (Some(id), op.invoke_ns, elements),
                _ => (Some(id), op.invoke_ns, &empty),
            },
            None => (None, 0, &empty),
        };
        let mut summary = SetSummary {
            key: key.to_string(),
            final_read: final_id,
            acknowledged: 0,
            indeterminate: 0,
            lost: Vec::new(),
            unexpected: Vec::new(),
            recovered: Vec::new(),
        };
        let mut attempted = BTreeSet::new();
        for op in &ops {
            let Input::Add { element } = &op.input else {
                continue;
            };
            match op.outcome {
                Outcome::Fail => continue,
                Outcome::Ok => {
                    summary.acknowledged += 1;
                    let before_final = op.complete_ns.is_some_and(|c| c < final_invoke);
                    if final_id.is_some() && before_final && !seen.contains(element) {
                        summary.lost.push(element.clone());
                    }
                }
                Outcome::Info => {
                    summary.indeterminate += 1;
                    if seen.contains(element) {
                        summary.recovered.push(element.clone());
                    }
                }
            }
            attempted.insert(element.as_str());
        }
        summary.unexpected = seen
            .iter()
            .filter(|e| !attempted.contains(e.as_str()))
            .cloned()
            .collect();
        out.push(summary);
    }
    out
}

#[cfg(test)]
mod tests;
