//! The engine, its defaults, and the per-instance store state.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{self, LogLevel};
use crate::cache::CodeCache;
use crate::error::{DisplayChain, RuntimeError};

/// Limits and defaults of the plugin runtime. Every field has a default (in its doc).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Most linear memory one plugin instance may grow to. Default 64 MiB.
    pub memory_cap_bytes: usize,
    /// Longest a single call into a plugin may run before it is interrupted. Default 10 ms.
    pub call_deadline: Duration,
    /// Longest instantiation plus `init` (and `restore`, `snapshot` during a swap) may run: they
    /// may build tables from configuration or state, off the hot path. Default 1 s.
    pub start_deadline: Duration,
    /// Period of the epoch ticker; deadlines are enforced with this granularity. Default 1 ms.
    pub epoch_tick: Duration,
    /// Folder of the compiled-code cache; `None` disables it. Default: `$XDG_CACHE_HOME` or
    /// `~/.cache`, then `routefabric/compiled`. Only point it at a folder you trust: its files are
    /// loaded as native code.
    pub cache_dir: Option<PathBuf>,
    /// Most files the compiled-code cache keeps; the oldest go first. Default 256.
    pub cache_max_entries: usize,
    /// After the second consecutive fault of an instance, the first restart waits this long, and
    /// each further fault doubles it (the first fault restarts at once). Default 10 ms.
    pub restart_backoff: Duration,
    /// Upper bound of the restart backoff. Default 5 s.
    pub restart_backoff_max: Duration,
    /// How often a proof source's state is checkpointed (with `snapshot`) so a restart after a
    /// trap resumes from it. Default 5 s.
    pub checkpoint_interval: Duration,
    /// Log lines a plugin may write per call; the rest are counted and dropped. Default 16.
    pub max_log_lines_per_call: u32,
    /// Longest log line kept, in bytes. Default 1,024.
    pub max_log_line_bytes: usize,
    /// Bytes of a plugin's stderr (e.g. its panic message) kept per instance. Default 4 KiB.
    pub stderr_capacity: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            memory_cap_bytes: 64 << 20,
            call_deadline: Duration::from_millis(10),
            start_deadline: Duration::from_secs(1),
            epoch_tick: Duration::from_millis(1),
            cache_dir: default_cache_dir(),
            cache_max_entries: 256,
            restart_backoff: Duration::from_millis(10),
            restart_backoff_max: Duration::from_secs(5),
            checkpoint_interval: Duration::from_secs(5),
            max_log_lines_per_call: 16,
            max_log_line_bytes: 1024,
            stderr_capacity: 4096,
        }
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("routefabric").join("compiled"))
}

/// The plugin runtime: engine, linker, cache and epoch ticker. Cheap to clone; the ticker stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: RuntimeConfig,
    pub(crate) cache: Option<CodeCache>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Build the engine, the linker and the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        Self::build(config).map_err(|e| RuntimeError(DisplayChain(&e).to_string()))
    }

    fn build(config: RuntimeConfig) -> wasmtime::Result<Self> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            // Plugins are synchronous; concurrency support costs ≈ 500 ns per call.
            .concurrency_support(false)
            .wasm_component_model(true)
            .parallel_compilation(true);
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::HostView::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;

        let cache = config
            .cache_dir
            .as_ref()
            .and_then(|dir| CodeCache::open(dir.clone(), &engine, config.cache_max_entries));

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = config.epoch_tick.max(Duration::from_micros(100));
            thread::Builder::new()
                .name("routefabric-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })?;
        }

        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                config,
                cache,
                ticker_stop,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// An epoch deadline in ticks: the duration rounded up, plus the tick that may already be
    /// under way.
    pub(crate) fn ticks(&self, deadline: Duration) -> u64 {
        let tick = self
            .inner
            .config
            .epoch_tick
            .max(Duration::from_micros(100))
            .as_nanos();
        (deadline.as_nanos().div_ceil(tick) as u64).max(1) + 1
    }

    /// The deadline `ticks` stands for, in milliseconds (for error messages).
    pub(crate) fn ticks_to_ms(&self, ticks: u64) -> u64 {
        let tick = self.inner.config.epoch_tick.max(Duration::from_micros(100));
        (tick * (ticks.saturating_sub(1) as u32)).as_millis() as u64
    }

    /// The epoch deadline of one ordinary call.
    pub(crate) fn call_ticks(&self) -> u64 {
        self.ticks(self.inner.config.call_deadline)
    }

    /// The epoch deadline of start-up work (instantiate, `init`, `restore`, `snapshot`).
    pub(crate) fn start_ticks(&self) -> u64 {
        self.ticks(self.inner.config.start_deadline)
    }

    pub(crate) fn new_store(&self, plugin: &str) -> Store<HostState> {
        let c = &self.inner.config;
        let stderr = MemoryOutputPipe::new(c.stderr_capacity);
        // No filesystem, network, environment or stdin: a plugin only computes. stderr is kept
        // (bounded) so a panic message can be reported with the trap.
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits: Limits {
                memory_cap: c.memory_cap_bytes,
                memory_denied: false,
            },
            plugin: plugin.to_owned(),
            stderr,
            log_lines_left: c.max_log_lines_per_call,
            log_lines_dropped: 0,
            max_log_lines_per_call: c.max_log_lines_per_call,
            max_log_line_bytes: c.max_log_line_bytes,
        };
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.start_ticks());
        store
    }
}

/// Memory and table caps of one store. Unlike wasmtime's `StoreLimits` it remembers that it
/// refused a growth, so a trap that follows can be reported as the memory cap it is.
pub(crate) struct Limits {
    memory_cap: usize,
    pub(crate) memory_denied: bool,
}

/// Table elements one instance may have; Rust guests use a few hundred.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Instances, tables and memories per store (a component has a handful of each).
const MAX_INSTANCES: usize = 64;

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_INSTANCES
    }
}

/// The data of one plugin instance's `Store`.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: Limits,
    plugin: String,
    pub(crate) stderr: MemoryOutputPipe,
    log_lines_left: u32,
    pub(crate) log_lines_dropped: u64,
    max_log_lines_per_call: u32,
    max_log_line_bytes: usize,
}

impl HostState {
    /// Reset the per-call budgets before a call.
    pub(crate) fn begin_call(&mut self) {
        self.log_lines_left = self.max_log_lines_per_call;
    }

    /// What the plugin last wrote to stderr before a trap, on one line: the Rust panic message
    /// (`panicked at src/lib.rs:10:5: <message>`) when there is one, else the last line.
    pub(crate) fn last_stderr_line(&self) -> Option<String> {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if let Some(at) = lines.iter().rposition(|l| l.contains("panicked at")) {
            let mut message = lines[at]
                .split_once("panicked at ")
                .map_or(lines[at], |(_, rest)| rest)
                .trim_end_matches(':')
                .to_owned();
            for line in lines[at + 1..]
                .iter()
                .take_while(|l| !l.starts_with("note:"))
            {
                message.push_str(": ");
                message.push_str(line);
            }
            return Some(format!("panicked at {message}"));
        }
        lines
            .iter()
            .rev()
            .find(|l| !l.starts_with("note:"))
            .map(|l| (*l).to_owned())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        if self.log_lines_left == 0 {
            self.log_lines_dropped += 1;
            return;
        }
        self.log_lines_left -= 1;
        let mut message = message;
        if message.len() > self.max_log_line_bytes {
            let mut cut = self.max_log_line_bytes;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = self.plugin.as_str();
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// The `types` interface has no functions; wasmtime still wants it implemented.
impl bindings::routefabric::plugin::types::Host for HostState {}
