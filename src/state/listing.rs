//! One-level listings over a backend's keys.
//!
//! Invariant: a listing costs what its names cost. It reads keys only (never
//! a value), skips a folder's whole subtree once it has its name, and stops
//! as soon as it knows whether a name follows its limit; so neither the size
//! of the values nor the number of secrets below a folder changes its cost.

use crate::storage::{prefix_end, Backend, StorageError};

/// Most names one list call returns (the service's page size cap).
pub const MAX_LIST: usize = 10_000;

/// Keys a listing asks the backend for right after it skipped a folder; it
/// doubles (up to [`LIST_STEP_MAX`]) while pages hold only secrets' own names.
pub const LIST_STEP_MIN: usize = 16;
/// Most keys one step of a listing asks the backend for.
pub const LIST_STEP_MAX: usize = 1024;

/// One page of names and whether the listing stopped before its end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamePage {
    /// Names in key order.
    pub names: Vec<String>,
    /// Whether more names follow the last one (the page hit its limit).
    pub truncated: bool,
}

/// The first key after the name `name` of a one-level listing under `base`:
/// after the key itself for a secret's name, after its whole subtree for a
/// folder's (`name` ends in '/'). `None`: nothing can follow.
pub(crate) fn resume_after(base: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut key = base.to_vec();
    key.extend_from_slice(name.as_bytes());
    if name.ends_with('/') {
        prefix_end(&key)
    } else {
        key.push(0);
        Some(key)
    }
}

/// Names one level below the key prefix `base` (keys are `base` + a
/// '/'-separated path), starting at the key `from`, at most `limit` names
/// (with `limit` 0 no name, and `truncated` says whether one exists).
///
/// Costs what the names cost: only keys are read, never values; after a
/// folder `a/` the scan resumes past every key below `a/`, so a folder of a
/// million secrets costs one name and at most [`LIST_STEP_MIN`] keys; the
/// walk stops once it knows whether a name follows the `limit`-th. Each step
/// is one bounded `scan_keys` call (one short lock hold, or one request).
/// Steps read the store at different moments, so a page reflects writes
/// applied while it was built, as separate pages do.
pub fn list_level(
    backend: &dyn Backend,
    base: &[u8],
    mut from: Option<Vec<u8>>,
    limit: usize,
) -> Result<NamePage, StorageError> {
    let mut page = NamePage::default();
    let mut step = LIST_STEP_MIN;
    loop {
        // One key more than still needed tells whether the listing goes on.
        let want = step.min(limit - page.names.len() + 1);
        let keys = backend.scan_keys(base, from.as_deref(), want)?;
        let exhausted = keys.len() < want;
        let mut skipped = false;
        for key in keys {
            let rest = &key[base.len()..];
            if page.names.len() == limit {
                page.truncated = true;
                return Ok(page);
            }
            match rest.iter().position(|b| *b == b'/') {
                Some(i) => {
                    page.names
                        .push(String::from_utf8_lossy(&rest[..=i]).into_owned());
                    match prefix_end(&key[..base.len() + i + 1]) {
                        Some(next) => from = Some(next),
                        None => return Ok(page),
                    }
                    skipped = true;
                    break;
                }
                None => {
                    page.names.push(String::from_utf8_lossy(rest).into_owned());
                    let mut next = key;
                    next.push(0);
                    from = Some(next);
                }
            }
        }
        if exhausted && !skipped {
            return Ok(page);
        }
        step = if skipped {
            LIST_STEP_MIN
        } else {
            (step * 2).min(LIST_STEP_MAX)
        };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::keyspace::{kv_key, policy_key};
    use crate::state::State;
    use crate::storage::memory::MemoryBackend;
    use crate::storage::{BatchOp, KvPairs};

    /// A memory backend that counts what reads hand out: value bytes (from
    /// `get` and `scan_prefix`) and keys (from `scan_keys`).
    #[derive(Default)]
    struct Counting {
        inner: MemoryBackend,
        value_bytes: AtomicUsize,
        keys: AtomicUsize,
        key_calls: AtomicUsize,
    }

    impl Counting {
        fn reset(&self) {
            self.value_bytes.store(0, Ordering::SeqCst);
            self.keys.store(0, Ordering::SeqCst);
            self.key_calls.store(0, Ordering::SeqCst);
        }
        fn counts(&self) -> (usize, usize, usize) {
            (
                self.value_bytes.load(Ordering::SeqCst),
                self.keys.load(Ordering::SeqCst),
                self.key_calls.load(Ordering::SeqCst),
            )
        }
    }

    impl Backend for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            let v = self.inner.get(key)?;
            let n = v.as_ref().map_or(0, Vec::len);
            self.value_bytes.fetch_add(n, Ordering::SeqCst);
            Ok(v)
        }
        fn scan_prefix(
            &self,
            prefix: &[u8],
            limit: Option<usize>,
        ) -> Result<KvPairs, StorageError> {
            let pairs = self.inner.scan_prefix(prefix, limit)?;
            let n: usize = pairs.iter().map(|(_, v)| v.len()).sum();
            self.value_bytes.fetch_add(n, Ordering::SeqCst);
            Ok(pairs)
        }
        fn scan_keys(
            &self,
            prefix: &[u8],
            from: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<Vec<u8>>, StorageError> {
            let keys = self.inner.scan_keys(prefix, from, limit)?;
            self.keys.fetch_add(keys.len(), Ordering::SeqCst);
            self.key_calls.fetch_add(1, Ordering::SeqCst);
            Ok(keys)
        }
        fn apply(&self, batch: Vec<BatchOp>) -> Result<(), StorageError> {
            self.inner.apply(batch)
        }
        fn replace_all(&self, pairs: KvPairs) -> Result<(), StorageError> {
            self.inner.replace_all(pairs)
        }
    }

    fn state() -> (State, Arc<Counting>) {
        let b = Arc::new(Counting::default());
        (State::new(b.clone()), b)
    }

    /// Store raw bytes under secret paths of namespace `ns` (a listing never
    /// decodes them).
    fn secrets(b: &Counting, paths: impl IntoIterator<Item = String>, value: &[u8]) {
        for p in paths {
            b.inner.put_raw(&kv_key("ns", &p), value);
        }
    }

    /// Every page of a listing, following cursors; checks each page.
    fn all_pages(sm: &State, prefix: &str, limit: usize) -> (Vec<String>, usize) {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = sm
                .secret_names("ns", prefix, cursor.as_deref(), limit)
                .unwrap();
            pages += 1;
            assert!(page.names.len() <= limit, "a page holds at most the limit");
            names.extend(page.names.iter().cloned());
            if !page.truncated {
                return (names, pages);
            }
            assert_eq!(page.names.len(), limit, "only a full page is truncated");
            cursor = page.names.last().cloned();
            assert!(pages < 1000, "the listing must end");
        }
    }

    const MAX: usize = MAX_LIST;

    #[test]
    fn a_listing_past_the_limit_is_truncated_and_pages_cover_every_name_once() {
        // Steps: 3 x MAX_LIST + 7 secrets under app/, a few with 1 MiB values;
        // a first page is MAX_LIST names and says truncated; following the
        // cursor gives every name exactly once over 4 pages; no value byte
        // is read; keys read stay near the names returned.
        let (sm, b) = state();
        let count = 3 * MAX + 7;
        let names: Vec<String> = (0..count).map(|i| format!("s{i:06}")).collect();
        secrets(&b, names.iter().map(|n| format!("app/{n}")), b"small");
        secrets(
            &b,
            ["app/s000001", "app/s020000"].map(String::from),
            &vec![9u8; 1 << 20],
        );
        secrets(&b, ["other/x".to_string(), "apps".to_string()], b"v");
        b.reset();
        let first = sm.secret_names("ns", "app/", None, MAX).unwrap();
        assert!(first.truncated, "more than MAX_LIST names: truncated");
        assert_eq!(first.names.len(), MAX);
        assert_eq!(first.names[..], names[..MAX]);
        let (value_bytes, keys, _) = b.counts();
        assert_eq!(value_bytes, 0, "a listing reads no value");
        assert!(
            keys <= MAX + 1,
            "one page reads its names and one more key, read {keys}"
        );

        b.reset();
        let (all, pages) = all_pages(&sm, "app/", MAX);
        assert_eq!(pages, 4);
        assert_eq!(all, names, "pages in order cover every name exactly once");
        let unique: BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), count);
        let (value_bytes, keys, _) = b.counts();
        assert_eq!(value_bytes, 0, "paging reads no value");
        assert!(keys <= count + pages, "read {keys} keys for {count} names");
    }

    #[test]
    fn a_folder_costs_one_name_whatever_it_holds() {
        // Steps: a root with a leaf, a folder of 50 000 secrets, a folder of
        // one, another leaf; listing the root gives four names, reading a
        // bounded number of keys; paging with limit 1 gives the same names.
        let (sm, b) = state();
        secrets(
            &b,
            ["a".to_string(), "c/x".to_string(), "d".to_string()],
            b"v",
        );
        secrets(&b, (0..50_000).map(|i| format!("big/{i:05}/leaf")), b"v");
        b.reset();
        let page = sm.secret_names("ns", "", None, MAX).unwrap();
        assert_eq!(page.names, ["a", "big/", "c/", "d"]);
        assert!(!page.truncated);
        let (value_bytes, keys, calls) = b.counts();
        assert_eq!(value_bytes, 0);
        assert!(
            keys <= 4 * LIST_STEP_MIN && calls <= 4,
            "a folder is skipped, not walked: read {keys} keys in {calls} calls"
        );
        let (all, pages) = all_pages(&sm, "", 1);
        assert_eq!(all, ["a", "big/", "c/", "d"]);
        assert_eq!(pages, 4, "a last full page learns there is nothing more");
        // One level down, the folder's own children are each one name too.
        let page = sm.secret_names("ns", "big/", None, 3).unwrap();
        assert_eq!(page.names, ["00000/", "00001/", "00002/"]);
        assert!(page.truncated);
    }

    #[test]
    fn cursors_resume_after_leaves_and_folders() {
        // Steps: a leaf and a folder of the same name, neighbours that sort
        // between them; pages of one name each; a cursor that no longer
        // exists; a page that ends exactly at the last name.
        let (sm, b) = state();
        secrets(
            &b,
            ["a", "a!", "a/1", "a/2", "a0", "b"].map(String::from),
            b"v",
        );
        let (all, _) = all_pages(&sm, "", 1);
        assert_eq!(all, ["a", "a!", "a/", "a0", "b"], "names in key order");
        let (all, _) = all_pages(&sm, "", 2);
        assert_eq!(all, ["a", "a!", "a/", "a0", "b"]);
        let after = |c: &str, limit| sm.secret_names("ns", "", Some(c), limit).unwrap();
        assert_eq!(
            after("a/", 10).names,
            ["a0", "b"],
            "a folder cursor skips its subtree"
        );
        assert_eq!(after("a", 10).names, ["a!", "a/", "a0", "b"]);
        assert_eq!(after("a1", 10).names, ["b"], "a cursor need not exist");
        assert_eq!(
            after("b", 10),
            NamePage::default(),
            "nothing after the last"
        );
        let exact = sm.secret_names("ns", "", None, 5).unwrap();
        assert!(!exact.truncated, "exactly `limit` names is not truncated");
        let short = sm.secret_names("ns", "", None, 4).unwrap();
        assert!(short.truncated && short.names.last().map(String::as_str) == Some("a0"));
        assert!(sm
            .secret_names("ns", "zz/", None, 5)
            .unwrap()
            .names
            .is_empty());
        assert!(
            sm.secret_names("other", "", None, 5)
                .unwrap()
                .names
                .is_empty(),
            "another namespace sees nothing"
        );
    }

    #[test]
    fn policy_names_page_without_reading_policies() {
        // Steps: 25 policies with large bodies in one namespace and one in
        // another; pages of 10 cover the 25 once, in order; no value read.
        let (sm, b) = state();
        let names: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
        for n in &names {
            b.inner.put_raw(&policy_key("ns", n), &vec![1u8; 64 << 10]);
        }
        b.inner.put_raw(&policy_key("ns2", "q"), b"x");
        b.reset();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = sm.policy_names("ns", cursor.as_deref(), 10).unwrap();
            seen.extend(page.names.iter().cloned());
            if !page.truncated {
                break;
            }
            cursor = page.names.last().cloned();
        }
        assert_eq!(seen, names);
        let (value_bytes, keys, _) = b.counts();
        assert_eq!(value_bytes, 0, "policy listing reads no policy");
        assert!(keys <= 25 + 3);
    }
}
