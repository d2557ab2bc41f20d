//! Hot reload: the rules directory is checked every `rules_reload_interval`
//! (500 ms by default) and on `SIGHUP`; when its files changed, the whole set
//! is compiled anew and swapped in at once ([`Rules::replace`]), or, if any
//! file is invalid, rejected as a whole: the last good rules stay, the errors
//! are logged and counted.
//!
//! Beside the request path: requests read whichever set is in force.
//!
//! A poll looks at metadata only ([`stamp`]): the directory's entries, each
//! one's size, mtime, ctime and inode, and where each symlink points (a
//! Kubernetes ConfigMap update swaps the `..data` symlink under files that
//! are themselves symlinks, which inotify watches on those files miss). Only
//! when that changed, and at least every [`FULL_READ`] (60 s) in case an edit
//! kept all of it, are the files read and compared by content (their
//! [`version_of`]), so a poll of an unchanged directory reads no file
//! whatever the size of the rules. A change is applied once two reads 200 ms
//! apart agree, so a half-written file or a `kubectl cp` in progress is not
//! compiled.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{LoadError, Rules, load_files, read_paths, version_of};
use crate::metrics::Metrics;

/// How long a change must hold before it is applied.
const SETTLE: Duration = Duration::from_millis(200);

/// How often the files are read even though their metadata did not change:
/// a guard against an edit that kept size, mtime, ctime and inode (two
/// same-size writes within one tick of the kernel's file clock).
pub const FULL_READ: Duration = Duration::from_secs(60);

/// What a poll compares instead of the files' contents: for the rules path
/// and every entry of the directory, its own metadata, where it points if it
/// is a symlink, and the metadata of what it resolves to.
#[derive(Debug, PartialEq, Eq)]
pub struct Stamp(Vec<(OsString, Vec<Seen>)>);

/// One thing a [`Stamp`] holds about an entry.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// Device, inode, size, mtime and ctime (seconds, nanoseconds).
    Meta([i64; 7]),
    /// A symlink's target.
    Link(PathBuf),
    /// The metadata could not be read (the error's kind).
    Error(String),
}

impl Seen {
    fn meta(meta: std::io::Result<std::fs::Metadata>) -> Seen {
        match meta {
            Ok(meta) => Seen::Meta(file_id(&meta)),
            Err(e) => Seen::Error(e.kind().to_string()),
        }
    }
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> [i64; 7] {
    use std::os::unix::fs::MetadataExt;
    let wide = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    [
        wide(meta.dev()),
        wide(meta.ino()),
        wide(meta.size()),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    ]
}

#[cfg(not(unix))]
fn file_id(meta: &std::fs::Metadata) -> [i64; 7] {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    [
        0,
        0,
        i64::try_from(meta.len()).unwrap_or(i64::MAX),
        i64::try_from(modified.as_secs()).unwrap_or(i64::MAX),
        i64::from(modified.subsec_nanos()),
        0,
        0,
    ]
}

/// The [`Stamp`] of `path` now: a few `stat` calls per directory entry, no
/// file read.
pub fn stamp(path: &Path) -> Stamp {
    fn entry(path: &Path) -> Vec<Seen> {
        let mut seen = vec![Seen::meta(std::fs::symlink_metadata(path))];
        if let Ok(target) = std::fs::read_link(path) {
            seen.push(Seen::Link(target));
            seen.push(Seen::meta(std::fs::metadata(path)));
        }
        seen
    }
    let mut entries = vec![(OsString::new(), entry(path))];
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        match std::fs::read_dir(path) {
            Ok(list) => {
                for item in list {
                    match item {
                        Ok(item) => entries.push((item.file_name(), entry(&item.path()))),
                        Err(e) => entries
                            .push((OsString::from("?"), vec![Seen::Error(e.kind().to_string())])),
                    }
                }
            }
            Err(e) => entries.push((OsString::from("?"), vec![Seen::Error(e.kind().to_string())])),
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Stamp(entries)
}

/// When a poll must read the files: their [`Stamp`] differs from the one
/// taken before the last read, or the last read is [`FULL_READ`] old.
#[derive(Debug, Default)]
pub struct Poll {
    last: Option<Stamp>,
    full_at: Option<Instant>,
}

impl Poll {
    /// Whether the files must be read, given their stamp now.
    pub fn must_read(&self, stamp: &Stamp, now: Instant) -> bool {
        self.last.as_ref() != Some(stamp) || self.full_at.is_none_or(|at| now >= at)
    }

    /// The files were read after `stamp` was taken.
    pub fn read(&mut self, stamp: Stamp, now: Instant) {
        self.last = Some(stamp);
        self.full_at = Some(now + FULL_READ);
    }
}

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

    /// [`stamp`], off the runtime's worker threads.
    async fn stamp(&self) -> Stamp {
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || stamp(&path)).await {
            Ok(stamp) => stamp,
            // Unlike any stamp taken: the files are read.
            Err(e) => Stamp(vec![(OsString::new(), vec![Seen::Error(e.to_string())])]),
        }
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
        self.rules
            .replace(set.with_source(format!("files {}", self.path.display())));
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
        // The rules in force were read at startup, just before: start from
        // the files as they look now (a change in between is caught by the
        // first full read, FULL_READ later).
        let mut poll = Poll::default();
        poll.read(self.stamp().await, Instant::now());
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
            // Metadata first: the files are read only if it changed (or
            // on SIGHUP, or when a full read is due).
            let now = self.stamp().await;
            if !forced && !poll.must_read(&now, Instant::now()) {
                continue;
            }
            poll.read(now, Instant::now());
            let (version, ..) = self.read().await;
            if !forced && version == seen {
                continue;
            }
            let (settled, files, errors) = self.settle(version, &mut poll).await;
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

    /// Lets a change first read as `version` settle: returns what two reads
    /// 200 ms apart agree on (a file being written, a symlink being
    /// swapped), up to 10 tries, then whatever is there.
    async fn settle(
        &self,
        mut version: String,
        poll: &mut Poll,
    ) -> (String, Vec<(String, String)>, Vec<LoadError>) {
        let mut tries = 0;
        loop {
            tokio::time::sleep(SETTLE).await;
            let now = self.stamp().await;
            let (settled, files, errors) = self.read().await;
            poll.read(now, Instant::now());
            tries += 1;
            if settled == version || tries == 10 {
                return (settled, files, errors);
            }
            version = settled;
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
    fn a_poll_reads_the_files_only_when_their_metadata_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::write(path.join("a.yaml"), ONE).unwrap();
        let start = Instant::now();
        let mut poll = Poll::default();
        assert!(poll.must_read(&stamp(path), start), "the first poll reads");
        poll.read(stamp(path), start);
        let later = start + Duration::from_secs(1);
        assert!(
            !poll.must_read(&stamp(path), later),
            "nothing changed: no file is read"
        );
        // Each kind of change is seen, and then forgotten once read.
        let longer = TWO.replace("2}", "20}");
        let changes: [&dyn Fn(); 5] = [
            &|| std::fs::write(path.join("a.yaml"), &longer).unwrap(),
            &|| std::fs::write(path.join("b.yaml"), ONE).unwrap(),
            &|| std::fs::rename(path.join("b.yaml"), path.join("c.yaml")).unwrap(),
            &|| std::fs::remove_file(path.join("c.yaml")).unwrap(),
            // Same name, same size, another file (an editor's save).
            &|| {
                std::fs::write(path.join("a.tmp"), &longer).unwrap();
                std::fs::rename(path.join("a.tmp"), path.join("a.yaml")).unwrap();
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            change();
            assert!(poll.must_read(&stamp(path), later), "change {i}");
            poll.read(stamp(path), later);
            assert!(!poll.must_read(&stamp(path), later), "change {i}");
        }
        // Unchanged, but a full read is due.
        assert!(poll.must_read(&stamp(path), later + FULL_READ));
    }

    #[test]
    fn a_configmap_swap_is_seen_without_reading_the_files() {
        // edge.yaml -> ..data/edge.yaml, ..data -> ..v1; then ..data -> ..v2,
        // where edge.yaml has the same size (and maybe the same mtime).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        for (version, text) in [("..v1", ONE), ("..v2", TWO)] {
            std::fs::create_dir(path.join(version)).unwrap();
            std::fs::write(path.join(version).join("edge.yaml"), text).unwrap();
        }
        std::os::unix::fs::symlink("..v1", path.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/edge.yaml", path.join("edge.yaml")).unwrap();
        let start = Instant::now();
        let mut poll = Poll::default();
        poll.read(stamp(path), start);
        assert!(!poll.must_read(&stamp(path), start));
        std::os::unix::fs::symlink("..v2", path.join("..data_tmp")).unwrap();
        std::fs::rename(path.join("..data_tmp"), path.join("..data")).unwrap();
        assert!(poll.must_read(&stamp(path), start));
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
