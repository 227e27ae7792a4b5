//! Validation of a plugin before use: header, compilation (through the cache), the world it
//! targets, the contract version, its imports and exports, and what it says about itself.

use std::time::Instant;

use routefabric_core::plugin::PluginInfo;
use wasmtime::component::{Component, InstancePre};

use crate::bindings::{PolicyIndices, ProofIndices, info_in};
use crate::cache::content_hash;
use crate::engine::{HostState, Runtime};
use crate::error::{DisplayChain, LoadError, Problem};

/// The WIT package plugins are built against.
pub const CONTRACT_PACKAGE: &str = "routefabric:plugin";
/// The contract version this host implements.
pub const CONTRACT_VERSION: &str = "0.1.0";

/// The kinds of plugin (WIT worlds) the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginKind {
    /// World `proof-source`, interface `proof`.
    ProofSource,
    /// World `routing-policy`, interface `policy`.
    RoutingPolicy,
}

impl PluginKind {
    /// The WIT world's name.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::ProofSource => "proof-source",
            PluginKind::RoutingPolicy => "routing-policy",
        }
    }

    fn interface(self) -> &'static str {
        match self {
            PluginKind::ProofSource => "proof",
            PluginKind::RoutingPolicy => "policy",
        }
    }

    fn from_interface(name: &str) -> Option<Self> {
        match name {
            "proof" => Some(PluginKind::ProofSource),
            "policy" => Some(PluginKind::RoutingPolicy),
            _ => None,
        }
    }
}

/// What validation learned about a plugin: shown by `routefabric plugin check`.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// The file (or `builtin:<name>`).
    pub file: String,
    /// Its world.
    pub kind: PluginKind,
    /// What it says about itself.
    pub info: PluginInfo,
    /// The contract version it was built against.
    pub contract_version: String,
    /// Its exports: the plugin interface with its functions.
    pub exports: Vec<String>,
    /// Its imports (the host interface, WASI).
    pub imports: Vec<String>,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Size of the file.
    pub size_bytes: usize,
    /// Time to compile it, or to load it from the compiled-code cache, in milliseconds.
    pub compile_ms: f64,
    /// Whether the compiled code came from the cache.
    pub from_cache: bool,
}

pub(crate) enum Indices {
    Proof(ProofIndices),
    Policy(PolicyIndices),
}

/// A validated, compiled plugin, ready to instantiate any number of times.
pub(crate) struct Compiled {
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) indices: Indices,
    pub(crate) inspection: Inspection,
}

fn refuse(file: &str, problem: Problem) -> LoadError {
    LoadError {
        file: file.to_owned(),
        problem,
    }
}

/// Same major version, and while the major is 0 the same minor: semver compatibility.
fn compatible(found: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    };
    match (parse(found), parse(CONTRACT_VERSION)) {
        (Some((fm, fn_)), Some((hm, hn))) => fm == hm && (hm != 0 || fn_ == hn),
        _ => false,
    }
}

impl Runtime {
    /// Validate a plugin and report what it is, without keeping it.
    pub fn inspect(&self, file: &str, bytes: &[u8]) -> Result<Inspection, LoadError> {
        self.compile(file, bytes, None).map(|c| c.inspection)
    }

    pub(crate) fn compile(
        &self,
        file: &str,
        bytes: &[u8],
        expected: Option<PluginKind>,
    ) -> Result<Compiled, LoadError> {
        match bytes.get(..8) {
            Some([0x00, 0x61, 0x73, 0x6d, version @ ..]) => match version {
                [0x0d, 0x00, 0x01, 0x00] => {}
                [0x01, 0x00, 0x00, 0x00] => return Err(refuse(file, Problem::CoreModule)),
                other => {
                    let mut v = [0u8; 4];
                    v.copy_from_slice(other);
                    return Err(refuse(file, Problem::UnknownEncoding(v)));
                }
            },
            _ => return Err(refuse(file, Problem::NotWasm)),
        }

        let engine = &self.inner.engine;
        let sha256 = content_hash(bytes);
        let started = Instant::now();
        let cache = self.inner.cache.as_ref();
        let (component, from_cache) = match cache.and_then(|c| c.load(engine, &sha256)) {
            Some(component) => (component, true),
            None => {
                let component = Component::new(engine, bytes)
                    .map_err(|e| refuse(file, Problem::Invalid(DisplayChain(&e).to_string())))?;
                if let Some(cache) = cache {
                    match component.serialize() {
                        Ok(code) => cache.store(&sha256, &code),
                        Err(e) => tracing::debug!("cannot serialize {file} for the cache: {e}"),
                    }
                }
                (component, false)
            }
        };
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;

        let ty = component.component_type();
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();

        let prefix = format!("{CONTRACT_PACKAGE}/");
        let ours: Option<(PluginKind, String)> = exports.iter().find_map(|name| {
            let rest = name.strip_prefix(&prefix)?;
            let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
            Some((PluginKind::from_interface(iface)?, version.to_owned()))
        });
        let Some((kind, contract_version)) = ours else {
            let found = if exports.is_empty() {
                "no exports".to_owned()
            } else {
                exports.join(", ")
            };
            return Err(refuse(file, Problem::NotAPlugin { found }));
        };
        if let Some(expected) = expected
            && expected != kind
        {
            return Err(refuse(
                file,
                Problem::WrongWorld {
                    expected: expected.world(),
                    found: kind.world(),
                },
            ));
        }
        if !compatible(&contract_version) {
            return Err(refuse(
                file,
                Problem::IncompatibleVersion {
                    found: if contract_version.is_empty() {
                        "(unversioned)".to_owned()
                    } else {
                        contract_version
                    },
                    supported: CONTRACT_VERSION,
                },
            ));
        }

        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| refuse(file, Problem::Imports(DisplayChain(&e).to_string())))?;
        let contract =
            |e: wasmtime::Error| refuse(file, Problem::Contract(DisplayChain(&e).to_string()));
        let indices = match kind {
            PluginKind::ProofSource => Indices::Proof(ProofIndices::new(&pre).map_err(contract)?),
            PluginKind::RoutingPolicy => {
                Indices::Policy(PolicyIndices::new(&pre).map_err(contract)?)
            }
        };

        // Ask the plugin who it is; this also proves it instantiates.
        let mut store = self.new_store(file);
        let start = |e: wasmtime::Error| refuse(file, Problem::Start(DisplayChain(&e).to_string()));
        let instance = pre.instantiate(&mut store).map_err(start)?;
        let info = match &indices {
            Indices::Proof(ix) => ix
                .load(&mut store, &instance)
                .map_err(contract)?
                .call_describe(&mut store),
            Indices::Policy(ix) => ix
                .load(&mut store, &instance)
                .map_err(contract)?
                .call_describe(&mut store),
        }
        .map_err(start)?;
        let info = info_in(info);
        if info.name.is_empty() || info.name.len() > 64 {
            return Err(refuse(
                file,
                Problem::Contract(format!(
                    "describe() must name the plugin in 1 to 64 bytes, got {:?}",
                    info.name
                )),
            ));
        }

        let iface = format!("{prefix}{}@{contract_version}", kind.interface());
        let functions = match kind {
            PluginKind::ProofSource => "describe, init, observe, query, snapshot, restore",
            PluginKind::RoutingPolicy => "describe, init, choose",
        };
        Ok(Compiled {
            pre,
            indices,
            inspection: Inspection {
                file: file.to_owned(),
                kind,
                info,
                contract_version,
                exports: vec![format!("{iface} {{ {functions} }}")],
                imports,
                sha256,
                size_bytes: bytes.len(),
                compile_ms,
                from_cache,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn semver_compatibility_of_the_contract() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.1.0"));
        assert!(!compatible(""));
        assert!(!compatible("x.y"));
    }
}
