//! `routefabric plugin …`: what a plugin author runs on a built component.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use routefabric_builtin::BuiltinPlugin;
use routefabric_core::NodeId;
use routefabric_runtime::{
    CONTRACT_PACKAGE, CONTRACT_VERSION, Inspection, LoadError, LoadOutcome, Problem, Registry,
    Runtime, RuntimeConfig, SwapError, Watcher,
};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Validate a plugin component and print its world, name, version and exports.
    ///
    /// Exits 0 for a usable plugin; for any other file prints one line saying what is wrong and
    /// exits 1.
    Check {
        /// A `.wasm` file, or `builtin:NAME` for a plugin embedded in this binary.
        file: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the plugins embedded in this binary.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the embedded plugins to a folder, as `.wasm` files.
    Export {
        /// The folder (created if missing).
        dir: PathBuf,
    },
    /// Run the built-in plugins overlaid by a plugin folder, and hot-swap whatever is written to
    /// the folder, printing each outcome: the node's plugin host, without the network.
    Watch {
        /// The plugin folder; a plugin in it replaces the built-in of the same name.
        dir: PathBuf,
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
        /// Start without the built-in plugins.
        #[arg(long)]
        no_builtins: bool,
    },
}

pub(crate) fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Check { file, json } => check(&file, json),
        PluginCommand::List { json } => list(json),
        PluginCommand::Export { dir } => export(&dir),
        PluginCommand::Watch {
            dir,
            seconds,
            no_builtins,
        } => watch(&dir, seconds.map(Duration::from_secs), !no_builtins),
    }
}

fn builtin(name: &str) -> Option<&'static BuiltinPlugin> {
    let name = name.trim_end_matches(".wasm");
    routefabric_builtin::ALL
        .iter()
        .find(|p| p.file_name.trim_end_matches(".wasm") == name)
}

fn runtime() -> anyhow::Result<Runtime> {
    Runtime::new(RuntimeConfig::default()).context("cannot start the plugin runtime")
}

fn check(file: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let bytes: Result<Vec<u8>, LoadError> = match file.strip_prefix("builtin:") {
        Some(name) => builtin(name)
            .map(|p| p.bytes.to_vec())
            .ok_or_else(|| LoadError {
                file: file.to_owned(),
                problem: Problem::Read(format!(
                    "no built-in plugin named `{name}` (see `routefabric plugin list`)"
                )),
            }),
        None => std::fs::read(file).map_err(|e| LoadError {
            file: file.to_owned(),
            problem: Problem::Read(e.to_string()),
        }),
    };
    let outcome = bytes.and_then(|bytes| {
        runtime()
            .map_err(|e| LoadError {
                file: file.to_owned(),
                problem: Problem::Start(format!("{e:#}")),
            })?
            .inspect(file, &bytes)
    });
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(inspection) => {
            if as_json {
                writeln!(out, "{}", inspection_json(&inspection))?;
            } else {
                print_inspection(&mut out, &inspection)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            if as_json {
                let value =
                    json!({ "ok": false, "file": file, "error": error.problem.to_string() });
                writeln!(out, "{value}")?;
            } else {
                eprintln!("error: {error}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn inspection_json(i: &Inspection) -> serde_json::Value {
    json!({
        "ok": true,
        "file": i.file,
        "world": i.kind.world(),
        "name": i.info.name,
        "version": i.info.version,
        "description": i.info.description,
        "contract": format!("{CONTRACT_PACKAGE}@{}", i.contract_version),
        "exports": i.exports,
        "imports": i.imports,
        "sha256": i.sha256,
        "size_bytes": i.size_bytes,
        "compile_ms": (i.compile_ms * 100.0).round() / 100.0,
        "from_cache": i.from_cache,
    })
}

fn print_inspection(out: &mut impl Write, i: &Inspection) -> std::io::Result<()> {
    writeln!(
        out,
        "ok: {} {} — {}",
        i.info.name, i.info.version, i.info.description
    )?;
    writeln!(
        out,
        "  world     {} ({CONTRACT_PACKAGE}@{}; this host: @{CONTRACT_VERSION})",
        i.kind.world(),
        i.contract_version
    )?;
    for export in &i.exports {
        writeln!(out, "  exports   {export}")?;
    }
    writeln!(out, "  imports   {}", i.imports.join(", "))?;
    writeln!(
        out,
        "  file      {} ({:.1} KiB, sha256 {}…)",
        i.file,
        i.size_bytes as f64 / 1024.0,
        &i.sha256[..16]
    )?;
    writeln!(
        out,
        "  compiled  in {:.1} ms{}",
        i.compile_ms,
        if i.from_cache {
            " (from the compiled-code cache)"
        } else {
            ""
        }
    )
}

fn list(as_json: bool) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    for plugin in routefabric_builtin::ALL {
        let inspection = runtime
            .inspect(&format!("builtin:{}", plugin.file_name), plugin.bytes)
            .with_context(|| format!("built-in plugin {} is unusable", plugin.file_name))?;
        rows.push(inspection);
    }
    if as_json {
        let values: Vec<_> = rows.iter().map(inspection_json).collect();
        writeln!(out, "{}", serde_json::Value::Array(values))?;
    } else {
        for i in &rows {
            writeln!(
                out,
                "{:<16} {:<8} {:<15} {}",
                i.info.name,
                i.info.version,
                i.kind.world(),
                i.info.description
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn export(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for plugin in routefabric_builtin::ALL {
        let path = dir.join(plugin.file_name);
        std::fs::write(&path, plugin.bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Debounce of the plugin folder watcher: long enough for a copy to finish, short enough that a
/// swap lands well within 100 ms.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(20);

fn describe(outcome: &Result<LoadOutcome, SwapError>) -> String {
    match outcome {
        Ok(LoadOutcome::Added {
            kind,
            name,
            version,
        }) => format!("loaded   {name} {version} ({})", kind.world()),
        Ok(LoadOutcome::Swapped { name, from, to, .. }) => {
            format!("swapped  {name} {from} → {to} (state carried over)")
        }
        Ok(LoadOutcome::Unchanged { name }) => format!("same     {name} (identical bytes)"),
        Err(e) => format!("refused  {e}"),
    }
}

fn watch(
    dir: &std::path::Path,
    limit: Option<Duration>,
    builtins: bool,
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // A stand-in identity: plugins only use it to recognise routes to themselves.
    let registry = Arc::new(Registry::new(
        runtime()?,
        NodeId::from_index(1),
        Default::default(),
    ));
    if builtins {
        for plugin in routefabric_builtin::ALL {
            let outcome =
                registry.load_bytes(&format!("builtin:{}", plugin.file_name), plugin.bytes);
            println!("{}", describe(&outcome));
        }
    }
    for (_, outcome) in registry
        .load_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
    {
        println!("{}", describe(&outcome));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let _watcher = Watcher::start(registry.clone(), dir, WATCH_DEBOUNCE, Some(tx))?;
    println!(
        "watching {} — write a .wasm there to hot-swap it",
        dir.display()
    );
    let started = Instant::now();
    loop {
        let wait = match limit {
            Some(limit) => match limit.checked_sub(started.elapsed()) {
                Some(left) => left,
                None => break,
            },
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok((_, outcome)) => println!("{}", describe(&outcome)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let set = registry.plugins();
    for (name, p) in &set.proof_sources {
        println!("{name}: {:?}", p.stats());
    }
    for (name, p) in &set.policies {
        println!("{name}: {:?}", p.stats());
    }
    Ok(ExitCode::SUCCESS)
}
