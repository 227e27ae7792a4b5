//! Errors of loading and swapping plugins.

use std::fmt;

/// A plugin file (or built-in) that cannot be used, and why. Displays as one line:
/// `<file>: <problem>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct LoadError {
    /// The file (or `builtin:<name>`) that was refused.
    pub file: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(String),
    /// Not WebAssembly at all.
    #[error(
        "not a WebAssembly file (no \\0asm header); build the plugin with `--target wasm32-wasip2`"
    )]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "a core WebAssembly module, not a component; build for `wasm32-wasip2` (whose output is a component), not `wasm32-unknown-unknown` or `wasm32-wasip1`"
    )]
    CoreModule,
    /// A wasm header with an unknown version/layer.
    #[error("unknown WebAssembly encoding (version bytes {0:02x?})")]
    UnknownEncoding([u8; 4]),
    /// wasmtime refused to compile it.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// A component of another world.
    #[error(
        "exports no routefabric plugin interface (found: {found}); a plugin targets the world `proof-source` or `routing-policy` of routefabric:plugin"
    )]
    NotAPlugin {
        /// The component's exports.
        found: String,
    },
    /// A plugin of the other kind.
    #[error("is a {found} plugin, expected a {expected} plugin")]
    WrongWorld {
        /// The world that was asked for.
        expected: &'static str,
        /// The world the component targets.
        found: &'static str,
    },
    /// Built against a contract version this host does not support.
    #[error(
        "targets routefabric:plugin@{found}, this host supports @{supported} (compatible: same major, and same minor while 0.x)"
    )]
    IncompatibleVersion {
        /// The version the component names.
        found: String,
        /// The version the host implements.
        supported: &'static str,
    },
    /// The interface is there but lacks a function or has a different signature.
    #[error("does not match the contract: {0}")]
    Contract(String),
    /// The component imports something the host does not provide.
    #[error("imports something this host does not provide: {0}")]
    Imports(String),
    /// Instantiation or `init` failed.
    #[error("failed to start: {0}")]
    Start(String),
    /// The plugin refused its configuration.
    #[error("refused its configuration: {0}")]
    Config(String),
}

/// The runtime itself could not be set up (engine configuration, linker, ticker thread).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot start the plugin runtime: {0}")]
pub struct RuntimeError(pub String);

/// Why a hot swap was refused (the previous version keeps serving).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwapError {
    /// The new file is unusable.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The new version failed its canary calls.
    #[error("{file}: canary failed, the running version keeps serving: {reason}")]
    Canary {
        /// The new file.
        file: String,
        /// What failed.
        reason: String,
    },
    /// The new version could not take over the running version's state.
    #[error(
        "{file}: could not take over the running version's state ({reason}); the running version keeps serving"
    )]
    Restore {
        /// The new file.
        file: String,
        /// What `restore` said.
        reason: String,
    },
    /// The new file is a plugin with another name than the one being swapped.
    #[error("{file}: is plugin `{found}`, not `{expected}`")]
    OtherPlugin {
        /// The new file.
        file: String,
        /// The running plugin's name.
        expected: String,
        /// The new file's plugin name.
        found: String,
    },
}

pub(crate) struct DisplayChain<'a>(pub(crate) &'a wasmtime::Error);

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for cause in self.0.chain() {
            if !first {
                f.write_str(": ")?;
            }
            first = false;
            // Keep the message on one line: wasmtime's backtraces span several.
            let text = cause.to_string();
            f.write_str(text.lines().next().unwrap_or_default())?;
        }
        Ok(())
    }
}
