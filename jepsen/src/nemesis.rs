//! The nemesis: faults injected into the `cluster/` containers on a
//! schedule, each healed before the next, with the time the cluster took to
//! serve on every node again.
//!
//! Invariant: at most one node (or one link) is faulty at a time, so a
//! majority can always make progress; and every fault is checked to have
//! actually happened (container state, firewall rules, membership answer),
//! so a run cannot pass by never breaking anything.

use std::sync::atomic::Ordering;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::api::Reply;
use crate::cluster::{Cluster, HarnessResult, NODES};
use crate::workload::Shared;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The leader cut off from both peers.
    PartitionLeader,
    /// A follower cut off: the leader stays in the majority.
    PartitionFollower,
    /// Only the link between the leader and one follower cut: every node
    /// still sees a majority, not the same one.
    PartitionRing,
    /// SIGKILL of a random node.
    Kill,
    /// SIGKILL of the leader.
    KillLeader,
    /// SIGSTOP-like freeze (docker pause) of a random node.
    Pause,
    /// Freeze of the leader.
    PauseLeader,
    /// Graceful restart of a random node (it comes back sealed).
    Restart,
    /// Remove a follower from the cluster, wipe it, add it back under a new
    /// node id.
    Churn,
}

impl Fault {
    /// Every fault, in the order `all` cycles through them.
    pub const ALL: [Fault; 9] = [
        Fault::PartitionLeader,
        Fault::Kill,
        Fault::PartitionRing,
        Fault::Pause,
        Fault::Churn,
        Fault::PartitionFollower,
        Fault::KillLeader,
        Fault::Restart,
        Fault::PauseLeader,
    ];

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::PartitionLeader => "partition-leader",
            Fault::PartitionFollower => "partition-follower",
            Fault::PartitionRing => "partition-ring",
            Fault::Kill => "kill-node",
            Fault::KillLeader => "kill-leader",
            Fault::Pause => "pause-node",
            Fault::PauseLeader => "pause-leader",
            Fault::Restart => "restart",
            Fault::Churn => "churn",
        }
    }

    /// Parse a `--nemesis` value: a comma-separated list of fault names or
    /// the groups `none`, `partition`, `kill` (both kills), `pause` (both
    /// pauses), `membership` (= churn) and `all`.
    pub fn parse_list(s: &str) -> Result<Vec<Fault>, String> {
        let mut out: Vec<Fault> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let group: Vec<Fault> = match part {
                "none" => vec![],
                "all" => Fault::ALL.to_vec(),
                "partition" => vec![
                    Fault::PartitionLeader,
                    Fault::PartitionFollower,
                    Fault::PartitionRing,
                ],
                "kill" => vec![Fault::Kill, Fault::KillLeader],
                "pause" => vec![Fault::Pause, Fault::PauseLeader],
                "membership" => vec![Fault::Churn],
                name => match Fault::ALL.iter().find(|f| f.name() == name) {
                    Some(f) => vec![*f],
                    None => {
                        return Err(format!(
                            "unknown nemesis {name:?}: none, all, partition, kill, pause, \
                             membership, or one of {}",
                            Fault::ALL.map(Fault::name).join(", ")
                        ))
                    }
                },
            };
            for f in group {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }
}

impl Serialize for Fault {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// One injected fault, as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// Which fault.
    pub fault: Fault,
    /// Containers it touched.
    pub targets: Vec<String>,
    /// When it began (ns on the run's clock).
    pub start_ns: u64,
    /// When healing began.
    pub heal_ns: Option<u64>,
    /// When every node served a linearizable read again.
    pub recovered_ns: Option<u64>,
    /// Whether the fault was seen to take effect.
    pub happened: bool,
    /// What was done, or why it did not happen.
    pub note: String,
}

impl FaultRecord {
    /// Seconds from heal to recovery.
    pub fn recovery_s(&self) -> Option<f64> {
        match (self.heal_ns, self.recovered_ns) {
            (Some(h), Some(r)) if r >= h => Some((r - h) as f64 / 1e9),
            _ => None,
        }
    }
}

/// When and how long faults last.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Faults to cycle through (round robin, so each gets its turn).
    pub faults: Vec<Fault>,
    /// Healthy time before each fault.
    pub quiet: Duration,
    /// How long each fault lasts.
    pub hold: Duration,
    /// How long recovery may take before the run notes it as not recovered.
    pub recover_limit: Duration,
}

/// The nemesis of one run.
pub struct Nemesis<'a> {
    shared: &'a Shared,
    schedule: Schedule,
    rng: SmallRng,
    /// Everything injected so far.
    pub records: Vec<FaultRecord>,
}

impl<'a> Nemesis<'a> {
    /// A nemesis over the shared cluster.
    pub fn new(shared: &'a Shared, schedule: Schedule, seed: u64) -> Self {
        Self {
            shared,
            schedule,
            rng: SmallRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973),
            records: Vec::new(),
        }
    }

    fn cluster(&self) -> &Cluster {
        &self.shared.cluster
    }

    fn now_ns(&self) -> u64 {
        self.shared.rec.now_ns()
    }

    fn wait(&self, d: Duration, deadline: Instant) {
        let until = (Instant::now() + d).min(deadline);
        while Instant::now() < until && !self.shared.stop.load(Ordering::Relaxed) {
            sleep(Duration::from_millis(50));
        }
    }

    /// Inject faults until `deadline`; every fault is healed before the
    /// next, and before returning.
    pub fn run(&mut self, deadline: Instant) {
        if self.schedule.faults.is_empty() {
            return;
        }
        let mut turn = 0;
        loop {
            self.wait(self.schedule.quiet, deadline);
            // Room for the fault and its heal before the clients stop.
            if Instant::now() + self.schedule.hold + Duration::from_secs(2) > deadline
                || self.shared.stop.load(Ordering::Relaxed)
            {
                return;
            }
            let fault = self.schedule.faults[turn % self.schedule.faults.len()];
            turn += 1;
            let mut record = self.inject(fault);
            if record.happened {
                self.wait(self.schedule.hold, deadline + Duration::from_secs(60));
            }
            record.heal_ns = Some(self.now_ns());
            match self.heal_all() {
                Ok(()) => {}
                Err(e) => record.note.push_str(&format!("; heal: {e}")),
            }
            record.recovered_ns = self.await_recovery();
            eprintln!(
                "[nemesis] {} {:?}: happened={} recovered in {}",
                fault.name(),
                record.targets,
                record.happened,
                record
                    .recovery_s()
                    .map_or("never".to_string(), |s| format!("{s:.2} s"))
            );
            self.records.push(record);
        }
    }

    fn random_node(&mut self) -> usize {
        self.rng.gen_range(0..NODES.len())
    }

    fn leader(&self) -> Option<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(l) = self.cluster().leader() {
                return Some(l);
            }
            sleep(Duration::from_millis(200));
        }
        None
    }

    fn follower(&mut self, leader: usize) -> usize {
        (leader + 1 + self.rng.gen_range(0..NODES.len() - 1)) % NODES.len()
    }

    fn inject(&mut self, fault: Fault) -> FaultRecord {
        let start_ns = self.now_ns();
        let mut record = FaultRecord {
            fault,
            targets: vec![],
            start_ns,
            heal_ns: None,
            recovered_ns: None,
            happened: false,
            note: String::new(),
        };
        let result = self.try_inject(fault, &mut record);
        record.start_ns = start_ns;
        if let Err(e) = result {
            record.note = e;
            record.happened = false;
        }
        record
    }

    fn try_inject(&mut self, fault: Fault, record: &mut FaultRecord) -> HarnessResult<()> {
        let needs_leader = matches!(
            fault,
            Fault::PartitionLeader
                | Fault::PartitionFollower
                | Fault::PartitionRing
                | Fault::KillLeader
                | Fault::PauseLeader
                | Fault::Churn
        );
        let leader = if needs_leader {
            Some(self.leader().ok_or("no leader to aim at")?)
        } else {
            None
        };
        let cluster = self.shared.cluster.clone();
        match fault {
            Fault::PartitionLeader | Fault::PartitionFollower => {
                let l = leader.unwrap_or(0);
                let n = if fault == Fault::PartitionLeader {
                    l
                } else {
                    self.follower(l)
                };
                record.targets = vec![NODES[n].into()];
                cluster.script("partition", &[NODES[n]])?;
                record.happened = cluster.partition_rules(n) > 0;
                record.note = format!("cut {} off (leader was {})", NODES[n], NODES[l]);
            }
            Fault::PartitionRing => {
                let l = leader.unwrap_or(0);
                let f = self.follower(l);
                record.targets = vec![NODES[l].into(), NODES[f].into()];
                cluster.script("cut", &[NODES[l], NODES[f]])?;
                record.happened = cluster.partition_rules(l) > 0 && cluster.partition_rules(f) > 0;
                record.note = format!("cut the link {} <-> {}", NODES[l], NODES[f]);
            }
            Fault::Kill | Fault::KillLeader => {
                let n = leader.unwrap_or_else(|| self.random_node());
                record.targets = vec![NODES[n].into()];
                cluster.script("kill", &[NODES[n]])?;
                record.happened = cluster.container_state(n) != "running";
                record.note = format!("SIGKILL {}", NODES[n]);
            }
            Fault::Pause | Fault::PauseLeader => {
                let n = leader.unwrap_or_else(|| self.random_node());
                record.targets = vec![NODES[n].into()];
                cluster.script("pause", &[NODES[n]])?;
                record.happened = cluster.container_state(n) == "paused";
                record.note = format!("paused {}", NODES[n]);
            }
            Fault::Restart => {
                let n = self.random_node();
                record.targets = vec![NODES[n].into()];
                cluster.script("restart", &[NODES[n]])?;
                // A restarted node comes back sealed: that is the fault.
                record.happened = matches!(cluster.status(n), Some(s) if s.sealed);
                record.note = format!("restarted {} (back sealed)", NODES[n]);
            }
            Fault::Churn => {
                let l = leader.unwrap_or(0);
                let f = self.follower(l);
                record.targets = vec![NODES[f].into()];
                let old = cluster
                    .status(f)
                    .ok_or_else(|| format!("{} does not answer", NODES[f]))?
                    .node_id;
                let keys = cluster.unseal_keys();
                let mut removed = false;
                let mut last = String::new();
                for _ in 0..10 {
                    let at = cluster.leader().unwrap_or(l);
                    match cluster.api(at).raft_remove(old, &keys) {
                        Reply::Ok(_) => {
                            removed = true;
                            break;
                        }
                        other => last = other.describe(),
                    }
                    sleep(Duration::from_millis(500));
                }
                if !removed {
                    return Err(format!("removing node {old} ({}): {last}", NODES[f]));
                }
                let new = cluster.fresh_node_id();
                cluster.script("replace", &[NODES[f], &new.to_string()])?;
                record.happened = matches!(cluster.status(f), Some(s) if s.node_id == new);
                record.note = format!("removed node {old} ({}), re-added as node {new}", NODES[f]);
            }
        }
        Ok(())
    }

    /// Undo every fault: unpause, start what is down, drop partition rules,
    /// unseal.
    pub fn heal_all(&self) -> HarnessResult<()> {
        let cluster = self.cluster();
        for (i, name) in NODES.iter().enumerate() {
            match cluster.container_state(i).as_str() {
                "paused" => cluster.script("unpause", &[name])?,
                "running" => {}
                _ => cluster.script("restart", &[name])?,
            }
        }
        cluster.script("heal", &[])?;
        cluster.unseal_all(self.schedule.recover_limit)
    }

    /// Wait until every node serves a linearizable read; the time it did,
    /// or `None` after the recovery limit.
    pub fn await_recovery(&self) -> Option<u64> {
        let deadline = Instant::now() + self.schedule.recover_limit;
        let apis: Vec<_> = (0..NODES.len())
            .map(|i| self.cluster().api_with_timeout(i, Duration::from_secs(2)))
            .collect();
        while Instant::now() < deadline {
            let serving = apis.iter().all(|api| {
                let r = api.get(&self.shared.token, "canary", false);
                matches!(r, Reply::Ok(_)) || r.is_status(404)
            });
            if serving {
                return Some(self.now_ns());
            }
            // A node restarted by a heal may still be sealed.
            let _ = self.cluster().unseal_all(Duration::from_secs(1));
            sleep(Duration::from_millis(100));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Fault;

    #[test]
    fn nemesis_names_and_groups_parse() {
        assert_eq!(Fault::parse_list("all").unwrap().len(), Fault::ALL.len());
        assert_eq!(Fault::parse_list("none").unwrap(), vec![]);
        assert_eq!(
            Fault::parse_list("kill-node,partition-ring,kill-leader").unwrap(),
            vec![Fault::Kill, Fault::PartitionRing, Fault::KillLeader]
        );
        assert_eq!(Fault::parse_list("membership").unwrap(), vec![Fault::Churn]);
        assert!(Fault::parse_list("chaos").is_err());
        for f in Fault::ALL {
            assert_eq!(Fault::parse_list(f.name()).unwrap(), vec![f]);
        }
    }
}
