//! Hot reload: a `notify` watcher on the plugin folder feeds a bounded channel; a reload thread
//! loads each changed file through the [`Registry`] (compile, canary, state transfer, atomic swap)
//! — all off the callers' path.
//!
//! When a file is complete — renamed into the folder (how deployment tools publish a file) or
//! closed by the process that wrote it — it is loaded at once. Other events (a write still under
//! way, an editor's in-place save without close events on some platforms) wait until the folder
//! has been quiet for the debounce interval.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher as _};

use crate::error::SwapError;
use crate::registry::{LoadOutcome, Registry, is_plugin_file};

/// File events buffered between the watcher and the reload thread. When full, the reload thread
/// rescans the whole folder instead, so no change is lost.
const EVENT_QUEUE: usize = 1024;

/// Why the folder cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The watcher could not be set up.
    #[error("cannot watch {dir}: {source}")]
    Notify {
        /// The folder.
        dir: String,
        /// The cause.
        source: notify::Error,
    },
    /// The reload thread could not be started.
    #[error("cannot start the plugin reload thread: {0}")]
    Thread(std::io::Error),
}

/// A report of one reload, for whoever wants to follow them.
pub type ReloadReport = (PathBuf, Result<LoadOutcome, SwapError>);

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _notify: notify::RecommendedWatcher,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Watcher {
    /// Watch `dir` and load every `*.wasm` written there into `registry`, once the folder has
    /// been quiet for `debounce`. Each outcome is logged and, if `reports` is given, sent there
    /// (dropped when that channel is full).
    pub fn start(
        registry: Arc<Registry>,
        dir: &Path,
        debounce: Duration,
        reports: Option<SyncSender<ReloadReport>>,
    ) -> Result<Self, WatchError> {
        let (tx, rx) = mpsc::sync_channel::<(PathBuf, bool)>(EVENT_QUEUE);
        let overflow = Arc::new(AtomicBool::new(false));
        let notify_error = |source| WatchError::Notify {
            dir: dir.display().to_string(),
            source,
        };
        let mut watcher = {
            let overflow = overflow.clone();
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else {
                    overflow.store(true, Ordering::Relaxed);
                    return;
                };
                let relevant = matches!(
                    event.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any
                ) || matches!(
                    event.kind,
                    EventKind::Access(notify::event::AccessKind::Close(
                        notify::event::AccessMode::Write
                    ))
                );
                if !relevant {
                    return;
                }
                use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
                let complete = matches!(
                    event.kind,
                    EventKind::Access(AccessKind::Close(AccessMode::Write))
                        | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                );
                for path in event.paths {
                    if is_plugin_file(&path) {
                        match tx.try_send((path, complete)) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => overflow.store(true, Ordering::Relaxed),
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                }
            })
            .map_err(notify_error)?
        };
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(notify_error)?;

        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let dir = dir.to_path_buf();
            thread::Builder::new()
                .name("routefabric-plugin-reload".into())
                .spawn(move || reload_loop(registry, dir, rx, overflow, stop, debounce, reports))
                .map_err(WatchError::Thread)?
        };
        Ok(Watcher {
            _notify: watcher,
            stop,
            thread: Some(thread),
        })
    }
}

fn reload_loop(
    registry: Arc<Registry>,
    dir: PathBuf,
    rx: mpsc::Receiver<(PathBuf, bool)>,
    overflow: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    debounce: Duration,
    reports: Option<SyncSender<ReloadReport>>,
) {
    // How often the thread looks at `stop` when nothing happens.
    const IDLE_POLL: Duration = Duration::from_millis(50);
    // Files that changed, and whether their last event said they are complete.
    let mut pending: BTreeMap<PathBuf, bool> = BTreeMap::new();
    let mut rescan = false;
    let mut last_event = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let wait = if pending.values().any(|&complete| complete) {
            Duration::ZERO
        } else if pending.is_empty() && !rescan {
            IDLE_POLL
        } else {
            debounce.saturating_sub(last_event.elapsed())
        };
        match rx.recv_timeout(wait) {
            Ok((path, complete)) => {
                // The latest event decides: a write after a close makes the file incomplete.
                pending.insert(path, complete);
                last_event = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if overflow.swap(false, Ordering::Relaxed) {
            rescan = true;
        }
        let quiet = last_event.elapsed() >= debounce;
        if rescan && quiet {
            rescan = false;
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for path in entries.filter_map(Result::ok).map(|e| e.path()) {
                    if is_plugin_file(&path) {
                        pending.insert(path, true);
                    }
                }
            }
        }
        let ready: Vec<PathBuf> = pending
            .iter()
            .filter(|&(_, &complete)| complete || quiet)
            .map(|(path, _)| path.clone())
            .collect();
        for path in &ready {
            pending.remove(path);
        }
        for path in ready {
            if !path.is_file() {
                tracing::warn!(file = %path.display(), "plugin file removed; the plugin keeps running until a new version is written");
                continue;
            }
            let outcome = registry.load_file(&path);
            match &outcome {
                Ok(LoadOutcome::Unchanged { .. }) => {}
                Ok(done) => tracing::info!(file = %path.display(), "{done:?}"),
                Err(e) => tracing::warn!("plugin refused: {e}"),
            }
            if let Some(reports) = &reports {
                let _ = reports.try_send((path, outcome));
            }
        }
    }
}
