//! The compiled directory the engine and the HTTP layer look people up in: by id, by role,
//! by token hash, with department ancestry. Built only from a directory without errors; it
//! answers questions and must not decide who may do a step (the engine's rules do).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use indexmap::IndexMap;
use thiserror::Error;

use crate::definition::diagnostic::Diagnostic;
use crate::definition::source::{ptr, SpannedDoc};

use super::model::{Department, DirectoryFile, User};
use super::token::token_hash;

/// A checked directory with its lookups built: cheap to clone (one `Arc`), safe to share
/// between threads.
///
/// Inactive users keep their record, since the history names them, but hold no role and cannot
/// sign in: [`holds`](Self::holds), [`users_with_role`](Self::users_with_role) and
/// [`by_token_hash`](Self::by_token_hash) ignore them, while [`user`](Self::user),
/// [`roles_of`](Self::roles_of), [`department_of`](Self::department_of) and
/// [`level_of`](Self::level_of) describe the record as written.
#[derive(Debug, Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: DirectoryFile,
    by_id: HashMap<String, usize>,
    /// Active holders of each role, in file order.
    by_role: HashMap<String, Vec<usize>>,
    /// Lower-case hex hash → active user.
    by_token: HashMap<String, usize>,
    role_spans: HashMap<String, Range<usize>>,
    roles_span: Option<Range<usize>>,
}

/// Why a directory built in code was refused.
#[derive(Debug, Error)]
#[error("the directory has {} error(s); first: {}", .0.len(), .0.first().map_or("", |d| d.message.as_str()))]
pub struct DirectoryError(pub Vec<Diagnostic>);

impl Directory {
    /// Checks a directory built in code (tests, tools) and compiles it. Diagnostics point
    /// nowhere, as there is no file.
    pub fn from_file(file: DirectoryFile) -> Result<Directory, DirectoryError> {
        let empty = SpannedDoc::parse("").map_err(DirectoryError)?;
        let errors: Vec<Diagnostic> = super::check::check(&file, &empty)
            .into_iter()
            .filter(Diagnostic::is_error)
            .collect();
        if errors.is_empty() {
            Ok(Directory::compile(file, &empty))
        } else {
            Err(DirectoryError(errors))
        }
    }

    pub(super) fn compile(file: DirectoryFile, doc: &SpannedDoc) -> Directory {
        let mut by_id = HashMap::new();
        let mut by_role: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_token = HashMap::new();
        for (i, u) in file.users.iter().enumerate() {
            by_id.entry(u.id.clone()).or_insert(i);
            if !u.active {
                continue;
            }
            for r in &u.roles {
                let holders = by_role.entry(r.clone()).or_default();
                if !holders.contains(&i) {
                    holders.push(i);
                }
            }
            for h in &u.token_sha256 {
                by_token.entry(h.to_ascii_lowercase()).or_insert(i);
            }
        }
        let role_spans = file
            .roles
            .keys()
            .filter_map(|r| doc.key_span(&ptr(&["roles", r])).map(|s| (r.clone(), s)))
            .collect();
        let roles_span = doc.key_span("/roles").or_else(|| doc.first_key_span());
        Directory {
            inner: Arc::new(Inner {
                file,
                by_id,
                by_role,
                by_token,
                role_spans,
                roles_span,
            }),
        }
    }

    /// Where role `role` is declared in the file, if the directory was loaded from one.
    pub(super) fn role_span(&self, role: &str) -> Option<Range<usize>> {
        self.inner.role_spans.get(role).cloned()
    }

    /// Where `[roles]` is (or, without it, the file's first key).
    pub(super) fn roles_span(&self) -> Option<Range<usize>> {
        self.inner.roles_span.clone()
    }

    /// The file the directory was compiled from.
    pub fn file(&self) -> &DirectoryFile {
        &self.inner.file
    }

    /// Every user, active or not, in file order.
    pub fn users(&self) -> &[User] {
        &self.inner.file.users
    }

    /// The user with this id, active or not.
    pub fn user(&self, id: &str) -> Option<&User> {
        self.inner.by_id.get(id).map(|&i| &self.inner.file.users[i])
    }

    /// The active users holding `role`, in file order: those a step of the role is offered to.
    pub fn users_with_role<'a>(&'a self, role: &str) -> impl Iterator<Item = &'a User> + 'a {
        let idx: &'a [usize] = self.inner.by_role.get(role).map_or(&[], Vec::as_slice);
        idx.iter().map(move |&i| &self.inner.file.users[i])
    }

    /// Whether `user` is active and holds `role`.
    pub fn holds(&self, user: &str, role: &str) -> bool {
        match (self.inner.by_id.get(user), self.inner.by_role.get(role)) {
            (Some(i), Some(holders)) => holders.contains(i),
            _ => false,
        }
    }

    /// The roles written for `user` (empty for an unknown user).
    pub fn roles_of(&self, user: &str) -> &[String] {
        self.user(user).map_or(&[], |u| u.roles.as_slice())
    }

    /// The id of `user`'s department.
    pub fn department_of(&self, user: &str) -> Option<&str> {
        self.user(user).map(|u| u.department.as_str())
    }

    /// `user`'s level (1 staff … 5 general manager).
    pub fn level_of(&self, user: &str) -> Option<u8> {
        self.user(user).map(|u| u.level)
    }

    /// The active user one of whose token hashes is `hash` (hex, either case). Hashes are not
    /// secrets, so no constant-time comparison is needed.
    pub fn by_token_hash(&self, hash: &str) -> Option<&User> {
        self.inner
            .by_token
            .get(&hash.to_ascii_lowercase())
            .map(|&i| &self.inner.file.users[i])
    }

    /// The active user a presented API token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&User> {
        self.by_token_hash(&token_hash(token))
    }

    /// The declared roles with their descriptions.
    pub fn roles(&self) -> &IndexMap<String, String> {
        &self.inner.file.roles
    }

    /// The declared departments.
    pub fn departments(&self) -> &IndexMap<String, Department> {
        &self.inner.file.departments
    }

    /// A declared department.
    pub fn department(&self, id: &str) -> Option<&Department> {
        self.inner.file.departments.get(id)
    }

    /// Whether `ancestor` is a parent, grandparent… of `dept` (not `dept` itself).
    pub fn is_ancestor_department(&self, ancestor: &str, dept: &str) -> bool {
        let departments = &self.inner.file.departments;
        let mut at = dept;
        // Cycles are refused when loading; the bound keeps a bug from looping forever.
        for _ in 0..departments.len() {
            match departments.get(at).and_then(|d| d.parent.as_deref()) {
                Some(p) if p == ancestor => return true,
                Some(p) => at = p,
                None => return false,
            }
        }
        false
    }

    /// Whether `dept` is `within` or one of its sub-departments.
    pub fn is_within_department(&self, dept: &str, within: &str) -> bool {
        dept == within || self.is_ancestor_department(within, dept)
    }

    /// Whether `user` belongs to department `dept` or one of its sub-departments: what
    /// `separation.not_from_department` rules out.
    pub fn user_in_department(&self, user: &str, dept: &str) -> bool {
        self.department_of(user)
            .is_some_and(|d| self.is_within_department(d, dept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::fixtures::small;

    #[test]
    fn lookups() {
        let (d, report) = small();
        let codes: Vec<_> = report.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec!["unheld-role"]);
        assert_eq!(d.user("li.wei").map(|u| u.name.as_str()), Some("Li Wei"));
        assert!(d.user("nobody").is_none());
        let q: Vec<_> = d
            .users_with_role("quality")
            .map(|u| u.id.as_str())
            .collect();
        assert_eq!(q, vec!["li.wei"], "inactive users are not offered tasks");
        assert_eq!(d.users_with_role("ghost").count(), 0);
        assert_eq!(d.users_with_role("nonexistent").count(), 0);
        assert!(d.holds("wang", "general_manager"));
        assert!(!d.holds("wang", "quality"));
        assert!(!d.holds("old", "quality"));
        assert!(!d.holds("nobody", "quality"));
        assert_eq!(
            d.roles_of("old"),
            ["ghost".to_string(), "quality".to_string()]
        );
        assert!(d.roles_of("nobody").is_empty());
        assert_eq!(d.department_of("li.wei"), Some("lab"));
        assert_eq!(d.level_of("wang"), Some(5));
        assert_eq!(d.level_of("nobody"), None);
        assert_eq!(
            d.department("quality").map(|x| x.name.as_str()),
            Some("Quality")
        );
        assert_eq!(d.file().title.as_deref(), Some("t"));
        assert_eq!(d.roles().len(), 3);
        assert_eq!(d.departments().len(), 4);
        assert_eq!(d.users().len(), 3);
    }

    #[test]
    fn department_ancestry() {
        let (d, _) = small();
        assert!(d.is_ancestor_department("gm", "lab"));
        assert!(d.is_ancestor_department("quality", "lab"));
        assert!(!d.is_ancestor_department("lab", "lab"));
        assert!(!d.is_ancestor_department("lab", "quality"));
        assert!(!d.is_ancestor_department("sales", "lab"));
        assert!(d.is_within_department("lab", "lab"));
        assert!(d.is_within_department("lab", "gm"));
        assert!(!d.is_within_department("gm", "lab"));
        assert!(d.user_in_department("li.wei", "quality"));
        assert!(!d.user_in_department("li.wei", "sales"));
        assert!(!d.user_in_department("nobody", "sales"));
    }

    #[test]
    fn tokens_find_active_users_only() {
        let (d, _) = small();
        let h = token_hash("li-token");
        assert_eq!(d.by_token_hash(&h).map(|u| u.id.as_str()), Some("li.wei"));
        assert_eq!(
            d.by_token_hash(&h.to_uppercase()).map(|u| u.id.as_str()),
            Some("li.wei")
        );
        assert_eq!(
            d.authenticate("li-token").map(|u| u.id.as_str()),
            Some("li.wei")
        );
        assert!(
            d.authenticate("old-token").is_none(),
            "an inactive user cannot sign in"
        );
        assert!(d.authenticate("guess").is_none());
    }

    #[test]
    fn from_file_checks_too() {
        let mut file = DirectoryFile::default();
        assert!(Directory::from_file(file.clone()).is_err());
        file.departments.insert(
            "d".into(),
            Department {
                name: "D".into(),
                parent: None,
            },
        );
        file.roles.insert("r".into(), "R".into());
        file.users.push(User {
            id: "a".into(),
            name: "A".into(),
            department: "d".into(),
            roles: vec!["r".into()],
            level: 1,
            email: None,
            digest: None,
            token_sha256: vec![],
            active: true,
        });
        let d = Directory::from_file(file.clone());
        assert!(d.as_ref().is_ok_and(|d| d.holds("a", "r")));
        file.users[0].department = "x".into();
        let err = Directory::from_file(file)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("department `x`"), "{err}");
    }
}
