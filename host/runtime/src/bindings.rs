//! The one `bindgen!` of the project, over the `host-view` world (both plugin interfaces exported,
//! the `host` interface imported). A plugin component exports only one of the interfaces; the
//! runtime loads the per-interface `GuestIndices` it needs.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "host-view",
});

pub(crate) use exports::routefabric::plugin::policy::{
    Guest as PolicyGuest, GuestIndices as PolicyIndices,
};
pub(crate) use exports::routefabric::plugin::proof::{
    Guest as ProofGuest, GuestIndices as ProofIndices,
};
pub(crate) use routefabric::plugin::host::{Host, LogLevel};
pub(crate) use routefabric::plugin::types as wit;

use routefabric_core::NodeId;
use routefabric_core::plugin as core;

pub(crate) fn id_in(id: wit::NodeId) -> NodeId {
    NodeId::from_words([id.w0, id.w1, id.w2, id.w3])
}

pub(crate) fn id_out(id: &NodeId) -> wit::NodeId {
    let [w0, w1, w2, w3] = id.to_words();
    wit::NodeId { w0, w1, w2, w3 }
}

fn ids_out(ids: &[NodeId]) -> Vec<wit::NodeId> {
    ids.iter().map(id_out).collect()
}

pub(crate) fn hop_in(h: wit::NextHop) -> core::NextHop {
    core::NextHop {
        via: id_in(h.via),
        cost: h.cost,
        ttl_ms: h.ttl_ms,
        confidence: h.confidence,
    }
}

fn hop_out(h: &core::NextHop) -> wit::NextHop {
    wit::NextHop {
        via: id_out(&h.via),
        cost: h.cost,
        ttl_ms: h.ttl_ms,
        confidence: h.confidence,
    }
}

pub(crate) fn info_in(i: wit::PluginInfo) -> core::PluginInfo {
    core::PluginInfo {
        name: i.name,
        version: i.version,
        description: i.description,
    }
}

pub(crate) fn observation_out(o: &core::Observation) -> wit::Observation {
    match o {
        core::Observation::Ack(a) => wit::Observation::Ack(wit::AckTrace {
            path: ids_out(&a.path),
            rtt_ms: a.rtt_ms,
        }),
        core::Observation::Token(t) => wit::Observation::Token(wit::RouteToken {
            tree: t.tree,
            path: ids_out(&t.path),
            issued_at_ms: t.issued_at_ms,
        }),
        core::Observation::Link(l) => wit::Observation::Link(wit::LinkSample {
            peer: id_out(&l.peer),
            up: l.up,
            rtt_us: l.rtt_us,
            session: l.session,
        }),
        core::Observation::Message(m) => wit::Observation::Message(wit::PeerMessage {
            sender: id_out(&m.sender),
            data: m.data.clone(),
        }),
        core::Observation::Timer(token) => wit::Observation::Timer(*token),
        core::Observation::Miss(dest) => wit::Observation::Miss(id_out(dest)),
        core::Observation::Custom { kind, data } => {
            wit::Observation::Custom(wit::CustomObservation {
                kind: kind.clone(),
                data: data.clone(),
            })
        }
    }
}

/// The guest's flat action list as core actions: consecutive offers toward the same
/// destination become one [`core::Action::Offer`], as the author wrote them.
pub(crate) fn actions_in(actions: Vec<wit::Action>) -> Vec<core::Action> {
    let mut out: Vec<core::Action> = Vec::with_capacity(actions.len());
    for a in actions {
        let action = match a {
            wit::Action::Offer(o) => {
                let dest = id_in(o.dest);
                let hop = hop_in(o.hop);
                if let Some(core::Action::Offer { dest: last, hops }) = out.last_mut()
                    && *last == dest
                {
                    hops.push(hop);
                    continue;
                }
                core::Action::Offer {
                    dest,
                    hops: vec![hop],
                }
            }
            wit::Action::Withdraw(dest) => core::Action::Withdraw(id_in(dest)),
            wit::Action::Send(s) => core::Action::Send {
                to: id_in(s.to),
                data: s.data,
            },
            wit::Action::SetTimer(t) => core::Action::SetTimer {
                token: t.token,
                after_ms: t.after_ms,
            },
        };
        out.push(action);
    }
    out
}

pub(crate) fn candidate_out(c: &core::Candidate) -> wit::Candidate {
    wit::Candidate {
        hop: hop_out(&c.hop),
        source: c.source.clone(),
        link_rtt_us: c.link_rtt_us,
    }
}

pub(crate) fn decision_in(d: wit::Decision) -> core::Decision {
    match d {
        wit::Decision::Send(plan) => core::Decision::Send(core::RoutePlan {
            hops: plan.hops.into_iter().map(id_in).collect(),
            copies: plan.copies,
        }),
        wit::Decision::Fallback => core::Decision::Fallback,
        wit::Decision::Drop => core::Decision::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(dest: u64, via: u64) -> wit::Action {
        wit::Action::Offer(wit::Offer {
            dest: id_out(&NodeId::from_index(dest)),
            hop: hop_out(&core::NextHop {
                via: NodeId::from_index(via),
                cost: 1,
                ttl_ms: 1_000,
                confidence: 1.0,
            }),
        })
    }

    fn vias(a: &core::Action) -> Option<(u64, Vec<u64>)> {
        let index = |id: &NodeId| id.to_words()[3];
        match a {
            core::Action::Offer { dest, hops } => {
                Some((index(dest), hops.iter().map(|h| index(&h.via)).collect()))
            }
            _ => None,
        }
    }

    #[test]
    fn consecutive_offers_toward_one_destination_become_one_offer() {
        let actions = actions_in(vec![
            offer(9, 1),
            offer(9, 2),
            offer(8, 1),
            wit::Action::Withdraw(id_out(&NodeId::from_index(7))),
            offer(9, 3),
        ]);
        let shape: Vec<_> = actions.iter().map(vias).collect();
        assert_eq!(
            shape,
            vec![
                Some((9, vec![1, 2])),
                Some((8, vec![1])),
                None,
                Some((9, vec![3])),
            ],
            "only adjacent offers merge, so the order of actions is kept"
        );
    }
}
