//! Deterministic discrete-event simulator for the routefabric overlays.
//!
//! It drives many [`routefabric_overlay::Node`]s — the very code a real node runs — in one
//! process: events ordered by (simulated millisecond, insertion order) — a calendar queue with one
//! FIFO bucket per millisecond, which gives exactly the order of a heap keyed by (time, sequence
//! number) at O(1) per event — per-link fixed latencies drawn from a range, message loss, churn,
//! mass failure and many writers, all from one seed. Per-node state is the overlay's own compact
//! state (small `Vec`s, `u32` ids, 8 bytes of RNG, configuration shared through an `Arc`): a
//! million readers in two trees fit in about 2.7 GiB. Scenarios are TOML files in the repository's `scenarios/` folder; [`cli::run`] is the
//! `routefabric sim` command.
//!
//! The measured quantities follow the papers the overlays come from: relative message redundancy
//! (RMR) and last delivery hop (LDH) as defined for Plumtree (Leitão, Pereira, Rodrigues,
//! "Epidemic broadcast trees", SRDS 2007), on top of HyParView membership (Leitão et al., DSN
//! 2007, <https://asc.di.fct.unl.pt/~jleitao/pdf/dsn07-leitao.pdf>).

#![deny(missing_docs)]

pub mod cli;
pub mod engine;
pub mod report;
pub mod scenario;

pub use cli::{SimArgs, run};
