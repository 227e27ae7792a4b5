//! The engine's view of the wasmtime plugin registry.

use std::sync::Arc;

use routefabric_core::NodeId;
use routefabric_core::plugin::{HostedProofSource, HostedRoutingPolicy};
use routefabric_runtime::{Registry, Runtime, SwapError};

use crate::engine::Plugins;

/// A node's plugin registry as the engine consults it: every loaded proof source, and the
/// routing policy the registry has active (selecting another one takes effect at the next
/// decision).
#[derive(Debug, Clone)]
pub struct RegistryPlugins(pub Arc<Registry>);

impl Plugins for RegistryPlugins {
    fn proof_sources(&self) -> Vec<(String, Arc<dyn HostedProofSource>)> {
        self.0
            .plugins()
            .proof_sources
            .iter()
            .map(|(name, s)| (name.clone(), s.clone() as Arc<dyn HostedProofSource>))
            .collect()
    }

    fn policy(&self) -> Option<(String, Arc<dyn HostedRoutingPolicy>)> {
        let policy = self.0.active_policy()?;
        Some((
            policy.name().to_owned(),
            policy as Arc<dyn HostedRoutingPolicy>,
        ))
    }
}

/// A registry for node `me` holding every plugin embedded in this binary.
pub fn builtin_registry(runtime: &Runtime, me: NodeId) -> Result<Arc<Registry>, SwapError> {
    let registry = Registry::new(runtime.clone(), me, Default::default());
    for plugin in routefabric_builtin::ALL {
        registry.load_bytes(plugin.file_name, plugin.bytes)?;
    }
    Ok(Arc::new(registry))
}
