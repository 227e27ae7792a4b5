//! Compiled-code cache on disk: `<sha256 of the component>-<engine hash>.cwasm`.
//!
//! The engine hash covers wasmtime's version and every compilation setting
//! (`Engine::precompile_compatibility_hash`), so a cache shared by two builds never hands one the
//! other's code. A file that fails to deserialize is deleted and recompiled.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub(crate) struct CodeCache {
    dir: PathBuf,
    engine_hash: u64,
    max_entries: usize,
}

/// The SHA-256 of a component's bytes, in hex.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl CodeCache {
    /// Open (creating) the cache folder; `None` (and a warning) when it cannot be created.
    pub(crate) fn open(dir: PathBuf, engine: &Engine, max_entries: usize) -> Option<Self> {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), "compiled-code cache disabled: {e}");
            return None;
        }
        // `DefaultHasher::new()` has fixed keys, so the hash is stable from run to run.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Some(CodeCache {
            dir,
            engine_hash: hasher.finish(),
            max_entries: max_entries.max(1),
        })
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir
            .join(format!("{hash}-{:016x}.cwasm", self.engine_hash))
    }

    /// The cached compilation of the component with this content hash, if any.
    pub(crate) fn load(&self, engine: &Engine, hash: &str) -> Option<Component> {
        let path = self.path(hash);
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file was written by `store` below from `Engine::precompile_component` of an
        // engine with the same compatibility hash (it is in the file name); the cache folder is
        // documented as trusted (`RuntimeConfig::cache_dir`). Wasmtime still checks the header
        // and engine compatibility and refuses a foreign or truncated file.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %path.display(), "dropping unusable cache entry: {e}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keep a compilation; failures only cost a recompilation later.
    pub(crate) fn store(&self, hash: &str, compiled: &[u8]) {
        let path = self.path(hash);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::write(&tmp, compiled).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(file = %path.display(), "could not write cache entry: {e}");
            return;
        }
        self.evict();
    }

    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if files.len() <= self.max_entries {
            return;
        }
        files.sort();
        let excess = files.len() - self.max_entries;
        for (_, path) in files.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
    }
}
