//! Changing what runs without stopping it: the procedures directory, the calendars and the
//! directory file are read again while `sopflow serve` runs (on a file-system event, or on
//! request), and each change goes through the same checks as at start-up.
//!
//! The files are the source of truth for what new instances start on; the store keeps
//! every version ever registered for the instances pinned to them. A valid file with a raised
//! version is registered; a refused one (errors, a changed text under the same version, a
//! lower version) leaves the version already running in service, is recorded once per text
//! in the deployments history and shown in `status()` until fixed; a removed file retires
//! its procedure. Calendars apply to due times computed afterwards. A directory change
//! swaps the people at once (a deactivated person's token and sessions stop working), and
//! their held tasks go back to their roles. Rescans run one at a time and never hold a lock
//! commands need. This module must not decide anything the engine or the validator decide.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::definition::diagnostic::FileReport;
use crate::definition::load::{self, Options, ValidProcedure};
use crate::directory::{self, Directory};
use crate::engine::changes::Refusal;
use crate::engine::deploy::Registered;
use crate::engine::instance::Actor;
use crate::engine::service::{Engine, ServiceError};
use crate::store::Store;

mod routes;
mod watch;

pub use watch::{watch, Watching};

/// The people as they are now, shared by the HTTP layer and the reloader.
pub type SharedDirectory = Arc<RwLock<Arc<Directory>>>;

/// The files a server runs on.
#[derive(Debug, Clone)]
pub struct Sources {
    pub procedures: PathBuf,
    /// Calendar files (default `calendars/` beside the procedures directory).
    pub calendars: Option<PathBuf>,
    pub directory: PathBuf,
    /// The webhook subscriptions file, if the server has one.
    pub webhooks: Option<PathBuf>,
}

/// What the message routes are built from besides the files: the web app's address for
/// links, and whether mail is sent at all (a mail server is configured).
#[derive(Debug, Clone, Default)]
pub struct RouteSettings {
    pub public_url: Option<String>,
    pub mail: bool,
}

/// A file whose current text is refused, with every problem as `file:line:col: sentence`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FileProblem {
    pub file: String,
    pub problems: Vec<String>,
}

/// What one rescan did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    /// `id vN (file)` for each version registered or procedure restored.
    pub registered: Vec<String>,
    /// Files refused by this rescan (each refusal is recorded once per text).
    pub refused: Vec<FileProblem>,
    /// Procedures retired because their file is gone.
    pub retired: Vec<String>,
    /// Set when the calendars were replaced.
    pub calendars_applied: bool,
    /// Set when the directory file was applied.
    pub directory_applied: bool,
    /// Tasks given back to their roles because their holder was deactivated.
    pub tasks_returned: usize,
}

/// The state the process-owner page shows: files refused now, and the last rescan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReloadStatus {
    pub refused_now: Vec<FileProblem>,
    pub last: ReloadReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What the reloader knows of a file from its last look.
#[derive(Debug, Clone)]
struct Seen {
    hash: String,
    /// The procedure it held when last valid (a file broken later still holds it).
    id: Option<String>,
    /// Its problems, when its current text is refused.
    refused: Option<Vec<String>>,
}

#[derive(Default)]
struct Memory {
    files: BTreeMap<String, Seen>,
    calendars: Option<String>,
    directory: Option<String>,
    directory_refused: Option<FileProblem>,
    calendars_refused: Vec<FileProblem>,
    webhooks: Option<String>,
    webhooks_refused: Option<FileProblem>,
    hooks: Vec<crate::outbox::Subscription>,
}

/// Reads the files again and applies what changed.
pub struct Reloader<S: Store> {
    engine: Arc<Engine<S>>,
    sources: Sources,
    people: SharedDirectory,
    memory: tokio::sync::Mutex<Memory>,
    status: RwLock<ReloadStatus>,
    routes: RouteSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Engine(#[from] ServiceError),
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

fn hash_of(text: &str) -> String {
    load::hash_hex(text.as_bytes())
}

impl<S: Store> Reloader<S> {
    /// A reloader for a server whose files were just loaded by `setup`: the first
    /// `rescan` notes them as they are.
    pub fn new(engine: Arc<Engine<S>>, sources: Sources, people: SharedDirectory) -> Self {
        Reloader {
            engine,
            sources,
            people,
            memory: tokio::sync::Mutex::new(Memory::default()),
            status: RwLock::new(ReloadStatus::default()),
            routes: RouteSettings::default(),
        }
    }

    /// Builds the engine's message routes with `settings` on every rescan.
    pub fn with_routes(mut self, settings: RouteSettings) -> Self {
        self.routes = settings;
        self
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// What is refused now and what the last rescan did.
    pub fn status(&self) -> ReloadStatus {
        self.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn calendars_dir(&self) -> Option<PathBuf> {
        self.sources
            .calendars
            .clone()
            .or_else(|| load::calendars_dir_for(&self.sources.procedures))
    }

    /// Whether a changed path concerns the reloader (the watcher's filter): a visible
    /// `.toml` file in the procedures or calendars directory, or the directory file.
    pub fn concerns(&self, path: &Path) -> bool {
        let same = |file: &Path| {
            path == file
                || path.file_name() == file.file_name()
                    && path.parent().map(canon) == file.parent().map(canon)
        };
        if same(&self.sources.directory) || self.sources.webhooks.as_deref().is_some_and(same) {
            return true;
        }
        let visible_toml = path.extension().is_some_and(|e| e == "toml")
            && !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        let parent = path.parent().map(canon);
        visible_toml
            && (parent == Some(canon(&self.sources.procedures))
                || self
                    .calendars_dir()
                    .is_some_and(|c| parent == Some(canon(&c))))
    }

    /// Reads every file again and applies what changed. One at a time.
    pub async fn rescan(&self) -> Result<ReloadReport, ReloadError> {
        let mut mem = self.memory.lock().await;
        let mut report = ReloadReport::default();
        self.rescan_procedures(&mut mem, &mut report).await?;
        self.rescan_directory(&mut mem, &mut report).await?;
        self.rescan_webhooks(&mut mem, &mut report);
        self.apply_routes(&mem);
        let mut refused_now: Vec<FileProblem> = mem
            .files
            .iter()
            .filter_map(|(f, s)| {
                s.refused.clone().map(|problems| FileProblem {
                    file: f.clone(),
                    problems,
                })
            })
            .collect();
        refused_now.extend(mem.calendars_refused.iter().cloned());
        refused_now.extend(mem.directory_refused.iter().cloned());
        refused_now.extend(mem.webhooks_refused.iter().cloned());
        *self.status.write().unwrap_or_else(|p| p.into_inner()) = ReloadStatus {
            refused_now,
            last: report.clone(),
            last_at: Some(self.engine.clock().now()),
        };
        Ok(report)
    }

    async fn rescan_procedures(
        &self,
        mem: &mut Memory,
        report: &mut ReloadReport,
    ) -> Result<(), ReloadError> {
        let dir = &self.sources.procedures;
        let v = load::validate_paths(
            std::slice::from_ref(dir),
            &Options {
                calendars_dir: self.sources.calendars.clone(),
                registers_dir: None,
                coverage_from: None,
            },
        );
        let files: Vec<String> = load::toml_files(dir)
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let file_set: HashSet<&String> = files.iter().collect();
        // Calendars: all or nothing, so deadlines never mix an old and a new file.
        let cal_reports: Vec<&FileReport> = v
            .reports
            .iter()
            .filter(|r| !file_set.contains(&r.path))
            .collect();
        let cal_hash = hash_of(
            &cal_reports
                .iter()
                .map(|r| format!("{}\u{0}{}\u{0}", r.path, r.source))
                .collect::<String>(),
        );
        if mem.calendars.as_deref() != Some(cal_hash.as_str()) {
            let broken: Vec<FileProblem> = cal_reports
                .iter()
                .filter(|r| r.errors() > 0)
                .map(|r| FileProblem {
                    file: r.path.clone(),
                    problems: r.error_lines(),
                })
                .collect();
            if broken.is_empty() {
                if mem.calendars.is_some() {
                    self.engine.set_calendars(&v.calendars);
                    report.calendars_applied = true;
                    tracing::info!("calendars reloaded; due times computed from now on use them");
                }
            } else {
                for b in &broken {
                    tracing::warn!(file = %b.file, problems = ?b.problems, "calendar refused; the calendars already loaded stay");
                    self.engine
                        .record_refusal(
                            Refusal {
                                procedure: None,
                                version: None,
                                hash: cal_hash.clone(),
                                origin: b.file.clone(),
                                problems: b.problems.clone(),
                            },
                            None,
                        )
                        .await?;
                }
                report.refused.extend(broken.iter().cloned());
            }
            mem.calendars_refused = broken;
            mem.calendars = Some(cal_hash);
        }
        let valid: HashMap<&str, &ValidProcedure> =
            v.valid.iter().map(|p| (p.path.as_str(), p)).collect();
        for file in &files {
            let Some(r) = v.reports.iter().find(|r| &r.path == file) else {
                continue;
            };
            let hash = hash_of(&r.source);
            let before = mem.files.get(file).cloned();
            let same_text = before.as_ref().is_some_and(|b| b.hash == hash);
            if same_text && before.as_ref().is_some_and(|b| b.refused.is_none()) {
                continue;
            }
            let known_id = before.as_ref().and_then(|b| b.id.clone());
            let outcome: Result<(String, Option<Registered>), Vec<String>> =
                match valid.get(file.as_str()) {
                    None => Err(r.error_lines()),
                    Some(p) => match self.engine.deploy_all(std::slice::from_ref(*p), None).await {
                        Ok(mut done) => Ok((p.procedure.id.clone(), done.pop())),
                        Err(
                            e @ (ServiceError::ProcedureChanged { .. }
                            | ServiceError::VersionNotRaised { .. }
                            | ServiceError::Corrupt(_)),
                        ) => Err(vec![format!("{file}: {e}")]),
                        Err(e) => return Err(e.into()),
                    },
                };
            match outcome {
                Ok((id, done)) => {
                    match done {
                        Some(
                            Registered::New { id, version } | Registered::Restored { id, version },
                        ) => {
                            tracing::info!(procedure = %id, version, %file, "procedure registered");
                            report.registered.push(format!("{id} v{version} ({file})"));
                        }
                        Some(Registered::Unchanged { .. }) | None => {}
                    }
                    mem.files.insert(
                        file.clone(),
                        Seen {
                            hash,
                            id: Some(id),
                            refused: None,
                        },
                    );
                }
                Err(problems) => {
                    let unchanged = same_text
                        && before.as_ref().and_then(|b| b.refused.as_ref()) == Some(&problems);
                    if !unchanged {
                        tracing::warn!(%file, ?problems, "procedure file refused; the version already running keeps serving");
                        let claimed = load::parse_procedure(&r.source);
                        self.engine
                            .record_refusal(
                                Refusal {
                                    procedure: claimed.as_ref().map(|p| p.id.clone()),
                                    version: claimed.as_ref().map(|p| p.version),
                                    hash: hash.clone(),
                                    origin: file.clone(),
                                    problems: problems.clone(),
                                },
                                None,
                            )
                            .await?;
                        report.refused.push(FileProblem {
                            file: file.clone(),
                            problems: problems.clone(),
                        });
                    }
                    mem.files.insert(
                        file.clone(),
                        Seen {
                            hash,
                            id: known_id,
                            refused: Some(problems),
                        },
                    );
                }
            }
        }
        // Files gone: their procedures retire, unless another file still holds them.
        let gone: Vec<(String, Seen)> = mem
            .files
            .iter()
            .filter(|(f, _)| !file_set.contains(f))
            .map(|(f, s)| (f.clone(), s.clone()))
            .collect();
        for (f, _) in &gone {
            mem.files.remove(f);
        }
        let held: HashSet<String> = mem.files.values().filter_map(|s| s.id.clone()).collect();
        for (f, s) in gone {
            if let Some(id) = s.id.filter(|id| !held.contains(id)) {
                if self.engine.retire(&id, &f, None).await? {
                    tracing::info!(procedure = %id, file = %f, "procedure retired: its file was removed");
                    report.retired.push(id);
                }
            }
        }
        Ok(())
    }

    async fn rescan_directory(
        &self,
        mem: &mut Memory,
        report: &mut ReloadReport,
    ) -> Result<(), ReloadError> {
        let path = &self.sources.directory;
        let text = std::fs::read(path).unwrap_or_default();
        let hash = load::hash_hex(&text);
        if mem.directory.as_deref() == Some(hash.as_str()) {
            return Ok(());
        }
        let first = mem.directory.is_none();
        mem.directory = Some(hash.clone());
        let (people, file) = directory::load(path);
        let Some(people) = people else {
            let problem = FileProblem {
                file: path.display().to_string(),
                problems: file.error_lines(),
            };
            tracing::warn!(file = %problem.file, problems = ?problem.problems, "directory file refused; the people already loaded stay");
            self.engine
                .record_refusal(
                    Refusal {
                        procedure: None,
                        version: None,
                        hash,
                        origin: problem.file.clone(),
                        problems: problem.problems.clone(),
                    },
                    None,
                )
                .await?;
            report.refused.push(problem.clone());
            mem.directory_refused = Some(problem);
            return Ok(());
        };
        mem.directory_refused = None;
        if first {
            return Ok(());
        }
        let people = Arc::new(people);
        let old = {
            let mut slot = self.people.write().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *slot, people.clone())
        };
        self.engine.set_roster(people.clone());
        report.directory_applied = true;
        tracing::info!("directory file reloaded");
        for u in old.users() {
            let still = Actor::from_directory(&people, &u.id).is_some();
            if u.active && !still {
                let n = self
                    .engine
                    .return_tasks_of(&u.id, "deactivated in the directory file")
                    .await?;
                report.tasks_returned += n;
            }
        }
        Ok(())
    }

    /// Deploys a procedure text a person submitted: the same checks as a file, against
    /// the registered procedures; when clean, the text is written to the procedures
    /// directory (replacing the file that holds that procedure, else `<id>.toml`) and
    /// registered through the same path as a file. A refused text is recorded and changes
    /// nothing. Returns the validation and what was registered.
    pub async fn deploy_text(
        &self,
        text: &str,
        by: &Actor,
    ) -> Result<(load::Validation, Option<Registered>), ReloadError> {
        let mut mem = self.memory.lock().await;
        let claimed = load::parse_procedure(text);
        let target = claimed.as_ref().map(|p| {
            mem.files
                .iter()
                .find(|(_, s)| s.id.as_deref() == Some(p.id.as_str()))
                .map(|(f, _)| PathBuf::from(f))
                .unwrap_or_else(|| self.sources.procedures.join(format!("{}.toml", p.id)))
        });
        let name = target
            .as_ref()
            .map_or_else(|| "submitted.toml".to_string(), |t| t.display().to_string());
        let others: Vec<crate::definition::model::Procedure> = self
            .engine
            .procedures()
            .iter()
            .filter(|c| claimed.as_ref().is_none_or(|p| p.id != c.id()))
            .map(|c| c.def.clone())
            .collect();
        let cal_ids = self.engine.calendar_ids();
        let registers: Vec<_> = self.engine.registers().defs().cloned().collect();
        let v = load::validate_text_with(&name, text, &others, &cal_ids, &registers);
        let hash = hash_of(text);
        let refuse = |problems: Vec<String>| Refusal {
            procedure: claimed.as_ref().map(|p| p.id.clone()),
            version: claimed.as_ref().map(|p| p.version),
            hash: hash.clone(),
            origin: "api".into(),
            problems,
        };
        let (Some(valid), Some(target)) = (v.valid.first().cloned(), target) else {
            let problems = v.reports.iter().flat_map(FileReport::error_lines).collect();
            self.engine
                .record_refusal(refuse(problems), Some(by))
                .await?;
            return Ok((v, None));
        };
        if let Err(e) = self.engine.check_registration(&valid) {
            self.engine
                .record_refusal(refuse(vec![e.to_string()]), Some(by))
                .await?;
            return Err(e.into());
        }
        // Written beside, then renamed over: the watcher never sees half a file.
        let tmp = target.with_file_name(format!(
            ".{}.deploying",
            target
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        ));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &target))
            .map_err(|error| ReloadError::Write {
                path: target.display().to_string(),
                error,
            })?;
        let valid = ValidProcedure {
            path: target.display().to_string(),
            ..valid
        };
        let mut done = self
            .engine
            .deploy_all(std::slice::from_ref(&valid), Some(by))
            .await?;
        mem.files.insert(
            valid.path.clone(),
            Seen {
                hash,
                id: Some(valid.procedure.id.clone()),
                refused: None,
            },
        );
        Ok((v, done.pop()))
    }
}

fn canon(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}
