//! The one conformance suite every [`Backend`] must pass (memory and etcd alike).
//!
//! Invariant: each run writes only under its own fresh key prefix, so the suite
//! works on a backend that already holds other data (another test's prefix, or
//! an earlier run of this suite) and never depends on the backend being empty.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{prefix_end, Backend, BatchOp, KvPairs};

/// Distinguishes the runs of the suite inside one process.
static RUN: AtomicU64 = AtomicU64::new(0);

/// Size of the large value check: 1 MiB.
const LARGE: usize = 1024 * 1024;

/// Run every check of the shared contract against `b`.
///
/// Panics with a message naming the backend and the failed check.
pub(crate) fn run_all(b: &dyn Backend) {
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let root = format!("suite-{}-{run}/", std::process::id()).into_bytes();
    let t = Suite { b, root };

    t.get_missing();
    t.put_then_get();
    t.overwrite();
    t.delete();
    t.batch_is_ordered();
    t.batch_puts_are_all_visible();
    t.empty_batch();
    t.scan_is_sorted();
    t.scan_limit();
    t.scan_isolates_prefixes();
    t.scan_many_keys();
    t.keys_only_scan();
    t.keys_scan_from_and_limit();
    t.keys_scan_skips_subtrees();
    t.binary_keys_and_values();
    t.keys_scan_binary_edges();
    t.empty_value();
    t.large_values();
    t.leaves_nothing_behind();
}

struct Suite<'a> {
    b: &'a dyn Backend,
    /// Every key the suite writes starts with this.
    root: Vec<u8>,
}

fn put(key: Vec<u8>, value: &[u8]) -> BatchOp {
    BatchOp::Put {
        key,
        value: value.to_vec(),
    }
}

fn del(key: Vec<u8>) -> BatchOp {
    BatchOp::Delete { key }
}

impl Suite<'_> {
    /// `root` + `name`: the real key of one check.
    fn key(&self, name: &[u8]) -> Vec<u8> {
        let mut k = self.root.clone();
        k.extend_from_slice(name);
        k
    }

    fn apply(&self, what: &str, batch: Vec<BatchOp>) {
        if let Err(e) = self.b.apply(batch) {
            panic!("[{}] {what}: apply failed: {e}", self.b.name());
        }
    }

    fn get(&self, what: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.b
            .get(key)
            .unwrap_or_else(|e| panic!("[{}] {what}: get failed: {e}", self.b.name()))
    }

    fn scan(&self, what: &str, prefix: &[u8], limit: Option<usize>) -> KvPairs {
        self.b
            .scan_prefix(prefix, limit)
            .unwrap_or_else(|e| panic!("[{}] {what}: scan_prefix failed: {e}", self.b.name()))
    }

    /// The keys of a scan, relative to the run's root.
    fn scan_keys(&self, what: &str, prefix: &[u8], limit: Option<usize>) -> Vec<Vec<u8>> {
        self.scan(what, prefix, limit)
            .into_iter()
            .map(|(k, _)| {
                assert!(
                    k.starts_with(prefix),
                    "[{}] {what}: scan returned a key outside the prefix",
                    self.b.name()
                );
                k[self.root.len()..].to_vec()
            })
            .collect()
    }

    fn get_missing(&self) {
        let what = "get of a missing key";
        assert_eq!(
            self.get(what, &self.key(b"missing")),
            None,
            "[{}] {what} must be None",
            self.b.name()
        );
    }

    fn put_then_get(&self) {
        let what = "put then get";
        let k = self.key(b"put/k");
        self.apply(what, vec![put(k.clone(), b"v1")]);
        assert_eq!(
            self.get(what, &k).as_deref(),
            Some(&b"v1"[..]),
            "[{}] {what}: the stored value must come back",
            self.b.name()
        );
    }

    fn overwrite(&self) {
        let what = "overwrite";
        let k = self.key(b"overwrite/k");
        self.apply(what, vec![put(k.clone(), b"old value")]);
        self.apply(what, vec![put(k.clone(), b"new")]);
        assert_eq!(
            self.get(what, &k).as_deref(),
            Some(&b"new"[..]),
            "[{}] {what}: the second put must replace the first",
            self.b.name()
        );
        let scanned = self.scan(what, &self.key(b"overwrite/"), None);
        assert_eq!(
            scanned.len(),
            1,
            "[{}] {what}: an overwritten key must appear once in a scan",
            self.b.name()
        );
    }

    fn delete(&self) {
        let what = "delete";
        let k = self.key(b"delete/k");
        self.apply(what, vec![put(k.clone(), b"v")]);
        self.apply(what, vec![del(k.clone())]);
        assert_eq!(
            self.get(what, &k),
            None,
            "[{}] {what}: a deleted key must be gone",
            self.b.name()
        );
        self.apply(
            "delete of a missing key",
            vec![del(self.key(b"delete/never"))],
        );
        self.apply("delete of a deleted key", vec![del(k.clone())]);
        assert_eq!(
            self.get(what, &k),
            None,
            "[{}] {what}: deleting twice must leave the key gone",
            self.b.name()
        );
    }

    fn batch_is_ordered(&self) {
        let what = "batch order";
        let gone = self.key(b"order/put-then-delete");
        let back = self.key(b"order/delete-then-put");
        let twice = self.key(b"order/put-twice");
        self.apply(what, vec![put(back.clone(), b"before")]);
        self.apply(
            what,
            vec![
                put(gone.clone(), b"v"),
                del(gone.clone()),
                del(back.clone()),
                put(back.clone(), b"after"),
                put(twice.clone(), b"first"),
                put(twice.clone(), b"second"),
            ],
        );
        assert_eq!(
            self.get(what, &gone),
            None,
            "[{}] {what}: put then delete of one key in a batch must leave it absent",
            self.b.name()
        );
        assert_eq!(
            self.get(what, &back).as_deref(),
            Some(&b"after"[..]),
            "[{}] {what}: delete then put of one key in a batch must leave the put",
            self.b.name()
        );
        assert_eq!(
            self.get(what, &twice).as_deref(),
            Some(&b"second"[..]),
            "[{}] {what}: the later of two puts in a batch must win",
            self.b.name()
        );
    }

    fn batch_puts_are_all_visible(&self) {
        let what = "batch of puts";
        let a = self.key(b"batch/a");
        let b = self.key(b"batch/b");
        self.apply(what, vec![put(a.clone(), b"va"), put(b.clone(), b"vb")]);
        assert_eq!(
            self.get(what, &a).as_deref(),
            Some(&b"va"[..]),
            "[{}] {what}: the first put of the batch must be visible",
            self.b.name()
        );
        assert_eq!(
            self.get(what, &b).as_deref(),
            Some(&b"vb"[..]),
            "[{}] {what}: the second put of the batch must be visible",
            self.b.name()
        );
    }

    fn empty_batch(&self) {
        self.apply("empty batch", Vec::new());
    }

    fn scan_is_sorted(&self) {
        let what = "scan order";
        let names: [&[u8]; 5] = [b"sort/m", b"sort/b", b"sort/z", b"sort/a", b"sort/b0"];
        self.apply(
            what,
            names
                .iter()
                .map(|n| put(self.key(n), n))
                .collect::<Vec<_>>(),
        );
        let got = self.scan(what, &self.key(b"sort/"), None);
        let want: KvPairs = [&b"sort/a"[..], b"sort/b", b"sort/b0", b"sort/m", b"sort/z"]
            .iter()
            .map(|n| (self.key(n), n.to_vec()))
            .collect();
        assert_eq!(
            got,
            want,
            "[{}] {what}: scan must return every pair, sorted by key",
            self.b.name()
        );
    }

    fn scan_limit(&self) {
        let what = "scan limit";
        let p = self.key(b"sort/");
        let first_two = self.scan_keys(what, &p, Some(2));
        assert_eq!(
            first_two,
            vec![b"sort/a".to_vec(), b"sort/b".to_vec()],
            "[{}] {what}: limit 2 must return the first two keys in order",
            self.b.name()
        );
        assert!(
            self.scan(what, &p, Some(0)).is_empty(),
            "[{}] {what}: limit 0 must return nothing",
            self.b.name()
        );
        assert_eq!(
            self.scan(what, &p, Some(100)).len(),
            5,
            "[{}] {what}: a limit above the count must return every pair",
            self.b.name()
        );
        assert!(
            self.scan(what, &self.key(b"no-such-prefix/"), None)
                .is_empty(),
            "[{}] {what}: a prefix with no keys must return nothing",
            self.b.name()
        );
    }

    fn scan_isolates_prefixes(&self) {
        let what = "prefix isolation";
        self.apply(
            what,
            vec![
                put(self.key(b"iso/a"), b"1"),
                put(self.key(b"iso/a/1"), b"2"),
                put(self.key(b"iso/a/2"), b"3"),
                put(self.key(b"iso/ab"), b"4"),
                put(self.key(b"iso/b/1"), b"5"),
            ],
        );
        assert_eq!(
            self.scan_keys(what, &self.key(b"iso/a/"), None),
            vec![b"iso/a/1".to_vec(), b"iso/a/2".to_vec()],
            "[{}] {what}: `a/` must not return `a` or `ab`",
            self.b.name()
        );
        assert_eq!(
            self.scan_keys(what, &self.key(b"iso/a"), None),
            vec![
                b"iso/a".to_vec(),
                b"iso/a/1".to_vec(),
                b"iso/a/2".to_vec(),
                b"iso/ab".to_vec()
            ],
            "[{}] {what}: `a` must return `a`, `a/…` and `ab` but not `b/…`",
            self.b.name()
        );
    }

    fn scan_many_keys(&self) {
        // More keys than one etcd page, written in batches that stay under
        // etcd's transaction limit of 128 operations.
        let what = "scan of many keys";
        let count = 300usize;
        let names: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("many/{i:04}").into_bytes())
            .collect();
        for chunk in names.chunks(100) {
            self.apply(
                what,
                chunk
                    .iter()
                    .map(|n| put(self.key(n), n))
                    .collect::<Vec<_>>(),
            );
        }
        let p = self.key(b"many/");
        let all = self.scan(what, &p, None);
        assert_eq!(
            all.len(),
            count,
            "[{}] {what}: every key must be returned",
            self.b.name()
        );
        for ((k, v), n) in all.iter().zip(&names) {
            assert!(
                k == &self.key(n) && v == n,
                "[{}] {what}: pairs must come back sorted and intact",
                self.b.name()
            );
        }
        let limited = self.scan_keys(what, &p, Some(250));
        assert_eq!(
            limited,
            names[..250].to_vec(),
            "[{}] {what}: limit 250 must return the first 250 keys",
            self.b.name()
        );
        self.apply(
            "cleanup of many keys",
            names[..100].iter().map(|n| del(self.key(n))).collect(),
        );
        assert_eq!(
            self.scan(what, &p, None).len(),
            count - 100,
            "[{}] {what}: a batch of deletes must remove every key it names",
            self.b.name()
        );
    }

    /// `scan_keys` with the root made relative, checking every key is
    /// inside the prefix.
    fn keys(&self, what: &str, prefix: &[u8], from: Option<&[u8]>, limit: usize) -> Vec<Vec<u8>> {
        self.b
            .scan_keys(prefix, from, limit)
            .unwrap_or_else(|e| panic!("[{}] {what}: scan_keys failed: {e}", self.b.name()))
            .into_iter()
            .map(|k| {
                assert!(
                    k.starts_with(prefix),
                    "[{}] {what}: scan_keys returned a key outside the prefix",
                    self.b.name()
                );
                k[self.root.len()..].to_vec()
            })
            .collect()
    }

    fn keys_only_scan(&self) {
        // Runs after scan_is_sorted and scan_isolates_prefixes: reuses their keys.
        let what = "keys-only scan";
        assert_eq!(
            self.keys(what, &self.key(b"sort/"), None, 100),
            self.scan_keys(what, &self.key(b"sort/"), None),
            "[{}] {what}: scan_keys must return the same keys as scan_prefix, in order",
            self.b.name()
        );
        assert_eq!(
            self.keys(what, &self.key(b"iso/a/"), None, 100),
            vec![b"iso/a/1".to_vec(), b"iso/a/2".to_vec()],
            "[{}] {what}: `a/` must not return `a` or `ab`",
            self.b.name()
        );
        assert_eq!(
            self.keys(what, &self.key(b"iso/a"), None, 100),
            vec![
                b"iso/a".to_vec(),
                b"iso/a/1".to_vec(),
                b"iso/a/2".to_vec(),
                b"iso/ab".to_vec()
            ],
            "[{}] {what}: `a` must return `a`, `a/…` and `ab` but not `b/…`",
            self.b.name()
        );
        assert!(
            self.keys(what, &self.key(b"no-such-prefix/"), None, 100)
                .is_empty(),
            "[{}] {what}: a prefix with no keys must return nothing",
            self.b.name()
        );
        // Large values cost nothing: the keys of the 1 MiB values come back
        // without them (checked for cost by the counting wrapper in
        // tests/it; here for the result).
        let k = self.key(b"keys-only/big");
        self.apply(what, vec![put(k.clone(), &vec![7u8; LARGE])]);
        assert_eq!(
            self.keys(what, &self.key(b"keys-only/"), None, 10),
            vec![b"keys-only/big".to_vec()],
            "[{}] {what}: a key with a large value must be listed",
            self.b.name()
        );
    }

    fn keys_scan_from_and_limit(&self) {
        // sort/ holds a, b, b0, m, z.
        let what = "keys scan from/limit";
        let p = self.key(b"sort/");
        let rel = |v: &[&[u8]]| v.iter().map(|n| n.to_vec()).collect::<Vec<_>>();
        assert!(
            self.keys(what, &p, None, 0).is_empty(),
            "[{}] {what}: limit 0 must return nothing",
            self.b.name()
        );
        assert_eq!(
            self.keys(what, &p, None, 2),
            rel(&[b"sort/a", b"sort/b"]),
            "[{}] {what}: limit 2 must return the first two keys",
            self.b.name()
        );
        assert_eq!(
            self.keys(what, &p, Some(&self.key(b"sort/b")), 10),
            rel(&[b"sort/b", b"sort/b0", b"sort/m", b"sort/z"]),
            "[{}] {what}: `from` is inclusive",
            self.b.name()
        );
        assert_eq!(
            self.keys(what, &p, Some(&self.key(b"sort/b\x00")), 10),
            rel(&[b"sort/b0", b"sort/m", b"sort/z"]),
            "[{}] {what}: `from` = key + 0x00 continues strictly after the key",
            self.b.name()
        );
        assert_eq!(
            self.keys(what, &p, Some(&self.key(b"sort/c")), 1),
            rel(&[b"sort/m"]),
            "[{}] {what}: `from` between keys starts at the next key, limit applies after it",
            self.b.name()
        );
        assert_eq!(
            self.keys(what, &p, Some(&self.key(b"iso/")), 2),
            rel(&[b"sort/a", b"sort/b"]),
            "[{}] {what}: a `from` before the prefix starts at the prefix",
            self.b.name()
        );
        assert!(
            self.keys(what, &p, Some(&self.key(b"sort0")), 10)
                .is_empty(),
            "[{}] {what}: a `from` past the prefix returns nothing (and no key of a neighbour)",
            self.b.name()
        );
        assert!(
            self.keys(what, &p, Some(&self.key(b"sort/z\x00")), 10)
                .is_empty(),
            "[{}] {what}: a `from` after the last key returns nothing",
            self.b.name()
        );
    }

    fn keys_scan_skips_subtrees(&self) {
        // iso/ holds a, a/1, a/2, ab, b/1: skipping `a/` lands on `ab`.
        let what = "keys scan past a subtree";
        let p = self.key(b"iso/");
        let past = prefix_end(&self.key(b"iso/a/")).expect("a/ has an end");
        assert_eq!(
            self.keys(what, &p, Some(&past), 10),
            vec![b"iso/ab".to_vec(), b"iso/b/1".to_vec()],
            "[{}] {what}: `from` = prefix_end(`a/`) must skip every key below `a/`",
            self.b.name()
        );
    }

    fn keys_scan_binary_edges(&self) {
        // Runs after binary_keys_and_values: bin/ holds \x00, \x00\x00,
        // \xfe\xff, \xff, \xff\x00, \xff\xff.
        let what = "keys scan of binary keys";
        let p = self.key(b"bin/\xff");
        assert_eq!(
            self.keys(what, &p, None, 10),
            vec![
                b"bin/\xff".to_vec(),
                b"bin/\xff\x00".to_vec(),
                b"bin/\xff\xff".to_vec()
            ],
            "[{}] {what}: a prefix ending in 0xFF must return exactly its keys",
            self.b.name()
        );
        assert_eq!(
            self.keys(what, &p, Some(&self.key(b"bin/\xff\x00\x00")), 10),
            vec![b"bin/\xff\xff".to_vec()],
            "[{}] {what}: `from` inside a 0xFF prefix",
            self.b.name()
        );
        let past = prefix_end(&self.key(b"bin/\xfe")).expect("has an end");
        assert_eq!(
            self.keys(what, &self.key(b"bin/"), Some(&past), 1),
            vec![b"bin/\xff".to_vec()],
            "[{}] {what}: skipping `\\xfe` lands on `\\xff`",
            self.b.name()
        );
    }

    fn binary_keys_and_values(&self) {
        let what = "binary keys and values";
        let value: Vec<u8> = (0..=255u8).chain([0, 0xFF, 0]).collect();
        let keys: [&[u8]; 6] = [
            b"bin/\x00",
            b"bin/\x00\x00",
            b"bin/\xfe\xff",
            b"bin/\xff",
            b"bin/\xff\x00",
            b"bin/\xff\xff",
        ];
        self.apply(
            what,
            keys.iter().map(|n| put(self.key(n), &value)).collect(),
        );
        for n in keys {
            assert_eq!(
                self.get(what, &self.key(n)),
                Some(value.clone()),
                "[{}] {what}: a value with 0x00 and 0xFF bytes must round-trip under a binary key",
                self.b.name()
            );
        }
        assert_eq!(
            self.scan_keys(what, &self.key(b"bin/"), None),
            keys.iter().map(|n| n.to_vec()).collect::<Vec<_>>(),
            "[{}] {what}: binary keys must sort bytewise (0x00 first, 0xFF last)",
            self.b.name()
        );
        assert_eq!(
            self.scan_keys(what, &self.key(b"bin/\xff"), None),
            vec![
                b"bin/\xff".to_vec(),
                b"bin/\xff\x00".to_vec(),
                b"bin/\xff\xff".to_vec()
            ],
            "[{}] {what}: a prefix ending in 0xFF must return exactly its keys",
            self.b.name()
        );
        assert_eq!(
            self.scan_keys(what, &self.key(b"bin/\x00"), None),
            vec![b"bin/\x00".to_vec(), b"bin/\x00\x00".to_vec()],
            "[{}] {what}: a prefix ending in 0x00 must return exactly its keys",
            self.b.name()
        );
    }

    fn empty_value(&self) {
        let what = "empty value";
        let k = self.key(b"empty/k");
        self.apply(what, vec![put(k.clone(), b"")]);
        assert_eq!(
            self.get(what, &k),
            Some(Vec::new()),
            "[{}] {what}: an empty value must be stored and differ from a missing key",
            self.b.name()
        );
        assert_eq!(
            self.scan(what, &self.key(b"empty/"), None),
            vec![(k, Vec::new())],
            "[{}] {what}: a scan must return a key whose value is empty",
            self.b.name()
        );
    }

    fn large_values(&self) {
        // One value per batch: etcd refuses requests over 1.5 MiB by default.
        let what = "1 MiB values";
        let count = 5u8;
        let big = |i: u8| -> Vec<u8> { (0..LARGE).map(|j| (j % 251) as u8 ^ i).collect() };
        for i in 0..count {
            self.apply(what, vec![put(self.key(&[b'L', b'/', i]), &big(i))]);
        }
        let got = self.get(what, &self.key(b"L/\x00"));
        assert!(
            got.as_deref() == Some(&big(0)[..]),
            "[{}] {what}: a 1 MiB value must round-trip (got {:?} bytes)",
            self.b.name(),
            got.map(|v| v.len())
        );
        let all = self.scan(what, &self.key(b"L/"), None);
        assert_eq!(
            all.len(),
            usize::from(count),
            "[{}] {what}: a scan over several 1 MiB values must return them all",
            self.b.name()
        );
        for (i, (_, v)) in (0..count).zip(&all) {
            assert!(
                v == &big(i),
                "[{}] {what}: scanned 1 MiB value {i} must be intact",
                self.b.name()
            );
        }
    }

    fn leaves_nothing_behind(&self) {
        // Delete everything the suite wrote, in batches, and check it is gone.
        let what = "cleanup";
        let keys: Vec<Vec<u8>> = self
            .scan(what, &self.root, None)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for chunk in keys.chunks(100) {
            self.apply(what, chunk.iter().cloned().map(del).collect());
        }
        assert!(
            self.scan(what, &self.root, None).is_empty(),
            "[{}] {what}: deleting every key must leave the prefix empty",
            self.b.name()
        );
    }
}

/// The destructive part of the contract: `replace_all` leaves exactly the
/// given pairs. Run only on a backend (or etcd prefix) of its own.
pub(crate) fn run_replace_all(b: &dyn Backend) {
    b.apply(vec![
        put(b"old/a".to_vec(), b"1"),
        put(b"zzz".to_vec(), b"2"),
    ])
    .expect("seed");
    // More pairs than one etcd transaction holds, and more bytes than one
    // request carries.
    let pairs: KvPairs = (0..300u32)
        .map(|i| {
            (
                format!("new/{i:05}").into_bytes(),
                vec![(i % 251) as u8; 8 << 10],
            )
        })
        .collect();
    b.replace_all(pairs.clone()).expect("replace_all");
    assert_eq!(
        b.scan_prefix(b"", None).expect("scan"),
        pairs,
        "{}: replace_all leaves exactly the given pairs",
        b.name()
    );
    b.replace_all(Vec::new()).expect("replace_all with nothing");
    assert!(
        b.scan_prefix(b"", None).expect("scan").is_empty(),
        "{}: emptied",
        b.name()
    );
}
