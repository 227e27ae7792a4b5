//! Loaded plugins as the host holds them: a stable handle whose current version sits in an
//! `ArcSwap`, so a hot swap is one atomic store.
//!
//! A call loads the current version and locks its sandbox for the duration of the call. A swap
//! prepares the new version entirely off that path (compile, instantiate, `init`, canary calls),
//! then locks the old sandbox — waiting for the call in flight, which finishes on the version it
//! started on — takes its `snapshot`, `restore`s it into the new version, stores the new version
//! and retires the old one. A caller that was waiting on the old lock finds it retired and
//! retries on the new version, so no observation is applied to a version after its snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use routefabric_core::NodeId;
use routefabric_core::plugin::{
    Action, CallError, Candidate, Decision, HostedProofSource, HostedRoutingPolicy, Millis,
    NextHop, Observation, PluginInfo,
};

use crate::bindings::{self, actions_in, candidate_out, decision_in, hop_in, id_out};
use crate::engine::Runtime;
use crate::error::{LoadError, Problem, SwapError};
use crate::inspect::{Compiled, Inspection, PluginKind};
use crate::sandbox::{Counters, Guest, Sandbox, StartError, bump};

/// Counters of one plugin since it was first loaded (all versions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned an error (trap, deadline, restarting).
    pub failed: u64,
    /// Traps (panics, memory cap, invalid operations).
    pub traps: u64,
    /// Calls stopped at their deadline.
    pub deadlines: u64,
    /// Re-instantiations after a fault.
    pub restarts: u64,
    /// Hot swaps completed.
    pub swaps: u64,
    /// Hot swaps refused (the previous version kept serving).
    pub swaps_refused: u64,
}

struct Version {
    compiled: Arc<Compiled>,
    /// `None` once a newer version took over.
    sandbox: Mutex<Option<Sandbox>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Host code does not panic while holding these locks; if it ever did, the sandbox is still
    // consistent (a call either completed or marked the instance faulted).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What both plugin kinds share: versions, swapping, counters.
struct Handle {
    runtime: Runtime,
    kind: PluginKind,
    name: String,
    config: Arc<[u8]>,
    self_id: NodeId,
    current: ArcSwap<Version>,
    counters: Arc<Counters>,
    swap_lock: Mutex<()>,
    /// The latest `now` a caller passed, used for canary calls.
    last_now: AtomicU64,
}

fn start_error(file: &str, e: StartError) -> LoadError {
    let problem = match e {
        StartError::Trap(m) => Problem::Start(m),
        StartError::Refused(m) => Problem::Config(m),
    };
    LoadError {
        file: file.to_owned(),
        problem,
    }
}

impl Handle {
    fn start(
        runtime: &Runtime,
        compiled: Compiled,
        config: Arc<[u8]>,
        self_id: NodeId,
    ) -> Result<Self, LoadError> {
        let compiled = Arc::new(compiled);
        let counters = Arc::new(Counters::default());
        let file = compiled.inspection.file.clone();
        let sandbox = Sandbox::start(
            runtime.clone(),
            compiled.clone(),
            config.clone(),
            self_id,
            counters.clone(),
        )
        .map_err(|e| start_error(&file, e))?;
        Ok(Handle {
            runtime: runtime.clone(),
            kind: compiled.inspection.kind,
            name: compiled.inspection.info.name.clone(),
            config,
            self_id,
            current: ArcSwap::from_pointee(Version {
                compiled,
                sandbox: Mutex::new(Some(sandbox)),
            }),
            counters,
            swap_lock: Mutex::new(()),
            last_now: AtomicU64::new(0),
        })
    }

    /// Run `f` on the sandbox of the current version.
    fn with_sandbox<R>(&self, mut f: impl FnMut(&mut Sandbox) -> R) -> R {
        loop {
            let version = self.current.load_full();
            let mut guard = lock(&version.sandbox);
            if let Some(sandbox) = guard.as_mut() {
                return f(sandbox);
            }
            // Retired while we waited: the new version is already current.
        }
    }

    fn inspection(&self) -> Inspection {
        self.current.load().compiled.inspection.clone()
    }

    fn stats(&self) -> CallStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CallStats {
            calls: get(&c.calls),
            failed: get(&c.failed),
            traps: get(&c.traps),
            deadlines: get(&c.deadlines),
            restarts: get(&c.restarts),
            swaps: get(&c.swaps),
            swaps_refused: get(&c.swaps_refused),
        }
    }

    fn swap(&self, file: &str, bytes: &[u8]) -> Result<(), SwapError> {
        match self.runtime.compile(file, bytes, Some(self.kind)) {
            Ok(compiled) => self.swap_compiled(compiled),
            Err(e) => {
                bump(&self.counters.swaps_refused);
                Err(e.into())
            }
        }
    }

    fn swap_compiled(&self, compiled: Compiled) -> Result<(), SwapError> {
        let result = self.try_swap(compiled);
        if result.is_err() {
            bump(&self.counters.swaps_refused);
        }
        result
    }

    fn try_swap(&self, compiled: Compiled) -> Result<(), SwapError> {
        let _one_swap_at_a_time = lock(&self.swap_lock);
        let file = compiled.inspection.file.clone();
        if compiled.inspection.info.name != self.name {
            return Err(SwapError::OtherPlugin {
                file,
                expected: self.name.clone(),
                found: compiled.inspection.info.name.clone(),
            });
        }
        let compiled = Arc::new(compiled);
        let mut fresh = Sandbox::start(
            self.runtime.clone(),
            compiled.clone(),
            self.config.clone(),
            self.self_id,
            self.counters.clone(),
        )
        .map_err(|e| start_error(&file, e))?;

        // Canary: the new version must answer before it sees live traffic.
        let now = self.last_now.load(Ordering::Relaxed);
        let canary = |reason: CallError| SwapError::Canary {
            file: file.clone(),
            reason: reason.to_string(),
        };
        let self_id = id_out(&self.self_id);
        fresh
            .call(|store, guest| match guest {
                Guest::Proof(g) => g.call_query(&mut *store, now, self_id).map(drop),
                Guest::Policy(g) => g.call_choose(&mut *store, now, self_id, &[]).map(drop),
            })
            .map_err(canary)?;
        fresh.snapshot().map_err(canary)?;

        let old = self.current.load_full();
        let mut old_sandbox = lock(&old.sandbox);
        if self.kind == PluginKind::ProofSource {
            let state = match old_sandbox.as_mut() {
                Some(sandbox) => match sandbox.snapshot() {
                    Ok(state) => Some(state),
                    // The old version is faulting: move its last checkpoint instead.
                    Err(_) => sandbox.checkpoint.clone(),
                },
                None => None,
            };
            if let Some(state) = state {
                match fresh.restore(&state).map_err(canary)? {
                    Ok(()) => {}
                    Err(reason) => return Err(SwapError::Restore { file, reason }),
                }
            }
        }
        let from = old.compiled.inspection.info.version.clone();
        self.current.store(Arc::new(Version {
            compiled: compiled.clone(),
            sandbox: Mutex::new(Some(fresh)),
        }));
        *old_sandbox = None;
        drop(old_sandbox);
        bump(&self.counters.swaps);
        tracing::info!(
            plugin = %self.name,
            from = %from,
            to = %compiled.inspection.info.version,
            file = %file,
            "plugin swapped"
        );
        Ok(())
    }

    fn note_now(&self, now: Millis) {
        self.last_now.fetch_max(now, Ordering::Relaxed);
    }
}

macro_rules! handle_accessors {
    ($ty:ident, $kind:expr, $what:literal) => {
        impl $ty {
            #[doc = concat!("Validate `bytes` as ", $what, " (named `file` in errors), instantiate it")]
            /// and `init` it with `config` on the node `self_id`.
            pub fn load(
                runtime: &Runtime,
                file: &str,
                bytes: &[u8],
                config: &[u8],
                self_id: NodeId,
            ) -> Result<Self, LoadError> {
                let compiled = runtime.compile(file, bytes, Some($kind))?;
                Self::from_compiled(runtime, compiled, config.into(), self_id)
            }

            pub(crate) fn from_compiled(
                runtime: &Runtime,
                compiled: Compiled,
                config: Arc<[u8]>,
                self_id: NodeId,
            ) -> Result<Self, LoadError> {
                Handle::start(runtime, compiled, config, self_id).map($ty)
            }

            /// The plugin's name (stable across versions).
            pub fn name(&self) -> &str {
                &self.0.name
            }

            /// What validation learned about the version serving now.
            pub fn inspection(&self) -> Inspection {
                self.0.inspection()
            }

            /// Counters since the plugin was first loaded.
            pub fn stats(&self) -> CallStats {
                self.0.stats()
            }

            /// Replace the running version with the component in `bytes` (named `file` in
            /// errors): validate, start and canary it off the hot path, move the state over, then
            /// switch atomically. On any error the running version keeps serving.
            pub fn swap(&self, file: &str, bytes: &[u8]) -> Result<(), SwapError> {
                self.0.swap(file, bytes)
            }

            pub(crate) fn swap_compiled(&self, compiled: Compiled) -> Result<(), SwapError> {
                self.0.swap_compiled(compiled)
            }

            pub(crate) fn sha256(&self) -> String {
                self.0.current.load().compiled.inspection.sha256.clone()
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("name", &self.0.name)
                    .field("stats", &self.0.stats())
                    .finish_non_exhaustive()
            }
        }
    };
}

/// A proof source running in WebAssembly.
pub struct WasmProofSource(Handle);
handle_accessors!(WasmProofSource, PluginKind::ProofSource, "a proof source");

impl WasmProofSource {
    /// The running version's state, as `snapshot` returns it.
    pub fn snapshot(&self) -> Result<Vec<u8>, CallError> {
        self.0.with_sandbox(|s| s.snapshot())
    }
}

impl HostedProofSource for WasmProofSource {
    fn info(&self) -> PluginInfo {
        self.0.current.load().compiled.inspection.info.clone()
    }

    fn observe(&self, now: Millis, observations: &[Observation]) -> Result<Vec<Action>, CallError> {
        self.0.note_now(now);
        let observations: Vec<bindings::wit::Observation> =
            observations.iter().map(bindings::observation_out).collect();
        self.0.with_sandbox(|sandbox| {
            let actions = sandbox.call(|store, guest| match guest {
                Guest::Proof(g) => g.call_observe(store, now, &observations),
                Guest::Policy(_) => Ok(Vec::new()),
            })?;
            sandbox.maybe_checkpoint(now);
            Ok(actions_in(actions))
        })
    }

    fn query(&self, now: Millis, dest: &NodeId) -> Result<Vec<NextHop>, CallError> {
        self.0.note_now(now);
        let dest = id_out(dest);
        self.0.with_sandbox(|sandbox| {
            let hops = sandbox.call(|store, guest| match guest {
                Guest::Proof(g) => g.call_query(store, now, dest),
                Guest::Policy(_) => Ok(Vec::new()),
            })?;
            Ok(hops.into_iter().map(hop_in).collect())
        })
    }
}

/// A routing policy running in WebAssembly.
pub struct WasmRoutingPolicy(Handle);
handle_accessors!(
    WasmRoutingPolicy,
    PluginKind::RoutingPolicy,
    "a routing policy"
);

impl HostedRoutingPolicy for WasmRoutingPolicy {
    fn info(&self) -> PluginInfo {
        self.0.current.load().compiled.inspection.info.clone()
    }

    fn choose(
        &self,
        now: Millis,
        dest: &NodeId,
        candidates: &[Candidate],
    ) -> Result<Decision, CallError> {
        self.0.note_now(now);
        let dest = id_out(dest);
        let candidates: Vec<bindings::wit::Candidate> =
            candidates.iter().map(candidate_out).collect();
        self.0.with_sandbox(|sandbox| {
            let decision = sandbox.call(|store, guest| match guest {
                Guest::Policy(g) => g.call_choose(store, now, dest, &candidates),
                Guest::Proof(_) => Ok(bindings::wit::Decision::Fallback),
            })?;
            Ok(decision_in(decision))
        })
    }
}
