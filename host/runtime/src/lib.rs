//! The wasmtime host of routefabric plugins — the only crate that knows wasmtime.
//!
//! * [`Runtime`]: one [`wasmtime::Engine`] with epoch interruption (a background ticker advances
//!   the epoch), a compiled-code cache on disk keyed by content hash and engine, and the linker
//!   with WASI p2 and the `routefabric:plugin/host` import. One `Store` per plugin instance, with a
//!   memory cap and a per-call deadline ([`RuntimeConfig`]).
//! * [`inspect`](Runtime::inspect): validation before use. Not wasm, a core module, the wrong world,
//!   an incompatible contract version, a missing export or an unsatisfiable import each give a
//!   [`LoadError`] naming the file and the problem.
//! * [`WasmProofSource`] / [`WasmRoutingPolicy`]: a loaded plugin implementing the core's
//!   [`HostedProofSource`](routefabric_core::plugin::HostedProofSource) /
//!   [`HostedRoutingPolicy`](routefabric_core::plugin::HostedRoutingPolicy). Traps are contained:
//!   the instance is re-instantiated from its `InstancePre` (with backoff when it keeps faulting),
//!   calls meanwhile fail with a [`CallError`](routefabric_core::plugin::CallError) and are
//!   counted. [`swap`](WasmProofSource::swap) runs a canary of the new version, moves state with
//!   `snapshot`→`restore` and switches atomically; a call in flight finishes on the version it
//!   started on.
//! * [`Registry`]: the live plugin set (an `ArcSwap`), built-ins overlaid by a plugin folder, and
//!   [`Watcher`]: a debounced `notify` watcher that loads new files off the hot path.
#![deny(missing_docs)]

mod bindings;
mod cache;
mod engine;
mod error;
mod handle;
mod inspect;
mod registry;
mod sandbox;
mod watcher;

pub use engine::{Runtime, RuntimeConfig};
pub use error::{LoadError, Problem, RuntimeError, SwapError};
pub use handle::{CallStats, WasmProofSource, WasmRoutingPolicy};
pub use inspect::{CONTRACT_PACKAGE, CONTRACT_VERSION, Inspection, PluginKind};
pub use registry::{DEFAULT_POLICY, LoadOutcome, PluginSet, Registry, UnknownPolicy};
pub use watcher::{ReloadReport, WatchError, Watcher};
