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
            channel: t.channel.clone(),
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
        core::Observation::Custom { kind, data } => {
            wit::Observation::Custom(wit::CustomObservation {
                kind: kind.clone(),
                data: data.clone(),
            })
        }
    }
}

pub(crate) fn action_in(a: wit::Action) -> core::Action {
    match a {
        wit::Action::Offer(o) => core::Action::Offer {
            dest: id_in(o.dest),
            hops: o.hops.into_iter().map(hop_in).collect(),
        },
        wit::Action::Withdraw(dest) => core::Action::Withdraw(id_in(dest)),
        wit::Action::Send(s) => core::Action::Send {
            to: id_in(s.to),
            data: s.data,
        },
        wit::Action::SetTimer(t) => core::Action::SetTimer {
            token: t.token,
            after_ms: t.after_ms,
        },
    }
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
