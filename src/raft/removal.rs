//! A node removed from the cluster: the rule by which it knows, and the
//! `removed` file in its data dir that keeps it out after a restart.
//!
//! Invariants:
//! - A node counts itself removed only on evidence from the log: a
//!   *committed* membership (its own, or one a peer sent) that does not hold
//!   it, at a log id after a committed membership that did ([`judge`]). A
//!   node that never was a member (a joiner) is never "removed", and a
//!   stale peer cannot remove anyone: its membership is older than the one
//!   that holds the node.
//! - Once removed, always removed for this data dir: the record is written
//!   durably before the node acts on it, and is read at every start. Only a
//!   wiped data dir (a new incarnation) may join again.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::replica::Member;
use super::types::typ;

/// Name of the removal record in the data dir.
pub const REMOVED_FILE: &str = "removed";

/// This node was removed from the cluster; the record in its data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removal {
    /// This node's id.
    pub node_id: typ::NodeId,
    /// The log index of the committed membership that no longer holds it.
    pub log_index: u64,
    /// The members of that membership, as this node learned them.
    pub members: Vec<Member>,
}

impl std::fmt::Display for Removal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {} was removed from the cluster at log index {}; it serves no requests; \
             wipe its data dir to rejoin as a new node",
            self.node_id, self.log_index
        )
    }
}

impl Removal {
    /// Read `data_dir/removed`, if there is one. An unreadable record is an
    /// error (naming the file), never "not removed".
    pub fn load(data_dir: &Path) -> Result<Option<Removal>, String> {
        let path = data_dir.join(REMOVED_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: unreadable: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Write the record to `data_dir/removed` (JSON: incarnations are full
    /// u64s, which TOML cannot hold; temp file, fsync, rename, fsync dir).
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::data_dir::write_durably(data_dir, REMOVED_FILE, &text)
    }
}

/// The members of `membership`, as [`Member`]s.
pub fn members_of(membership: &typ::StoredMembership) -> Vec<Member> {
    let voters: Vec<typ::NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| Member {
            id: *id,
            node: node.clone(),
            voter: voters.contains(id),
        })
        .collect()
}

/// Whether `me` was removed, given `included`, the latest log id of a
/// committed membership that held it (None: it never was a member), and
/// `committed`, a committed membership: removed when `committed` does not
/// hold it and comes after `included`.
pub fn judge(
    me: typ::NodeId,
    included: Option<typ::LogId>,
    committed: &typ::StoredMembership,
) -> Option<Removal> {
    let included = included?;
    let at = (*committed.log_id())?;
    if at <= included || committed.membership().get_node(&me).is_some() {
        return None;
    }
    Some(Removal {
        node_id: me,
        log_index: at.index,
        members: members_of(committed),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::raft::types::NodeInfo;

    fn membership(index: u64, voters: &[u64], learners: &[u64]) -> typ::StoredMembership {
        let node = |id: u64| NodeInfo {
            api_addr: format!("a{id}:1"),
            cluster_addr: format!("c{id}:2"),
            incarnation: u64::MAX - id,
        };
        let nodes: BTreeMap<u64, NodeInfo> = voters
            .iter()
            .chain(learners)
            .map(|id| (*id, node(*id)))
            .collect();
        let config = vec![voters.iter().copied().collect::<BTreeSet<u64>>()];
        typ::StoredMembership::new(
            Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(1, 1),
                index,
            )),
            openraft::Membership::new(config, nodes),
        )
    }

    fn log_id(index: u64) -> Option<typ::LogId> {
        Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(1, 1),
            index,
        ))
    }

    #[test]
    fn only_a_later_committed_membership_without_the_node_removes_it() {
        let without = membership(9, &[1, 2], &[]);
        let removal = judge(3, log_id(5), &without).expect("removed at 9");
        assert_eq!((removal.node_id, removal.log_index), (3, 9));
        let ids: Vec<u64> = removal.members.iter().map(|m| m.id).collect();
        assert_eq!(ids, [1, 2]);
        assert!(removal.to_string().contains("node 3 was removed"));

        // A joiner was never a member: nothing to remove.
        assert_eq!(judge(3, None, &without), None);
        // A stale peer's membership, older than the one holding the node.
        assert_eq!(judge(3, log_id(9), &membership(9, &[1, 2], &[])), None);
        assert_eq!(judge(3, log_id(12), &without), None);
        // Still a member: as voter or as learner.
        assert_eq!(judge(3, log_id(5), &membership(9, &[1, 2, 3], &[])), None);
        assert_eq!(judge(3, log_id(5), &membership(9, &[1, 2], &[3])), None);
    }

    #[test]
    fn the_record_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Removal::load(dir.path()).unwrap(), None);
        let removal = judge(3, log_id(5), &membership(9, &[1, 2], &[4])).unwrap();
        removal.save(dir.path()).unwrap();
        assert_eq!(Removal::load(dir.path()).unwrap(), Some(removal));
        std::fs::write(dir.path().join(REMOVED_FILE), r#"{"node_id": 3}"#).unwrap();
        assert!(Removal::load(dir.path()).is_err());
    }
}
