//! Support code for the export macros. Not a public API: it changes with the WIT bindings.

pub use wit_bindgen;

/// Holds the one plugin instance of a component. A component instance is single-threaded; the
/// mutex only satisfies `static`'s `Sync` bound and is never contended.
#[derive(Debug)]
pub struct Slot<T>(std::sync::Mutex<Option<T>>);

impl<T> Slot<T> {
    /// An empty slot, before `init`.
    pub const fn new() -> Self {
        Slot(std::sync::Mutex::new(None))
    }

    /// Run `f` on the instance, or return `default` when `init` has not succeeded yet.
    pub fn with<R>(&self, default: R, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(plugin) => f(plugin),
            None => default,
        }
    }

    /// Install the instance built by `init`.
    pub fn set(&self, plugin: T) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(plugin);
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(target_arch = "wasm32")]
/// Bindings of the `proof-source` world; they also own the shared `types` and `host` modules.
pub mod proof_source {
    wit_bindgen::generate!({
        world: "proof-source",
        path: "../wit",
        generate_unused_types: true,
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "::routefabric_plugin_sdk::__private::proof_source",
        runtime_path: "::routefabric_plugin_sdk::__private::wit_bindgen::rt",
    });
}

#[cfg(target_arch = "wasm32")]
/// Bindings of the `routing-policy` world, sharing the types of [`proof_source`].
pub mod routing_policy {
    wit_bindgen::generate!({
        world: "routing-policy",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_world",
        default_bindings_module: "::routefabric_plugin_sdk::__private::routing_policy",
        runtime_path: "::routefabric_plugin_sdk::__private::wit_bindgen::rt",
        with: {
            "routefabric:plugin/types@0.1.0": crate::__private::proof_source::routefabric::plugin::types,
            "routefabric:plugin/host@0.1.0": crate::__private::proof_source::routefabric::plugin::host,
        },
    });
}

#[cfg(target_arch = "wasm32")]
/// What the generated `Guest` impls call: conversions between the WIT types and the core types,
/// and the calls into the plugin.
pub mod glue {
    use super::Slot;
    use super::proof_source::routefabric::plugin::types as wit;
    use routefabric_core::NodeId;
    use routefabric_core::plugin::{self as core, ProofSource, RoutingPolicy};

    fn id_in(id: wit::NodeId) -> NodeId {
        NodeId::from_words([id.w0, id.w1, id.w2, id.w3])
    }

    fn id_out(id: &NodeId) -> wit::NodeId {
        let [w0, w1, w2, w3] = id.to_words();
        wit::NodeId { w0, w1, w2, w3 }
    }

    fn ids_in(ids: Vec<wit::NodeId>) -> Vec<NodeId> {
        ids.into_iter().map(id_in).collect()
    }

    fn hop_in(h: wit::NextHop) -> core::NextHop {
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

    fn info_out(info: core::PluginInfo) -> wit::PluginInfo {
        wit::PluginInfo {
            name: info.name,
            version: info.version,
            description: info.description,
        }
    }

    fn observation_in(o: wit::Observation) -> core::Observation {
        match o {
            wit::Observation::Ack(a) => core::Observation::Ack(core::AckTrace {
                path: ids_in(a.path),
                rtt_ms: a.rtt_ms,
            }),
            wit::Observation::Token(t) => core::Observation::Token(core::RouteToken {
                tree: t.tree,
                path: ids_in(t.path),
                issued_at_ms: t.issued_at_ms,
            }),
            wit::Observation::Link(l) => core::Observation::Link(core::LinkSample {
                peer: id_in(l.peer),
                up: l.up,
                rtt_us: l.rtt_us,
                session: l.session,
            }),
            wit::Observation::Message(m) => core::Observation::Message(core::PeerMessage {
                sender: id_in(m.sender),
                data: m.data,
            }),
            wit::Observation::Timer(token) => core::Observation::Timer(token),
            wit::Observation::Miss(dest) => core::Observation::Miss(id_in(dest)),
            wit::Observation::Custom(c) => core::Observation::Custom {
                kind: c.kind,
                data: c.data,
            },
        }
    }

    /// Appends `a` to the guest's flat action list: an offer of n hops becomes n one-hop offers
    /// (the host regroups consecutive ones).
    fn push_action(out: &mut Vec<wit::Action>, a: core::Action) {
        match a {
            core::Action::Offer { dest, hops } => {
                let dest = id_out(&dest);
                out.extend(hops.iter().map(|h| {
                    wit::Action::Offer(wit::Offer {
                        dest,
                        hop: hop_out(h),
                    })
                }));
            }
            core::Action::Withdraw(dest) => out.push(wit::Action::Withdraw(id_out(&dest))),
            core::Action::Send { to, data } => out.push(wit::Action::Send(wit::SendRequest {
                to: id_out(&to),
                data,
            })),
            core::Action::SetTimer { token, after_ms } => {
                out.push(wit::Action::SetTimer(wit::TimerRequest { token, after_ms }))
            }
        }
    }

    fn candidate_in(c: wit::Candidate) -> core::Candidate {
        core::Candidate {
            hop: hop_in(c.hop),
            source: c.source,
            link_rtt_us: c.link_rtt_us,
        }
    }

    fn decision_out(d: core::Decision) -> wit::Decision {
        match d {
            core::Decision::Send(plan) => wit::Decision::Send(wit::RoutePlan {
                hops: plan.hops.iter().map(id_out).collect(),
                copies: plan.copies,
            }),
            core::Decision::Fallback => wit::Decision::Fallback,
            core::Decision::Drop => wit::Decision::Drop,
        }
    }

    /// `proof.describe`.
    pub fn describe_proof<T: ProofSource>() -> wit::PluginInfo {
        info_out(T::info())
    }

    /// `proof.init`.
    pub fn init_proof<T: ProofSource>(
        slot: &Slot<T>,
        config: &[u8],
        self_id: wit::NodeId,
    ) -> Result<(), String> {
        slot.set(T::init(config, id_in(self_id))?);
        Ok(())
    }

    /// `proof.observe`.
    pub fn observe<T: ProofSource>(
        slot: &Slot<T>,
        now: u64,
        observations: Vec<wit::Observation>,
    ) -> Vec<wit::Action> {
        let observations: Vec<core::Observation> =
            observations.into_iter().map(observation_in).collect();
        slot.with(Vec::new(), |p| {
            let actions = p.observe(now, &observations);
            let mut out = Vec::with_capacity(actions.len());
            for a in actions {
                push_action(&mut out, a);
            }
            out
        })
    }

    /// `proof.query`.
    pub fn query<T: ProofSource>(slot: &Slot<T>, now: u64, dest: wit::NodeId) -> Vec<wit::NextHop> {
        let dest = id_in(dest);
        slot.with(Vec::new(), |p| {
            p.query(now, &dest).iter().map(hop_out).collect()
        })
    }

    /// `proof.snapshot`.
    pub fn snapshot<T: ProofSource>(slot: &Slot<T>) -> Vec<u8> {
        slot.with(Vec::new(), |p| p.snapshot())
    }

    /// `proof.restore`.
    pub fn restore<T: ProofSource>(slot: &Slot<T>, state: &[u8]) -> Result<(), String> {
        slot.with(Err("restore called before init".to_owned()), |p| {
            p.restore(state)
        })
    }

    /// `policy.describe`.
    pub fn describe_policy<T: RoutingPolicy>() -> wit::PluginInfo {
        info_out(T::info())
    }

    /// `policy.init`.
    pub fn init_policy<T: RoutingPolicy>(
        slot: &Slot<T>,
        config: &[u8],
        self_id: wit::NodeId,
    ) -> Result<(), String> {
        slot.set(T::init(config, id_in(self_id))?);
        Ok(())
    }

    /// `policy.choose`.
    pub fn choose<T: RoutingPolicy>(
        slot: &Slot<T>,
        now: u64,
        dest: wit::NodeId,
        candidates: Vec<wit::Candidate>,
    ) -> wit::Decision {
        let dest = id_in(dest);
        let candidates: Vec<core::Candidate> = candidates.into_iter().map(candidate_in).collect();
        slot.with(wit::Decision::Fallback, |p| {
            decision_out(p.choose(now, &dest, &candidates))
        })
    }
}
