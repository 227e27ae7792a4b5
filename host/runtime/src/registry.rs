//! The live plugin set of a node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use routefabric_core::NodeId;

use crate::engine::Runtime;
use crate::error::{LoadError, Problem, SwapError};
use crate::handle::{WasmProofSource, WasmRoutingPolicy};
use crate::inspect::PluginKind;

/// Every plugin a node runs, by name. Replaced as a whole (never mutated) when a plugin is added;
/// a new version of a known plugin swaps inside its handle.
#[derive(Debug, Default, Clone)]
pub struct PluginSet {
    /// Proof sources by name.
    pub proof_sources: BTreeMap<String, Arc<WasmProofSource>>,
    /// Routing policies by name.
    pub policies: BTreeMap<String, Arc<WasmRoutingPolicy>>,
}

/// What loading a file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// A plugin that was not running before.
    Added {
        /// Its kind.
        kind: PluginKind,
        /// Its name.
        name: String,
        /// Its version.
        version: String,
    },
    /// A new version of a running plugin took over (with its state).
    Swapped {
        /// Its kind.
        kind: PluginKind,
        /// Its name.
        name: String,
        /// The version that served before.
        from: String,
        /// The version serving now.
        to: String,
    },
    /// The same bytes as the running version: nothing to do.
    Unchanged {
        /// The plugin's name.
        name: String,
    },
}

/// The plugin set of one node, with the per-plugin configuration it starts them with.
pub struct Registry {
    runtime: Runtime,
    self_id: NodeId,
    configs: BTreeMap<String, Arc<[u8]>>,
    set: ArcSwap<PluginSet>,
    /// The routing policy decisions are made with, by name (`None`: the default).
    active_policy: ArcSwapOption<String>,
    /// Serialises changes to the set (calls never take it).
    change: Mutex<()>,
}

/// The policy used when none was selected, if it is loaded; otherwise the first by name.
pub const DEFAULT_POLICY: &str = "lowest-cost";

/// A policy name that no loaded plugin has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no routing policy named `{name}` is loaded (loaded: {loaded})")]
pub struct UnknownPolicy {
    /// The name asked for.
    pub name: String,
    /// The names loaded.
    pub loaded: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("self_id", &self.self_id)
            .field("plugins", &self.set.load())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty set. `configs` maps plugin names to their configuration (CBOR); a plugin without
    /// an entry gets an empty configuration.
    pub fn new(runtime: Runtime, self_id: NodeId, configs: BTreeMap<String, Vec<u8>>) -> Self {
        Registry {
            runtime,
            self_id,
            configs: configs.into_iter().map(|(k, v)| (k, v.into())).collect(),
            set: ArcSwap::from_pointee(PluginSet::default()),
            active_policy: ArcSwapOption::empty(),
            change: Mutex::new(()),
        }
    }

    /// The current set (a cheap snapshot; later changes do not affect it).
    pub fn plugins(&self) -> Arc<PluginSet> {
        self.set.load_full()
    }

    /// A proof source by name.
    pub fn proof_source(&self, name: &str) -> Option<Arc<WasmProofSource>> {
        self.set.load().proof_sources.get(name).cloned()
    }

    /// A routing policy by name.
    pub fn policy(&self, name: &str) -> Option<Arc<WasmRoutingPolicy>> {
        self.set.load().policies.get(name).cloned()
    }

    /// Make `name` the routing policy that decides from now on: the next decision uses it, a
    /// decision under way finishes with the one it started with.
    pub fn select_policy(&self, name: &str) -> Result<(), UnknownPolicy> {
        let set = self.set.load();
        if !set.policies.contains_key(name) {
            return Err(UnknownPolicy {
                name: name.to_owned(),
                loaded: set.policies.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        self.active_policy.store(Some(Arc::new(name.to_owned())));
        tracing::info!(policy = name, "routing policy selected");
        Ok(())
    }

    /// The routing policy in force: the selected one, else [`DEFAULT_POLICY`], else the first
    /// loaded by name.
    pub fn active_policy(&self) -> Option<Arc<WasmRoutingPolicy>> {
        let set = self.set.load();
        let selected = self.active_policy.load();
        selected
            .as_deref()
            .and_then(|name| set.policies.get(name.as_str()))
            .or_else(|| set.policies.get(DEFAULT_POLICY))
            .or_else(|| set.policies.values().next())
            .cloned()
    }

    /// Load a component: add it if its plugin name is new, hot-swap it in if a plugin of that
    /// name runs already (its state moves over), or do nothing if the bytes are the same.
    pub fn load_bytes(&self, file: &str, bytes: &[u8]) -> Result<LoadOutcome, SwapError> {
        // Compile before taking the lock: it is the slow part and touches nothing shared.
        let compiled = self.runtime.compile(file, bytes, None)?;
        let _changing = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let info = compiled.inspection.info.clone();
        let kind = compiled.inspection.kind;
        let set = self.set.load();
        let (running_sha, running_version, running_kind) = match (
            set.proof_sources.get(&info.name),
            set.policies.get(&info.name),
        ) {
            (Some(p), _) => (
                p.sha256(),
                p.inspection().info.version,
                PluginKind::ProofSource,
            ),
            (_, Some(p)) => (
                p.sha256(),
                p.inspection().info.version,
                PluginKind::RoutingPolicy,
            ),
            (None, None) => {
                let config = self
                    .configs
                    .get(&info.name)
                    .cloned()
                    .unwrap_or_else(|| Arc::from([]));
                let mut next = PluginSet::clone(&set);
                match kind {
                    PluginKind::ProofSource => {
                        let p = WasmProofSource::from_compiled(
                            &self.runtime,
                            compiled,
                            config,
                            self.self_id,
                        )?;
                        next.proof_sources.insert(info.name.clone(), Arc::new(p));
                    }
                    PluginKind::RoutingPolicy => {
                        let p = WasmRoutingPolicy::from_compiled(
                            &self.runtime,
                            compiled,
                            config,
                            self.self_id,
                        )?;
                        next.policies.insert(info.name.clone(), Arc::new(p));
                    }
                }
                self.set.store(Arc::new(next));
                return Ok(LoadOutcome::Added {
                    kind,
                    name: info.name,
                    version: info.version,
                });
            }
        };
        if running_kind != kind {
            return Err(SwapError::Load(LoadError {
                file: file.to_owned(),
                problem: Problem::WrongWorld {
                    expected: running_kind.world(),
                    found: kind.world(),
                },
            }));
        }
        if running_sha == compiled.inspection.sha256 {
            return Ok(LoadOutcome::Unchanged { name: info.name });
        }
        match kind {
            PluginKind::ProofSource => set.proof_sources[&info.name].swap_compiled(compiled)?,
            PluginKind::RoutingPolicy => set.policies[&info.name].swap_compiled(compiled)?,
        }
        Ok(LoadOutcome::Swapped {
            kind,
            name: info.name,
            from: running_version,
            to: info.version,
        })
    }

    /// [`Registry::load_bytes`] of a file.
    pub fn load_file(&self, path: &Path) -> Result<LoadOutcome, SwapError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| LoadError {
            file: file.clone(),
            problem: Problem::Read(e.to_string()),
        })?;
        self.load_bytes(&file, &bytes)
    }

    /// Load every `*.wasm` file of a folder, in name order. A file that fails does not stop the
    /// others; each outcome is returned.
    pub fn load_dir(
        &self,
        dir: &Path,
    ) -> std::io::Result<Vec<(PathBuf, Result<LoadOutcome, SwapError>)>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_plugin_file(p))
            .collect();
        files.sort();
        Ok(files
            .into_iter()
            .map(|path| {
                let outcome = self.load_file(&path);
                (path, outcome)
            })
            .collect())
    }
}

/// Whether a path looks like a plugin component (`*.wasm`, not hidden).
pub(crate) fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
}
