//! Scenario files: what network to simulate and which targets the run must meet.
//!
//! A scenario is a TOML file in the repository's `scenarios/` folder (also compiled into the
//! binary, so `routefabric sim --scenario million` works from anywhere) or any path.

use std::path::Path;

use routefabric_overlay::{fanout, membership};
use serde::{Deserialize, Serialize};

/// How trees are laid out over the writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// One tree per writer, rooted at that writer.
    #[default]
    PerWriter,
    /// One tree rooted at node 0 (a shard root); other writers publish through it.
    Shared,
}

/// Link model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Link {
    /// One-way latency range `[min, max]` in ms; each link draws a fixed value from it (so links
    /// stay FIFO). Default `[10, 50]` (iroh-gossip's simulator range).
    pub latency_ms: [u64; 2],
    /// Probability that a message is dropped. Default 0.
    pub loss: f64,
    /// Time after which a peer learns that a connection broke (or could not be opened), in ms.
    /// Default 200.
    pub detect_ms: u64,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            latency_ms: [10, 50],
            loss: 0.0,
            detect_ms: 200,
        }
    }
}

/// Churn: every `interval_ms`, `fraction` of the readers leave (crash) and as many new ones join.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Churn {
    /// Period in ms.
    pub interval_ms: u64,
    /// Fraction of the readers replaced each period.
    pub fraction: f64,
    /// First churn step (ms).
    pub start_ms: u64,
    /// No churn after this time (ms).
    pub stop_ms: u64,
}

/// Mass failure: `fraction` of the readers crash at `at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Failure {
    /// Time of the failure (ms).
    pub at_ms: u64,
    /// Fraction of the readers removed.
    pub fraction: f64,
}

/// Targets checked at the end of a run (absent = not checked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Targets {
    /// Minimum delivered ratio.
    pub min_delivered_ratio: Option<f64>,
    /// Maximum RMR (Plumtree's relative message redundancy).
    pub max_rmr: Option<f64>,
    /// Maximum last-delivery hop.
    pub max_ldh: Option<u64>,
    /// Maximum p99 latency in simulated ms.
    pub max_latency_p99_ms: Option<f64>,
    /// Maximum payload sends by one node for one message.
    pub max_sends_per_node_per_msg: Option<u64>,
    /// Maximum wall-clock seconds.
    pub max_wall_s: Option<f64>,
    /// Maximum peak resident memory in bytes.
    pub max_peak_rss_bytes: Option<u64>,
}

/// A simulation scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Name (the file name without `.toml` by convention).
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Seed of every random choice. Default 1.
    pub seed: u64,
    /// Readers (nodes besides the writers). Default 100.
    pub nodes: usize,
    /// Writers (node ids `0..writers`; never churned nor failed). Default 1.
    pub writers: usize,
    /// Tree layout. Default `per-writer`.
    pub topology: Topology,
    /// Messages each writer publishes. Default 10.
    pub messages_per_writer: usize,
    /// Payload size in bytes. Default 1,024.
    pub payload_bytes: usize,
    /// Publications per second, all writers together. Default 30.
    pub publish_rate_per_s: f64,
    /// Nodes start evenly spread over this window (ms). Default 2,000.
    pub join_window_ms: u64,
    /// First publication (ms). Default `join_window_ms + 3,000`.
    pub publish_start_ms: Option<u64>,
    /// Simulated time after the last publication (ms). Default 5,000.
    pub drain_ms: u64,
    /// A node is expected to receive a message if it started before it was published and lived
    /// at least this long after (ms). Default 1,000.
    pub delivery_window_ms: u64,
    /// Links.
    pub link: Link,
    /// Churn, if any.
    pub churn: Option<Churn>,
    /// Mass failure, if any.
    pub failure: Option<Failure>,
    /// Run once per size in this list instead of `nodes` (a scale curve).
    pub sweep: Vec<usize>,
    /// Membership settings.
    pub membership: membership::Config,
    /// Fanout settings.
    pub fanout: fanout::Config,
    /// Targets.
    pub targets: Targets,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "unnamed".into(),
            description: String::new(),
            seed: 1,
            nodes: 100,
            writers: 1,
            topology: Topology::PerWriter,
            messages_per_writer: 10,
            payload_bytes: 1024,
            publish_rate_per_s: 30.0,
            join_window_ms: 2_000,
            publish_start_ms: None,
            drain_ms: 5_000,
            delivery_window_ms: 1_000,
            link: Link::default(),
            churn: None,
            failure: None,
            sweep: Vec::new(),
            membership: membership::Config::default(),
            fanout: fanout::Config::default(),
            targets: Targets::default(),
        }
    }
}

/// Scenarios shipped in the repository's `scenarios/` folder, compiled in.
pub const BUILTIN: &[(&str, &str)] = &[
    ("million", include_str!("../../../scenarios/million.toml")),
    (
        "failure-90",
        include_str!("../../../scenarios/failure-90.toml"),
    ),
    (
        "churn-loss",
        include_str!("../../../scenarios/churn-loss.toml"),
    ),
    (
        "many-writers",
        include_str!("../../../scenarios/many-writers.toml"),
    ),
    (
        "scale-curve",
        include_str!("../../../scenarios/scale-curve.toml"),
    ),
    ("smoke", include_str!("../../../scenarios/smoke.toml")),
];

/// Errors loading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Neither a file nor a built-in name.
    #[error("no scenario file or built-in named {0:?}; built-ins: {names}", names = builtin_names())]
    NotFound(String),
    /// The file could not be read.
    #[error("cannot read the scenario file: {0}")]
    Io(#[from] std::io::Error),
    /// The TOML is invalid.
    #[error("invalid scenario TOML (fix the field it names): {0}")]
    Parse(#[from] toml::de::Error),
}

fn builtin_names() -> String {
    BUILTIN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Scenario {
    /// Parses a scenario from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        toml::from_str(text).map_err(ScenarioError::Parse)
    }

    /// Loads `name_or_path`: an existing file, `scenarios/<name>.toml` under the current
    /// directory, or a built-in name.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        let direct = Path::new(name_or_path);
        let in_repo = Path::new("scenarios").join(format!("{name_or_path}.toml"));
        for p in [direct, in_repo.as_path()] {
            if p.is_file() {
                let text = std::fs::read_to_string(p).map_err(ScenarioError::Io)?;
                return Self::from_toml(&text);
            }
        }
        match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((_, text)) => Self::from_toml(text),
            None => Err(ScenarioError::NotFound(name_or_path.into())),
        }
    }

    /// Time of the first publication.
    pub fn publish_start(&self) -> u64 {
        self.publish_start_ms.unwrap_or(self.join_window_ms + 3_000)
    }
}
