//! Watching the source files: a debounced file watcher that asks the reloader to rescan
//! after each burst of changes to a file it reads. It must not read or apply files itself.

use super::*;

/// A running file watcher; dropping it stops the watching.
pub type Watching = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Watches the sources and rescans after each burst of changes (debounced, so an editor's
/// save — temp file, rename, write — is one rescan of the finished file).
pub fn watch<S: Store>(reloader: Arc<Reloader<S>>) -> Result<Watching, notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let filter = reloader.clone();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        std::time::Duration::from_millis(300),
        None,
        move |res: notify_debouncer_full::DebounceEventResult| {
            let relevant = match res {
                Ok(events) => events
                    .iter()
                    .any(|e| e.paths.iter().any(|p| filter.concerns(p))),
                Err(errors) => {
                    tracing::warn!(?errors, "watching the procedure files failed");
                    false
                }
            };
            if relevant {
                // A rescan reads everything: one pending is enough, more would repeat it.
                let _ = tx.try_send(());
            }
        },
    )?;
    let mut dirs: Vec<PathBuf> = vec![reloader.sources.procedures.clone()];
    if let Some(c) = reloader.calendars_dir() {
        dirs.push(c);
    }
    let parent = reloader
        .sources
        .directory
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    dirs.push(parent);
    if let Some(w) = &reloader.sources.webhooks {
        dirs.push(match w.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        });
    }
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        debouncer.watch(d, notify::RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            if let Err(e) = reloader.rescan().await {
                tracing::error!(error = %e, "reloading the procedure files failed");
            }
        }
    });
    Ok(debouncer)
}
