//! One plugin instance in its own `Store`, with trap containment: a call that traps or runs past
//! its deadline drops the instance; the next call re-instantiates it from the `InstancePre`
//! (at once after a first fault, then with exponential backoff while it keeps faulting), runs
//! `init` and restores the last checkpoint of its state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use routefabric_core::NodeId;
use routefabric_core::plugin::CallError;
use wasmtime::Store;

use crate::bindings::{PolicyGuest, ProofGuest, id_out};
use crate::engine::{HostState, Runtime};
use crate::error::DisplayChain;
use crate::inspect::{Compiled, Indices};

/// Counters of one plugin handle (all versions), updated lock-free.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) traps: AtomicU64,
    pub(crate) deadlines: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) swaps: AtomicU64,
    pub(crate) swaps_refused: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) enum Guest {
    Proof(ProofGuest),
    Policy(PolicyGuest),
}

pub(crate) struct Live {
    pub(crate) store: Store<HostState>,
    pub(crate) guest: Guest,
}

/// Why starting an instance failed: a trap, or `init`/`restore` said no.
pub(crate) enum StartError {
    Trap(String),
    Refused(String),
}

impl StartError {
    pub(crate) fn message(self) -> String {
        match self {
            StartError::Trap(m) | StartError::Refused(m) => m,
        }
    }
}

pub(crate) struct Sandbox {
    runtime: Runtime,
    pub(crate) compiled: Arc<Compiled>,
    config: Arc<[u8]>,
    self_id: NodeId,
    live: Option<Live>,
    faults_in_a_row: u32,
    retry_at: Option<Instant>,
    /// The last state taken with `snapshot`, restored after a restart.
    pub(crate) checkpoint: Option<Vec<u8>>,
    /// Caller's clock (ms) at the last checkpoint.
    last_checkpoint: u64,
    counters: Arc<Counters>,
}

impl Sandbox {
    /// Instantiate and `init` a first instance.
    pub(crate) fn start(
        runtime: Runtime,
        compiled: Arc<Compiled>,
        config: Arc<[u8]>,
        self_id: NodeId,
        counters: Arc<Counters>,
    ) -> Result<Self, StartError> {
        let mut sandbox = Sandbox {
            runtime,
            compiled,
            config,
            self_id,
            live: None,
            faults_in_a_row: 0,
            retry_at: None,
            checkpoint: None,
            last_checkpoint: 0,
            counters,
        };
        sandbox.live = Some(sandbox.instantiate()?);
        Ok(sandbox)
    }

    pub(crate) fn plugin(&self) -> &str {
        &self.compiled.inspection.info.name
    }

    fn instantiate(&self) -> Result<Live, StartError> {
        let trap = |e: wasmtime::Error| StartError::Trap(DisplayChain(&e).to_string());
        let mut store = self.runtime.new_store(self.plugin());
        let instance = self.compiled.pre.instantiate(&mut store).map_err(trap)?;
        let self_id = id_out(&self.self_id);
        let guest = match &self.compiled.indices {
            Indices::Proof(ix) => {
                let g = ix.load(&mut store, &instance).map_err(trap)?;
                g.call_init(&mut store, &self.config, self_id)
                    .map_err(trap)?
                    .map_err(StartError::Refused)?;
                if let Some(state) = &self.checkpoint {
                    g.call_restore(&mut store, state)
                        .map_err(trap)?
                        .map_err(StartError::Refused)?;
                }
                Guest::Proof(g)
            }
            Indices::Policy(ix) => {
                let g = ix.load(&mut store, &instance).map_err(trap)?;
                g.call_init(&mut store, &self.config, self_id)
                    .map_err(trap)?
                    .map_err(StartError::Refused)?;
                Guest::Policy(g)
            }
        };
        Ok(Live { store, guest })
    }

    fn backoff(&self) -> Duration {
        let c = self.runtime.config();
        match self.faults_in_a_row {
            0 | 1 => Duration::ZERO,
            n => {
                let factor = 1u32.checked_shl(n - 2).unwrap_or(u32::MAX);
                c.restart_backoff
                    .checked_mul(factor)
                    .unwrap_or(c.restart_backoff_max)
                    .min(c.restart_backoff_max)
            }
        }
    }

    fn fault(&mut self, now: Instant) {
        self.live = None;
        self.faults_in_a_row = self.faults_in_a_row.saturating_add(1);
        self.retry_at = Some(now + self.backoff());
    }

    /// Run one call under the deadline, restarting the instance first if it faulted earlier.
    pub(crate) fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Store<HostState>, &Guest) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let ticks = self.runtime.call_ticks();
        self.call_within(ticks, f)
    }

    /// [`Sandbox::call`] with a deadline of `ticks` epochs.
    fn call_within<R>(
        &mut self,
        ticks: u64,
        f: impl FnOnce(&mut Store<HostState>, &Guest) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        bump(&self.counters.calls);
        if self.live.is_none() {
            let now = Instant::now();
            if let Some(at) = self.retry_at
                && now < at
            {
                bump(&self.counters.failed);
                return Err(CallError::Restarting {
                    plugin: self.plugin().to_owned(),
                    retry_in_ms: (at - now).as_millis() as u64,
                });
            }
            match self.instantiate() {
                Ok(live) => {
                    bump(&self.counters.restarts);
                    tracing::info!(
                        plugin = self.plugin(),
                        "plugin re-instantiated after a fault"
                    );
                    self.live = Some(live);
                }
                Err(e) => {
                    self.fault(now);
                    bump(&self.counters.failed);
                    return Err(CallError::RestartFailed {
                        plugin: self.plugin().to_owned(),
                        message: e.message(),
                    });
                }
            }
        }
        let Some(live) = self.live.as_mut() else {
            return Err(CallError::RestartFailed {
                plugin: self.plugin().to_owned(),
                message: "no instance".to_owned(),
            });
        };
        live.store.set_epoch_deadline(ticks);
        live.store.data_mut().begin_call();
        match f(&mut live.store, &live.guest) {
            Ok(value) => {
                self.faults_in_a_row = 0;
                Ok(value)
            }
            Err(e) => {
                let plugin = self.compiled.inspection.info.name.clone();
                let error = if matches!(
                    e.downcast_ref::<wasmtime::Trap>(),
                    Some(wasmtime::Trap::Interrupt)
                ) {
                    bump(&self.counters.deadlines);
                    CallError::Deadline {
                        plugin,
                        deadline_ms: self.runtime.ticks_to_ms(ticks),
                    }
                } else {
                    bump(&self.counters.traps);
                    let state = live.store.data();
                    let message = if state.limits.memory_denied {
                        format!(
                            "memory cap of {} MiB reached",
                            self.runtime.config().memory_cap_bytes >> 20
                        )
                    } else {
                        state
                            .last_stderr_line()
                            .unwrap_or_else(|| DisplayChain(&e).to_string())
                    };
                    CallError::Trapped { plugin, message }
                };
                tracing::warn!("{error}");
                bump(&self.counters.failed);
                self.fault(Instant::now());
                Err(error)
            }
        }
    }

    /// The proof source's state (`snapshot`); a policy has none.
    pub(crate) fn snapshot(&mut self) -> Result<Vec<u8>, CallError> {
        let ticks = self.runtime.start_ticks();
        self.call_within(ticks, |store, guest| match guest {
            Guest::Proof(g) => g.call_snapshot(store),
            Guest::Policy(_) => Ok(Vec::new()),
        })
    }

    /// Hand state to the proof source (`restore`); the inner error is the plugin's refusal.
    pub(crate) fn restore(&mut self, state: &[u8]) -> Result<Result<(), String>, CallError> {
        let ticks = self.runtime.start_ticks();
        let outcome = self.call_within(ticks, |store, guest| match guest {
            Guest::Proof(g) => g.call_restore(store, state),
            Guest::Policy(_) => Ok(Ok(())),
        })?;
        if outcome.is_ok() {
            self.checkpoint = Some(state.to_vec());
        }
        Ok(outcome)
    }

    /// Take a checkpoint of a proof source's state when the last one is older than the interval,
    /// on the caller's clock (`now`, ms) so the hot path reads no clock.
    pub(crate) fn maybe_checkpoint(&mut self, now: u64) {
        let interval = self.runtime.config().checkpoint_interval.as_millis() as u64;
        if !matches!(self.compiled.indices, Indices::Proof(_))
            || now.saturating_sub(self.last_checkpoint) < interval
        {
            return;
        }
        self.last_checkpoint = now;
        if let Ok(state) = self.snapshot() {
            self.checkpoint = Some(state);
        }
    }
}
