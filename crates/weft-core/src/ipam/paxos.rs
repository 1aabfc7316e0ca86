//! Consensus on the initial ring (Weave's `ipam/paxos`): single-decree Paxos where every
//! elector plays every role and the whole state is gossiped as one map.
//!
//! The value agreed is a set of peer names; the allocator then splits the universe among them
//! ([`super::ring::Ring::claim_for_peers`]). Each node's claims (its promise, and the proposal it
//! accepted with its value) are merged per node by keeping the higher proposal; a node thinks
//! after each merge and gossips when its own claims changed; consensus is a quorum of nodes
//! that accepted values of the same origin. A node is a peer name *and* its incarnation (UID):
//! acceptors must not forget promises, and a restarted peer has forgotten them, so it votes as
//! a new node.
//!
//! Observers (`--ipalloc-init observer`) never vote and gossip no Paxos state at all; that
//! absence is how electors recognise a ring request.

use std::collections::BTreeMap;

use weft_wire::PeerName;

/// Nodes a received Paxos state may name: far beyond any real mesh, a bound on the memory and
/// work one message costs.
pub const MAX_NODES: usize = 1 << 14;

/// Highest round accepted from a peer; each proposal adds one, so no real run comes near it,
/// and our next round cannot overflow.
pub const MAX_ROUND: u64 = u64::MAX / 2;

/// A voter: a peer name and the incarnation of its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId {
    /// The peer.
    pub name: PeerName,
    /// Its incarnation (`PeerUID`).
    pub uid: u64,
}

/// A proposal, ordered by round, then proposer name, then proposer UID; round 0 means "none"
/// and precedes every real proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProposalId {
    /// Round, from 1.
    pub round: u64,
    /// Who proposed it.
    pub proposer: NodeId,
}

impl ProposalId {
    fn is_valid(&self) -> bool {
        self.round > 0
    }
}

/// An accepted value with the proposal that first chose it, which makes values comparable by
/// origin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcceptedValue {
    /// The peers to split the ring among (unsorted, possibly repeated).
    pub value: Vec<PeerName>,
    /// The proposal that picked the value.
    pub origin: ProposalId,
}

/// What one node claims.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeClaims {
    /// The node accepts no proposal below this.
    pub promise: ProposalId,
    /// The proposal it accepted, if valid.
    pub accepted: ProposalId,
    /// The value of that proposal.
    pub accepted_value: AcceptedValue,
}

impl NodeClaims {
    /// Weave's `equals`: the value itself is identified by its origin.
    fn same(&self, other: &Self) -> bool {
        self.promise == other.promise
            && self.accepted == other.accepted
            && self.accepted_value.origin == other.accepted_value.origin
    }
}

/// The gossiped state: what every known node claims.
pub type GossipState = BTreeMap<NodeId, NodeClaims>;

/// A received Paxos state that cannot be real.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PaxosError {
    /// More nodes than [`MAX_NODES`].
    #[error("Paxos state names {0} nodes, more than {MAX_NODES}")]
    TooManyNodes(usize),
    /// A round beyond [`MAX_ROUND`].
    #[error("Paxos round {0} is impossible")]
    ImpossibleRound(u64),
    /// A value naming more peers than [`MAX_NODES`].
    #[error("Paxos value names {0} peers, more than {MAX_NODES}")]
    ValueTooLarge(usize),
}

/// Checks a received state before it is merged.
pub fn validate(state: &GossipState) -> Result<(), PaxosError> {
    if state.len() > MAX_NODES {
        return Err(PaxosError::TooManyNodes(state.len()));
    }
    for c in state.values() {
        for round in [
            c.promise.round,
            c.accepted.round,
            c.accepted_value.origin.round,
        ] {
            if round > MAX_ROUND {
                return Err(PaxosError::ImpossibleRound(round));
            }
        }
        if c.accepted_value.value.len() > MAX_NODES {
            return Err(PaxosError::ValueTooLarge(c.accepted_value.value.len()));
        }
    }
    Ok(())
}

/// One elector.
#[derive(Debug, Clone)]
pub struct Node {
    id: NodeId,
    quorum: u32,
    knows: GossipState,
}

impl Node {
    /// A node with no quorum yet (it is set when consensus is first needed).
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            quorum: 0,
            knows: GossipState::new(),
        }
    }

    /// Sets the number of nodes that make a quorum.
    pub fn set_quorum(&mut self, quorum: u32) {
        self.quorum = quorum;
    }

    /// The quorum (0 until set).
    pub fn quorum(&self) -> u32 {
        self.quorum
    }

    /// Nodes known so far, ourselves included once we proposed.
    pub fn known_nodes(&self) -> usize {
        self.knows.len()
    }

    /// The state to gossip.
    pub fn gossip_state(&self) -> &GossipState {
        &self.knows
    }

    /// Merges a received state (validated); returns whether we learnt anything.
    pub fn update(&mut self, from: &GossipState) -> bool {
        let mut changed = false;
        for (id, theirs) in from {
            match self.knows.get_mut(id) {
                Some(ours) => {
                    if ours.promise < theirs.promise {
                        ours.promise = theirs.promise;
                        changed = true;
                    }
                    if ours.accepted < theirs.accepted {
                        ours.accepted = theirs.accepted;
                        ours.accepted_value = theirs.accepted_value.clone();
                        changed = true;
                    }
                }
                None => {
                    self.knows.insert(*id, theirs.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Starts a new proposal (Paxos "prepare"): a round above every round seen, promised by
    /// ourselves. With a quorum of one it is accepted at once.
    pub fn propose(&mut self) {
        let round = self
            .knows
            .values()
            .map(|c| c.promise.round.max(c.accepted.round))
            .max()
            .unwrap_or(0);
        let id = self.id;
        let ours = self.knows.entry(id).or_default();
        ours.promise = ProposalId {
            round: round.saturating_add(1),
            proposer: id,
        };
        if self.quorum == 1 {
            self.think();
        }
    }

    /// The heart of the algorithm; returns whether our claims changed (then gossip them).
    pub fn think(&mut self) -> bool {
        let mut ours = self.knows.get(&self.id).cloned().unwrap_or_default();
        // Promise: follow the highest promise around.
        if let Some(highest) = self.knows.values().map(|c| c.promise).max() {
            if ours.promise < highest {
                ours.promise = highest;
            }
        }
        // Accept request: our proposal, promised by a quorum, is accepted with the best value
        // already accepted among those nodes, else with every node name we know.
        if ours.promise.proposer == self.id {
            let mut count = 0u32;
            let mut best = ProposalId::default();
            let mut best_value = AcceptedValue::default();
            for c in self.knows.values() {
                if c.promise == ours.promise {
                    count += 1;
                    if best < c.accepted {
                        best = c.accepted;
                        best_value = c.accepted_value.clone();
                    }
                }
            }
            if self.quorum > 0 && count >= self.quorum {
                if !best.is_valid() {
                    best_value = AcceptedValue {
                        value: self.knows.keys().map(|n| n.name).collect(),
                        origin: ours.promise,
                    };
                }
                ours.accepted = ours.promise;
                ours.accepted_value = best_value;
            }
        }
        // Accepted: if someone accepted the proposal we promised, accept it too.
        if let Some(c) = self.knows.values().find(|c| c.accepted == ours.promise) {
            ours.accepted = c.accepted;
            ours.accepted_value = c.accepted_value.clone();
        }
        let changed = !self
            .knows
            .get(&self.id)
            .cloned()
            .unwrap_or_default()
            .same(&ours);
        if changed {
            self.knows.insert(self.id, ours);
        }
        changed
    }

    /// The agreed value, once a quorum of nodes accepted values of one origin.
    pub fn consensus(&self) -> Option<&AcceptedValue> {
        if self.quorum == 0 {
            return None;
        }
        let mut counts: BTreeMap<ProposalId, u32> = BTreeMap::new();
        for c in self.knows.values() {
            if c.accepted.is_valid() {
                let n = counts.entry(c.accepted_value.origin).or_insert(0);
                *n += 1;
                if *n >= self.quorum {
                    return Some(&c.accepted_value);
                }
            }
        }
        None
    }
}

/// Our part in consensus.
#[derive(Debug, Clone)]
pub enum Participant {
    /// Votes and proposes.
    Elector(Node),
    /// Never votes; waits for a ring from someone else.
    Observer,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u64) -> Node {
        Node::new(NodeId {
            name: PeerName(n),
            uid: n * 100,
        })
    }

    /// Delivers every node's state to every other until nothing changes.
    fn exchange(nodes: &mut [Node]) {
        loop {
            let mut changed = false;
            for i in 0..nodes.len() {
                let state = nodes[i].gossip_state().clone();
                for (j, n) in nodes.iter_mut().enumerate() {
                    if i != j && n.update(&state) {
                        n.think();
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }

    #[test]
    fn ipam_paxos_quorum_of_one_decides_alone() {
        let mut a = node(1);
        a.set_quorum(1);
        a.propose();
        let v = a.consensus().unwrap();
        assert_eq!(v.value, vec![PeerName(1)]);
    }

    #[test]
    fn ipam_paxos_three_nodes_agree() {
        let mut nodes: Vec<Node> = (1..=3).map(node).collect();
        for n in &mut nodes {
            n.set_quorum(2);
        }
        // Two propose concurrently.
        nodes[0].propose();
        nodes[2].propose();
        exchange(&mut nodes);
        let values: Vec<_> = nodes.iter().map(|n| n.consensus().cloned()).collect();
        let first = values[0].clone().expect("consensus");
        assert!(values.iter().all(|v| v.as_ref() == Some(&first)));
        assert!(first.value.len() >= 2);
    }

    #[test]
    fn ipam_paxos_minority_cannot_decide_and_majority_value_sticks() {
        let mut nodes: Vec<Node> = (1..=5).map(node).collect();
        for n in &mut nodes {
            n.set_quorum(3);
        }
        // Two nodes alone: no consensus.
        nodes[0].propose();
        exchange(&mut nodes[..2]);
        assert!(nodes[0].consensus().is_none());
        // Three others decide.
        nodes[4].propose();
        exchange(&mut nodes[2..]);
        let decided = nodes[4].consensus().cloned().expect("consensus");
        // After healing, a new proposal from the minority keeps the decided value.
        exchange(&mut nodes);
        nodes[0].propose();
        exchange(&mut nodes);
        for n in &nodes {
            assert_eq!(
                n.consensus().map(|v| v.value.clone()),
                Some(decided.value.clone())
            );
        }
    }

    #[test]
    fn ipam_paxos_rejects_impossible_state() {
        let mut s = GossipState::new();
        s.insert(
            NodeId {
                name: PeerName(1),
                uid: 1,
            },
            NodeClaims {
                promise: ProposalId {
                    round: u64::MAX,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        assert_eq!(validate(&s), Err(PaxosError::ImpossibleRound(u64::MAX)));
    }
}
