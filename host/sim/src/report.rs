//! Results of a run: a table for people, one JSON object for scripts.

use serde::Serialize;

use crate::scenario::Targets;

/// Figures of one run. Ratios are in `[0, 1]`, times in simulated ms unless named `wall`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Readers.
    pub nodes: usize,
    /// Writers.
    pub writers: usize,
    /// Messages published.
    pub messages: usize,
    /// Nodes alive at the end.
    pub live_nodes: usize,
    /// Live nodes attached to every tree at the end.
    pub joined_ratio: f64,
    /// Connected components of the membership overlay (active views) among live nodes at the end.
    pub membership_components: usize,
    /// (node, message) pairs that had to be delivered.
    pub expected_deliveries: u64,
    /// Share of the expected pairs delivered.
    pub delivered_ratio: f64,
    /// Deliveries of a message a node already had (the overlay should report none).
    pub duplicates: u64,
    /// Relative message redundancy, m / (n − 1) − 1 (Plumtree), over all messages.
    pub rmr: f64,
    /// Largest hop count at delivery.
    pub ldh_max: u64,
    /// 99th percentile of the hop count at delivery.
    pub ldh_p99: u64,
    /// Median publish-to-delivery latency (simulated ms).
    pub latency_p50_ms: f64,
    /// 99th percentile latency (simulated ms).
    pub latency_p99_ms: f64,
    /// Most payload sends of one message by one node.
    pub max_sends_per_node_per_msg: u64,
    /// Mean payload sends of one message by a node that sent it at all.
    pub mean_sends_per_node_per_msg: f64,
    /// Control bytes (estimated wire size, 32-byte ids) per payload byte sent.
    pub control_bytes_per_payload_byte: f64,
    /// 95th percentile of start → attached to a tree (simulated ms).
    pub join_time_p95_ms: f64,
    /// Events processed.
    pub sim_events: u64,
    /// Simulated time (ms).
    pub sim_ms: u64,
    /// Wall-clock seconds of the run.
    pub wall_s: f64,
    /// Peak resident set of the process so far (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

/// Peak resident memory of this process (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

impl Report {
    /// Targets this run missed, as readable lines (empty: all met).
    pub fn check(&self, t: &Targets) -> Vec<String> {
        let mut miss = Vec::new();
        let mut lo = |name: &str, v: f64, min: Option<f64>| {
            if let Some(min) = min.filter(|m| v < *m) {
                miss.push(format!("{name} = {v} is below the target {min}"));
            }
        };
        lo(
            "delivered_ratio",
            self.delivered_ratio,
            t.min_delivered_ratio,
        );
        let mut hi = |name: &str, v: f64, max: Option<f64>| {
            if let Some(max) = max.filter(|m| v > *m) {
                miss.push(format!("{name} = {v} is above the target {max}"));
            }
        };
        hi("rmr", self.rmr, t.max_rmr);
        hi("ldh_max", self.ldh_max as f64, t.max_ldh.map(|v| v as f64));
        hi("latency_p99_ms", self.latency_p99_ms, t.max_latency_p99_ms);
        hi(
            "max_sends_per_node_per_msg",
            self.max_sends_per_node_per_msg as f64,
            t.max_sends_per_node_per_msg.map(|v| v as f64),
        );
        hi("wall_s", self.wall_s, t.max_wall_s);
        hi(
            "peak_rss_bytes",
            self.peak_rss_bytes as f64,
            t.max_peak_rss_bytes.map(|v| v as f64),
        );
        miss
    }

    /// Human-readable table.
    pub fn table(&self) -> String {
        let rows: Vec<(&str, String)> = vec![
            (
                "scenario",
                format!("{} (seed {})", self.scenario, self.seed),
            ),
            (
                "readers / writers",
                format!("{} / {}", self.nodes, self.writers),
            ),
            ("messages", self.messages.to_string()),
            ("live nodes at end", self.live_nodes.to_string()),
            ("joined ratio", format!("{:.4}", self.joined_ratio)),
            (
                "membership components",
                self.membership_components.to_string(),
            ),
            (
                "delivered ratio",
                format!(
                    "{:.6} of {}",
                    self.delivered_ratio, self.expected_deliveries
                ),
            ),
            ("duplicates", self.duplicates.to_string()),
            ("RMR", format!("{:.4}", self.rmr)),
            (
                "last delivery hop max / p99",
                format!("{} / {}", self.ldh_max, self.ldh_p99),
            ),
            (
                "latency p50 / p99 (sim ms)",
                format!("{} / {}", self.latency_p50_ms, self.latency_p99_ms),
            ),
            (
                "sends per node per msg max / mean",
                format!(
                    "{} / {:.2}",
                    self.max_sends_per_node_per_msg, self.mean_sends_per_node_per_msg
                ),
            ),
            (
                "control bytes per payload byte",
                format!("{:.4}", self.control_bytes_per_payload_byte),
            ),
            (
                "join time p95 (sim ms)",
                format!("{}", self.join_time_p95_ms),
            ),
            (
                "events / simulated s",
                format!("{} / {:.1}", self.sim_events, self.sim_ms as f64 / 1000.0),
            ),
            ("wall s", format!("{:.2}", self.wall_s)),
            (
                "peak RSS",
                format!("{:.1} MiB", self.peak_rss_bytes as f64 / (1024.0 * 1024.0)),
            ),
        ];
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<w$}  {v}\n"))
            .collect()
    }
}
