//! Hot reload: the rules directory is read again every
//! `rules_reload_interval` (500 ms by default) and on `SIGHUP`; when its files
//! changed, the whole set is compiled anew and swapped in at once
//! ([`Rules::replace`]), or, if any file is invalid, rejected as a whole:
//! the last good rules stay, the errors are logged and counted.
//!
//! Beside the request path: requests read whichever set is in force.
//!
//! The files are compared by content (their [`version_of`]), not by
//! filesystem events, so every way a directory can change is seen: files
//! created, edited, deleted or renamed, and a Kubernetes ConfigMap update,
//! which swaps the `..data` symlink under files that are themselves
//! symlinks (inotify watches on those files see nothing). A change is
//! applied once two reads 200 ms apart agree, so a half-written file or a
//! `kubectl cp` in progress is not compiled. Rules directories are small;
//! reading them once a second costs next to nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{LoadError, Rules, load_files, read_paths, version_of};
use crate::metrics::Metrics;

/// How long a change must hold before it is applied.
const SETTLE: Duration = Duration::from_millis(200);

/// What the reloader needs.
#[derive(Debug)]
pub struct Reloader {
    /// The rules in force, replaced on a good reload.
    pub rules: Rules,
    /// The rules directory (or file).
    pub path: PathBuf,
    /// Let several files share a domain.
    pub merge_domains: bool,
    /// Reload outcomes and the version in force are recorded here.
    pub metrics: Arc<Metrics>,
}

/// Why a reload did not happen.
#[derive(Debug)]
pub enum ReloadError {
    /// The files are not valid rules; the old rules stay.
    Invalid(Vec<LoadError>),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Invalid(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                write!(f, "{}", errors.join("; "))
            }
        }
    }
}

/// The files' version and text (errors included: a file that cannot be
/// read is a change too).
fn snapshot(path: &PathBuf) -> (String, Vec<(String, String)>, Vec<LoadError>) {
    let (files, errors) = read_paths(std::slice::from_ref(path));
    let mut version = version_of(&files);
    if !errors.is_empty() {
        version.push('!');
        version.push_str(&errors.len().to_string());
    }
    (version, files, errors)
}

impl Reloader {
    /// Reads the files now and, if they are valid, puts them in force
    /// (even if unchanged). Returns the version in force afterwards.
    pub fn reload(&self) -> Result<String, ReloadError> {
        let (_, files, errors) = snapshot(&self.path);
        self.apply(files, errors)
    }

    /// [`snapshot`], off the runtime's worker threads.
    async fn read(&self) -> (String, Vec<(String, String)>, Vec<LoadError>) {
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || snapshot(&path)).await {
            Ok(read) => read,
            Err(e) => (
                String::from("!"),
                Vec::new(),
                vec![LoadError {
                    file: self.path.display().to_string(),
                    message: format!("reading the rules failed: {e}"),
                    path: String::new(),
                }],
            ),
        }
    }

    fn apply(
        &self,
        files: Vec<(String, String)>,
        mut errors: Vec<LoadError>,
    ) -> Result<String, ReloadError> {
        // An emptied directory is an error from `read_paths`, as at startup.
        let result = load_files(&files, self.merge_domains);
        let set = match result {
            Ok(set) if errors.is_empty() => set,
            Ok(_) => {
                self.metrics.record_reload(Err(()));
                return Err(ReloadError::Invalid(errors));
            }
            Err(more) => {
                errors.extend(more);
                self.metrics.record_reload(Err(()));
                return Err(ReloadError::Invalid(errors));
            }
        };
        let version = set.version().to_owned();
        self.rules.replace(set);
        self.metrics.record_reload(Ok(&version));
        Ok(version)
    }

    /// Checks the files every `every` (if any) and on `SIGHUP`, until
    /// `drain` turns true.
    pub async fn watch(self, every: Option<Duration>, mut drain: watch::Receiver<bool>) {
        let mut seen = self.rules.current().version().to_owned();
        let mut tick = every.map(|every| {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        let mut hangup = hangups();
        loop {
            let forced = tokio::select! {
                _ = drain.changed() => return,
                () = async {
                    match tick.as_mut() {
                        Some(tick) => { tick.tick().await; }
                        None => std::future::pending().await,
                    }
                } => false,
                () = next_hangup(&mut hangup) => true,
            };
            if *drain.borrow() {
                return;
            }
            let (mut version, ..) = self.read().await;
            if !forced && version == seen {
                continue;
            }
            // Let the change settle: apply only what two reads 200 ms apart
            // agree on (a file being written, a symlink being swapped), up
            // to 10 tries, then whatever is there.
            let (mut settled, mut files, mut errors);
            let mut tries = 0;
            loop {
                tokio::time::sleep(SETTLE).await;
                (settled, files, errors) = self.read().await;
                tries += 1;
                if settled == version || tries == 10 {
                    break;
                }
                version = settled.clone();
            }
            seen = settled;
            let why = if forced { "SIGHUP" } else { "files changed" };
            match self.apply(files, errors) {
                Ok(version) => tracing::info!(%version, why, "rules reloaded"),
                Err(e) => tracing::error!(
                    error = %e,
                    version = self.rules.current().version(),
                    why,
                    "rules not reloaded: the files are invalid; the last good rules stay in force"
                ),
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangups() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; rules reload on file changes only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangups() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    match hangup {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::rules::load_paths;

    const ONE: &str =
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1}\n";
    const TWO: &str =
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 2}\n";

    fn reloader(dir: &tempfile::TempDir) -> Reloader {
        let path = dir.path().to_path_buf();
        let set = load_paths(std::slice::from_ref(&path), false).unwrap();
        Reloader {
            rules: Rules::new(set),
            path,
            merge_domains: false,
            metrics: Arc::new(Metrics::default()),
        }
    }

    #[test]
    fn an_invalid_set_is_rejected_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), ONE).unwrap();
        let r = reloader(&dir);
        let before = r.rules.current().version().to_owned();
        std::fs::write(dir.path().join("a.yaml"), TWO).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "domain: e\ndescriptors: [{key: ''}]\n",
        )
        .unwrap();
        let err = r.reload().unwrap_err();
        assert!(err.to_string().contains("b.yaml"), "{err}");
        assert_eq!(r.rules.current().version(), before, "old rules stay");
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        let after = r.reload().unwrap();
        assert_ne!(after, before);
        assert_eq!(r.rules.current().version(), after);
        let text = r.metrics.render();
        assert!(
            text.contains("floodgate_rules_reloads_total{result=\"failure\"} 1"),
            "{text}"
        );
        assert!(text.contains("floodgate_rules_reloads_total{result=\"success\"} 1"));
        assert!(text.contains(&format!("floodgate_rules_info{{version=\"{after}\"}} 1")));
    }

    #[test]
    fn an_emptied_directory_or_a_dangling_link_keeps_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), ONE).unwrap();
        let r = reloader(&dir);
        let before = r.rules.current().version().to_owned();
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        let err = r.reload().unwrap_err();
        assert!(err.to_string().contains("no rules files"), "{err}");
        std::os::unix::fs::symlink("..data/a.yaml", dir.path().join("a.yaml")).unwrap();
        let err = r.reload().unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        assert_eq!(r.rules.current().version(), before);
    }

    #[test]
    fn the_version_is_the_content() {
        let a = vec![("a.yaml".to_owned(), ONE.to_owned())];
        let b = vec![("a.yaml".to_owned(), TWO.to_owned())];
        assert_eq!(version_of(&a), version_of(&a.clone()));
        assert_ne!(version_of(&a), version_of(&b));
        assert_eq!(version_of(&a).len(), 16);
        // Where the files are mounted does not matter; their names do.
        let elsewhere = vec![("/etc/rules/a.yaml".to_owned(), ONE.to_owned())];
        assert_eq!(version_of(&a), version_of(&elsewhere));
        let renamed = vec![("b.yaml".to_owned(), ONE.to_owned())];
        assert_ne!(version_of(&a), version_of(&renamed));
    }
}
