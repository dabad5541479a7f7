//! Known-answer tests: hand-written histories whose verdict is known, with
//! planted anomalies, and generated valid histories with a stale read planted.

use super::*;
use crate::history::Versioned;

const K: &str = "k";

/// Shorthand builder for hand-written histories.
#[derive(Default)]
struct H(History);

impl H {
    fn push(
        &mut self,
        p: u64,
        key: &str,
        input: Input,
        output: Option<Output>,
        t: (u64, u64),
        outcome: Outcome,
    ) -> OpId {
        self.0.ops.push(Op {
            process: p,
            key: key.to_string(),
            input,
            output,
            invoke_ns: t.0,
            complete_ns: Some(t.1),
            outcome,
        });
        self.0.ops.len() - 1
    }
    fn write(&mut self, p: u64, value: &str, version: u64, t: (u64, u64)) -> OpId {
        let input = Input::Write {
            value: value.into(),
        };
        self.push(
            p,
            K,
            input,
            Some(Output::Written { version }),
            t,
            Outcome::Ok,
        )
    }
    fn read(&mut self, p: u64, found: Option<(u64, &str)>, t: (u64, u64)) -> OpId {
        let found = found.map(|(version, v)| Versioned {
            version,
            value: v.into(),
        });
        self.push(
            p,
            K,
            Input::Read,
            Some(Output::Read { found }),
            t,
            Outcome::Ok,
        )
    }
    fn cas(&mut self, p: u64, expected: u64, value: &str, out: Output, t: (u64, u64)) -> OpId {
        let input = Input::Cas {
            expected,
            value: value.into(),
        };
        self.push(p, K, input, Some(out), t, Outcome::Ok)
    }
    /// An indeterminate op: the client gave up at `t.1`.
    fn info(&mut self, p: u64, key: &str, input: Input, t: (u64, u64)) -> OpId {
        self.push(p, key, input, None, t, Outcome::Info)
    }
    fn add(&mut self, p: u64, element: &str, outcome: Outcome, t: (u64, u64)) -> OpId {
        let input = Input::Add {
            element: element.into(),
        };
        self.push(p, "s", input, None, t, outcome)
    }
    fn read_set(&mut self, p: u64, elements: &[&str], t: (u64, u64)) -> OpId {
        let elements = elements.iter().map(|e| e.to_string()).collect();
        self.push(
            p,
            "s",
            Input::ReadSet,
            Some(Output::Elements { elements }),
            t,
            Outcome::Ok,
        )
    }
    fn verdict(&self) -> Verdict {
        check(&self.0, &Budget::default())
            .expect("well-formed")
            .verdict
    }
    /// The anomaly, asserting the verdict is invalid.
    fn invalid(&self) -> Anomaly {
        match self.verdict() {
            Verdict::Invalid(a) => a,
            other => panic!("expected invalid, got {other:?}"),
        }
    }
}

fn w(value: &str) -> Input {
    Input::Write {
        value: value.into(),
    }
}

#[test]
fn empty_history_is_valid() {
    assert_eq!(H::default().verdict(), Verdict::Valid);
}

#[test]
fn sequential_register_with_cas_is_valid() {
    let mut h = H::default();
    h.read(1, None, (0, 1));
    h.write(1, "a", 1, (2, 3));
    h.read(2, Some((1, "a")), (4, 5));
    h.cas(1, 1, "b", Output::Written { version: 2 }, (6, 7));
    h.cas(2, 1, "c", Output::CasMismatch { actual: Some(2) }, (8, 9));
    h.read(2, Some((2, "b")), (10, 11));
    assert_eq!(h.verdict(), Verdict::Valid);
}

#[test]
fn concurrent_writes_may_take_effect_in_either_order() {
    // b is linearized first (it got v1) although it was invoked second.
    let mut h = H::default();
    h.write(1, "a", 2, (0, 100));
    h.write(2, "b", 1, (10, 110));
    h.read(3, Some((1, "b")), (20, 30)); // between the two writes
    h.read(3, Some((2, "a")), (120, 130));
    assert_eq!(h.verdict(), Verdict::Valid);

    // ...but the value at v2 must then be a.
    let mut h = H::default();
    h.write(1, "a", 2, (0, 100));
    h.write(2, "b", 1, (10, 110));
    let r = h.read(3, Some((2, "b")), (120, 130));
    assert_eq!(h.invalid().op, r);
}

#[test]
fn read_concurrent_with_a_write_sees_old_or_new() {
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.write(1, "b", 2, (20, 100));
    h.read(2, Some((1, "a")), (30, 40));
    h.read(3, Some((2, "b")), (35, 45));
    h.read(2, Some((2, "b")), (50, 60));
    assert_eq!(h.verdict(), Verdict::Valid);
}

#[test]
fn planted_stale_read_is_invalid() {
    let mut h = H::default();
    let w1 = h.write(1, "a", 1, (0, 10));
    let w2 = h.write(1, "b", 2, (20, 30));
    let r = h.read(2, Some((1, "a")), (40, 50));
    let a = h.invalid();
    assert_eq!((a.key.as_str(), a.element.as_deref()), (K, None));
    assert_eq!(a.op, r);
    assert_eq!(a.ops, vec![w1, w2, r]);
    assert_eq!(a.prefix_len, 2);
    assert_eq!(a.state, "v2 \"b\"");
    assert!(
        a.explanation.contains("no linearization explains op 2"),
        "{}",
        a.explanation
    );
}

#[test]
fn planted_new_then_old_read_is_invalid() {
    // Both reads overlap the write, but once a reader saw b, a later read
    // cannot go back to a.
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.write(1, "b", 2, (20, 100));
    h.read(2, Some((2, "b")), (30, 40));
    let r = h.read(3, Some((1, "a")), (50, 60));
    assert_eq!(h.invalid().op, r);
}

#[test]
fn planted_lost_write_is_invalid() {
    // Acknowledged, then gone.
    let mut h = H::default();
    let w1 = h.write(1, "a", 1, (0, 10));
    let r = h.read(2, None, (20, 30));
    let a = h.invalid();
    assert_eq!((a.op, a.ops.clone()), (r, vec![w1, r]));

    // Two acknowledged writes given the same version: one overwrote the other.
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    let w2 = h.write(2, "b", 1, (20, 30));
    assert_eq!(h.invalid().op, w2);
}

#[test]
fn planted_duplicated_write_is_invalid() {
    // One write applied twice: the same value shows up at the next version.
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.read(2, Some((1, "a")), (20, 30));
    let r = h.read(2, Some((2, "a")), (40, 50));
    assert_eq!(h.invalid().op, r);
}

#[test]
fn planted_read_of_a_value_never_written_is_invalid() {
    let mut h = H::default();
    h.write(1, "a", 1, (0, 100));
    h.read(2, Some((1, "a")), (10, 20)); // concurrent with the write: fine
    let r = h.read(2, Some((1, "ghost")), (30, 40));
    assert_eq!(h.invalid().op, r);
}

#[test]
fn cas_mismatch_is_checked_not_dropped() {
    // The key was at v1, so a CAS expecting v1 must not report a mismatch.
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    let c = h.cas(2, 1, "b", Output::CasMismatch { actual: None }, (20, 30));
    assert_eq!(h.invalid().op, c);

    // A mismatch must report the version actually there.
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    let c = h.cas(2, 0, "b", Output::CasMismatch { actual: Some(3) }, (20, 30));
    assert_eq!(h.invalid().op, c);
}

#[test]
fn failed_ops_are_dropped() {
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.push(2, K, w("b"), None, (20, 30), Outcome::Fail);
    h.read(3, Some((1, "a")), (40, 50));
    assert_eq!(h.verdict(), Verdict::Valid);

    // A failed write that shows up anyway is an anomaly.
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.push(2, K, w("b"), None, (20, 30), Outcome::Fail);
    let r = h.read(3, Some((2, "b")), (40, 50));
    assert_eq!(h.invalid().op, r);
}

#[test]
fn indeterminate_write_may_take_effect_late_or_never() {
    // Seen long after the client gave up on it.
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.info(2, K, w("b"), (20, 30));
    h.read(3, Some((1, "a")), (40, 50));
    h.read(3, Some((2, "b")), (1_000, 1_010));
    assert_eq!(h.verdict(), Verdict::Valid);

    // Never seen at all.
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.info(2, K, w("b"), (20, 30));
    h.read(3, Some((1, "a")), (1_000, 1_010));
    assert_eq!(h.verdict(), Verdict::Valid);

    // A pending op from History::invoke is indeterminate too.
    let mut h = H::default();
    h.0.invoke(2, K, w("b"), 20);
    h.read(3, Some((1, "b")), (40, 50));
    assert_eq!(h.verdict(), Verdict::Valid);
}

#[test]
fn indeterminate_write_cannot_act_before_its_invoke_or_be_undone() {
    let mut h = H::default();
    let r = h.read(1, Some((1, "b")), (0, 10));
    h.info(2, K, w("b"), (20, 30));
    assert_eq!(h.invalid().op, r);

    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.info(2, K, w("b"), (20, 30));
    h.read(3, Some((2, "b")), (40, 50));
    let r = h.read(3, Some((1, "a")), (60, 70));
    assert_eq!(h.invalid().op, r);
}

#[test]
fn indeterminate_cas_applies_only_at_its_expected_version() {
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.info(
        2,
        K,
        Input::Cas {
            expected: 1,
            value: "b".into(),
        },
        (20, 30),
    );
    h.read(3, Some((2, "b")), (40, 50));
    assert_eq!(h.verdict(), Verdict::Valid);

    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.info(
        2,
        K,
        Input::Cas {
            expected: 5,
            value: "b".into(),
        },
        (20, 30),
    );
    let r = h.read(3, Some((2, "b")), (40, 50));
    assert_eq!(h.invalid().op, r);
}

#[test]
fn keys_are_checked_independently() {
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    let x = h.push(
        1,
        "x",
        w("a"),
        Some(Output::Written { version: 1 }),
        (0, 10),
        Outcome::Ok,
    );
    let found = Some(Versioned {
        version: 1,
        value: "b".into(),
    });
    let r = h.push(
        2,
        "x",
        Input::Read,
        Some(Output::Read { found }),
        (20, 30),
        Outcome::Ok,
    );
    let a = h.invalid();
    assert_eq!((a.key.as_str(), a.op, a.ops.clone()), ("x", r, vec![x, r]));
}

#[test]
fn set_with_indeterminate_adds_is_valid() {
    let mut h = H::default();
    h.add(1, "a", Outcome::Ok, (0, 10));
    h.add(2, "b", Outcome::Info, (5, 15));
    h.add(3, "c", Outcome::Info, (5, 15));
    h.add(1, "d", Outcome::Fail, (20, 30));
    h.read_set(2, &["a"], (16, 18));
    let last = h.read_set(1, &["a", "b"], (100, 110));
    assert_eq!(h.verdict(), Verdict::Valid);
    let s = &set_summaries(&h.0)[0];
    assert_eq!(s.final_read, Some(last));
    assert_eq!((s.acknowledged, s.indeterminate), (1, 2));
    assert!(s.lost.is_empty() && s.unexpected.is_empty());
    assert_eq!(s.recovered, vec!["b".to_string()]);
}

#[test]
fn planted_lost_add_is_invalid() {
    let mut h = H::default();
    let add = h.add(1, "a", Outcome::Ok, (0, 10));
    h.add(2, "b", Outcome::Ok, (0, 10));
    let r = h.read_set(1, &["b"], (100, 110));
    let a = h.invalid();
    assert_eq!((a.key.as_str(), a.element.as_deref()), ("s", Some("a")));
    assert_eq!((a.op, a.ops.clone()), (r, vec![add, r]));
    assert_eq!(set_summaries(&h.0)[0].lost, vec!["a".to_string()]);
}

#[test]
fn planted_set_anomalies_are_invalid() {
    // An element nobody added.
    let mut h = H::default();
    h.add(1, "a", Outcome::Ok, (0, 10));
    h.read_set(1, &["a", "z"], (100, 110));
    assert_eq!(h.invalid().element.as_deref(), Some("z"));
    assert_eq!(set_summaries(&h.0)[0].unexpected, vec!["z".to_string()]);

    // An add that failed, present anyway.
    let mut h = H::default();
    h.add(1, "a", Outcome::Fail, (0, 10));
    h.read_set(1, &["a"], (100, 110));
    assert_eq!(h.invalid().element.as_deref(), Some("a"));

    // Present, then gone.
    let mut h = H::default();
    h.add(1, "a", Outcome::Info, (0, 10));
    h.read_set(1, &["a"], (20, 30));
    let r = h.read_set(1, &[], (40, 50));
    assert_eq!(h.invalid().op, r);
}

#[test]
fn exhausted_budget_is_unknown_never_valid() {
    let mut h = H::default();
    for i in 0..20 {
        h.write(i, &format!("v{i}"), i + 1, (i * 10, i * 10 + 5));
    }
    let tight = Budget {
        max_steps_per_partition: 5,
        ..Budget::default()
    };
    let report = check(&h.0, &tight).unwrap();
    assert_eq!(
        report.verdict,
        Verdict::Unknown {
            partitions: vec![K.into()]
        }
    );
    assert_eq!(report.verdict.exit_code(), 2);

    let no_time = Budget {
        time_limit: Duration::ZERO,
        ..Budget::default()
    };
    assert_eq!(check(&h.0, &no_time).unwrap().verdict.exit_code(), 2);
    assert_eq!(
        h.verdict(),
        Verdict::Valid,
        "with the default budget it is decided"
    );
}

#[test]
fn verdict_serializes_for_the_report() {
    let mut h = H::default();
    h.write(1, "a", 1, (0, 10));
    h.read(2, None, (20, 30));
    let report = check(&h.0, &Budget::default()).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verdict"], "invalid");
    assert_eq!(json["key"], K);
    assert_eq!(json["op"], 1);
    assert_eq!(json["partitions"], 1);
}

/// Deterministic pseudo-random numbers for generated histories.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A history from a real register: each op takes effect at a random instant
/// inside its interval; some ops are left indeterminate (and some of those
/// never take effect). Valid by construction.
fn generated(seed: u64, keys: usize, processes: u64, ops_per_process: usize) -> History {
    let mut rng = Lcg(seed);
    // (effect time, op id, applies)
    let mut effects = Vec::new();
    let mut ops = Vec::new();
    for p in 0..processes {
        let mut t = rng.below(50);
        for i in 0..ops_per_process {
            let key = format!("k{}", rng.below(keys as u64));
            let input = match rng.below(3) {
                0 => Input::Read,
                1 => Input::Write {
                    value: format!("p{p}-{i}"),
                },
                _ => Input::Cas {
                    expected: rng.below(4),
                    value: format!("p{p}-{i}"),
                },
            };
            let invoke = t;
            let effect = invoke + 1 + rng.below(40);
            let complete = effect + 1 + rng.below(40);
            let indeterminate = rng.below(20) == 0;
            let applies = !indeterminate || rng.below(2) == 0;
            effects.push((effect, ops.len(), applies));
            ops.push(Op {
                process: p,
                key,
                input,
                output: None,
                invoke_ns: invoke,
                complete_ns: Some(complete),
                outcome: if indeterminate {
                    Outcome::Info
                } else {
                    Outcome::Ok
                },
            });
            t = complete + rng.below(10);
        }
    }
    effects.sort();
    let mut registers: HashMap<String, (u64, String)> = HashMap::new();
    for (_, id, applies) in effects {
        if !applies {
            continue;
        }
        let op = &mut ops[id];
        let reg = registers
            .entry(op.key.clone())
            .or_insert((0, String::new()));
        let output = match &op.input {
            Input::Read => Output::Read {
                found: (reg.0 > 0).then(|| Versioned {
                    version: reg.0,
                    value: reg.1.clone(),
                }),
            },
            Input::Write { value } => {
                *reg = (reg.0 + 1, value.clone());
                Output::Written { version: reg.0 }
            }
            Input::Cas { expected, value } if *expected == reg.0 => {
                *reg = (reg.0 + 1, value.clone());
                Output::Written { version: reg.0 }
            }
            Input::Cas { .. } => Output::CasMismatch {
                actual: Some(reg.0),
            },
            Input::Add { .. } | Input::ReadSet => unreachable!(),
        };
        if op.outcome == Outcome::Ok {
            op.output = Some(output);
        }
    }
    History { ops }
}

#[test]
fn generated_concurrent_histories_are_valid() {
    for seed in 0..20 {
        let h = generated(seed, 3, 6, 60);
        let report = check(&h, &Budget::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Valid, "seed {seed}");
        assert_eq!(report.partitions, 3);
    }
}

#[test]
fn planted_stale_read_in_a_generated_history_is_found() {
    let mut found = 0;
    for seed in 0..20 {
        let mut h = generated(seed, 2, 5, 60);
        // Make the last answered read that saw v >= 2 claim that v's value
        // was current at v - 1. Values are unique; when the op that wrote it
        // was acknowledged its version is fixed, so no linearization fits.
        let acked = |value: &str| {
            h.ops.iter().any(|op| {
                op.outcome == Outcome::Ok
                    && matches!(op.output, Some(Output::Written { .. }))
                    && matches!(&op.input, Input::Write { value: v } | Input::Cas { value: v, .. } if v == value)
            })
        };
        let target = h.ops.iter().rposition(|op| {
            op.outcome == Outcome::Ok
                && matches!(&op.output, Some(Output::Read { found: Some(v) }) if v.version >= 2 && acked(&v.value))
        });
        let Some(id) = target else { continue };
        let Some(Output::Read { found: Some(v) }) = &mut h.ops[id].output else {
            unreachable!()
        };
        v.version -= 1;
        match check(&h, &Budget::default()).unwrap().verdict {
            Verdict::Invalid(a) => {
                assert_eq!(a.key, h.ops[id].key, "seed {seed}");
                found += 1;
            }
            other => panic!("seed {seed}: planted anomaly missed: {other:?}"),
        }
    }
    assert!(found >= 10, "too few plantable histories: {found}");
}

/// Scale check, run by hand: `cargo test --release -- --ignored scale`.
#[test]
#[ignore = "slow in debug builds; a scale check, not a known answer"]
fn scale_many_clients_on_few_keys() {
    let h = generated(7, 10, 20, 200);
    let started = std::time::Instant::now();
    let report = check(&h, &Budget::default()).unwrap();
    eprintln!(
        "{} ops, {} partitions, {} steps, {:?}",
        h.ops.len(),
        report.partitions,
        report.steps,
        started.elapsed()
    );
    assert_eq!(report.verdict, Verdict::Valid);
}
