//! `static-routes`: a route-proof source configured from a table, plus one-hop routes to live
//! neighbours.
//!
//! * The table comes from the plugin's configuration (`routes = [{ dest, via, cost, confidence }]`)
//!   and is offered to the route store on the first observation, then refreshed on a timer well
//!   before its TTL runs out.
//! * Every neighbour whose link is up is a one-hop route to itself, costed by the measured round
//!   trip (microseconds; 1,000 when none was measured). A link going down withdraws it; a new
//!   session of the neighbour replaces the old entry.
//! * What was learned from links survives a hot swap through `snapshot`/`restore`.
//!
//! It is the smallest proof source that exercises every part of the contract; the learning
//! sources (ACK traces, route tokens, a directory) build on the same shape.

use std::collections::BTreeMap;

use routefabric_plugin_sdk::cbor;
use routefabric_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Cost of a link whose round trip was never measured, in the first-party unit (µs).
pub const UNMEASURED_LINK_COST: u32 = 1_000;
/// Timer token of the table refresh.
const REFRESH_TIMER: u64 = 1;

/// One configured route.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StaticRoute {
    /// Destination.
    pub dest: NodeId,
    /// Next hop toward it.
    pub via: NodeId,
    /// Cost (µs); default 1,000.
    #[serde(default = "default_cost")]
    pub cost: u32,
    /// Confidence in [0, 1]; default 1.0.
    #[serde(default = "default_confidence")]
    pub confidence: f32,
}

fn default_cost() -> u32 {
    UNMEASURED_LINK_COST
}

fn default_confidence() -> f32 {
    1.0
}

/// Configuration (CBOR of the plugin's config section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The static table. Default: empty.
    pub routes: Vec<StaticRoute>,
    /// TTL of offered table routes, ms; they are re-offered every half TTL. Default 60,000.
    pub table_ttl_ms: u32,
    /// TTL of neighbour routes, ms; refreshed by every link sample. Default 30,000.
    pub link_ttl_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            routes: Vec::new(),
            table_ttl_ms: 60_000,
            link_ttl_ms: 30_000,
        }
    }
}

/// A live neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Link {
    cost: u32,
    session: u64,
}

/// The plugin.
#[derive(Debug)]
pub struct StaticRoutes {
    config: Config,
    table: BTreeMap<NodeId, Vec<NextHop>>,
    links: BTreeMap<NodeId, Link>,
    announced: bool,
}

impl StaticRoutes {
    fn link_hop(&self, peer: NodeId, link: &Link) -> NextHop {
        NextHop {
            via: peer,
            cost: link.cost,
            ttl_ms: self.config.link_ttl_ms,
            confidence: 1.0,
        }
    }

    fn announce(&self, actions: &mut Vec<Action>) {
        for (dest, hops) in &self.table {
            actions.push(Action::Offer {
                dest: *dest,
                hops: hops.clone(),
            });
        }
        actions.push(Action::SetTimer {
            token: REFRESH_TIMER,
            after_ms: (self.config.table_ttl_ms / 2).max(1),
        });
    }
}

impl ProofSource for StaticRoutes {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "static-routes",
            env!("CARGO_PKG_VERSION"),
            "routes from a configured table plus one-hop routes to live neighbours",
        )
    }

    fn init(config: &[u8], self_id: NodeId) -> Result<Self, String> {
        let config: Config = cbor::config(config)?;
        if config.table_ttl_ms == 0 || config.link_ttl_ms == 0 {
            return Err("table_ttl_ms and link_ttl_ms must be > 0".to_owned());
        }
        let mut table: BTreeMap<NodeId, Vec<NextHop>> = BTreeMap::new();
        for route in &config.routes {
            if route.dest == self_id {
                return Err(format!("a route to this node itself ({})", route.dest));
            }
            if !(0.0..=1.0).contains(&route.confidence) {
                return Err(format!(
                    "confidence of the route to {} must be in [0, 1], got {}",
                    route.dest, route.confidence
                ));
            }
            table.entry(route.dest).or_default().push(NextHop {
                via: route.via,
                cost: route.cost,
                ttl_ms: config.table_ttl_ms,
                confidence: route.confidence,
            });
        }
        for hops in table.values_mut() {
            hops.sort_by_key(|h| h.cost);
        }
        Ok(StaticRoutes {
            config,
            table,
            links: BTreeMap::new(),
            announced: false,
        })
    }

    fn observe(&mut self, _now: Millis, observations: &[Observation]) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.announced {
            self.announced = true;
            self.announce(&mut actions);
        }
        for observation in observations {
            match observation {
                Observation::Link(sample) if sample.up => {
                    let cost = sample.rtt_us.unwrap_or(UNMEASURED_LINK_COST).max(1);
                    let link = Link {
                        cost,
                        session: sample.session,
                    };
                    self.links.insert(sample.peer, link);
                    actions.push(Action::Offer {
                        dest: sample.peer,
                        hops: vec![self.link_hop(sample.peer, &link)],
                    });
                }
                Observation::Link(sample) if self.links.remove(&sample.peer).is_some() => {
                    actions.push(Action::Withdraw(sample.peer));
                }
                Observation::Timer(REFRESH_TIMER) => self.announce(&mut actions),
                _ => {}
            }
        }
        actions
    }

    fn query(&mut self, _now: Millis, dest: &NodeId) -> Vec<NextHop> {
        let mut hops: Vec<NextHop> = self.table.get(dest).cloned().unwrap_or_default();
        if let Some(link) = self.links.get(dest) {
            hops.push(self.link_hop(*dest, link));
            hops.sort_by_key(|h| h.cost);
        }
        hops
    }

    fn snapshot(&self) -> Vec<u8> {
        cbor::encode(&self.links)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.links = cbor::decode(state)?;
        Ok(())
    }
}

routefabric_plugin_sdk::export_proof_source!(StaticRoutes);

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId::from_index(n)
    }

    fn config(routes: Vec<StaticRoute>) -> Vec<u8> {
        cbor::encode(&Config {
            routes,
            ..Config::default()
        })
    }

    fn link(peer: u64, up: bool, rtt_us: Option<u32>) -> Observation {
        Observation::Link(LinkSample {
            peer: id(peer),
            up,
            rtt_us,
            session: 1,
        })
    }

    #[test]
    fn table_routes_are_offered_once_then_on_the_refresh_timer() {
        let route = StaticRoute {
            dest: id(9),
            via: id(2),
            cost: 5_000,
            confidence: 0.5,
        };
        let mut p = StaticRoutes::init(&config(vec![route]), id(1)).unwrap();
        let first = p.observe(0, &[]);
        assert!(
            matches!(&first[0], Action::Offer { dest, hops } if *dest == id(9) && hops[0].via == id(2))
        );
        assert!(matches!(
            first[1],
            Action::SetTimer {
                token: REFRESH_TIMER,
                after_ms: 30_000
            }
        ));
        assert!(p.observe(1, &[]).is_empty());
        let refresh = p.observe(30_000, &[Observation::Timer(REFRESH_TIMER)]);
        assert_eq!(refresh.len(), 2);
        assert_eq!(p.query(0, &id(9))[0].cost, 5_000);
    }

    #[test]
    fn links_become_routes_and_go_when_the_link_goes() {
        let mut p = StaticRoutes::init(&[], id(1)).unwrap();
        let actions = p.observe(0, &[link(2, true, Some(700)), link(3, true, None)]);
        // The empty table still sets its refresh timer; then one offer per link.
        assert_eq!(actions.len(), 3);
        assert_eq!(p.query(0, &id(2))[0].cost, 700);
        assert_eq!(p.query(0, &id(3))[0].cost, UNMEASURED_LINK_COST);
        let actions = p.observe(1, &[link(2, false, None)]);
        assert_eq!(actions, vec![Action::Withdraw(id(2))]);
        assert!(p.query(1, &id(2)).is_empty());
        // A second "down" for the same peer withdraws nothing.
        assert!(p.observe(2, &[link(2, false, None)]).is_empty());
    }

    #[test]
    fn a_link_route_and_a_table_route_are_ranked_by_cost() {
        let route = StaticRoute {
            dest: id(2),
            via: id(3),
            cost: 300,
            confidence: 1.0,
        };
        let mut p = StaticRoutes::init(&config(vec![route]), id(1)).unwrap();
        p.observe(0, &[link(2, true, Some(900))]);
        let hops = p.query(0, &id(2));
        assert_eq!(
            hops.iter().map(|h| h.via).collect::<Vec<_>>(),
            vec![id(3), id(2)]
        );
    }

    #[test]
    fn snapshot_restores_learned_links() {
        let mut old = StaticRoutes::init(&[], id(1)).unwrap();
        old.observe(0, &[link(2, true, Some(700))]);
        let mut new = StaticRoutes::init(&[], id(1)).unwrap();
        new.restore(&old.snapshot()).unwrap();
        assert_eq!(new.query(0, &id(2))[0].cost, 700);
        assert!(new.restore(b"\xff garbage").is_err());
    }

    #[test]
    fn bad_config_is_refused_with_a_reason() {
        assert!(
            StaticRoutes::init(b"\xff\x00", id(1))
                .unwrap_err()
                .contains("configuration")
        );
        let to_self = StaticRoute {
            dest: id(1),
            via: id(2),
            cost: 1,
            confidence: 1.0,
        };
        assert!(StaticRoutes::init(&config(vec![to_self]), id(1)).is_err());
        let nan = StaticRoute {
            dest: id(5),
            via: id(2),
            cost: 1,
            confidence: f32::NAN,
        };
        assert!(StaticRoutes::init(&config(vec![nan]), id(1)).is_err());
    }
}
