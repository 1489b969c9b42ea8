//! Change notices for a manifests directory (Linux inotify): a version
//! check looks again only at the files the kernel says changed, instead of
//! at every file of the directory (10,000 files: 10,000 `stat`s per poll).
//!
//! What notices cannot see is looked at another way: the targets of
//! symlinks (a ConfigMap volume's files, links into other directories) are
//! looked at on every check, and the whole directory every [`FULL_LOOK`]
//! (a file changed through a hard link elsewhere). A queue overflow looks
//! at the whole directory at once; a directory deleted or moved away ends
//! the notices (the caller starts again on the path, or polls).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchMask};

use super::file::{Entry, is_manifest_name, scan};

/// How often the whole directory is looked at even without notices.
pub(crate) const FULL_LOOK: Duration = Duration::from_secs(10);

/// A directory followed by its notices.
#[derive(Debug)]
pub(crate) struct Notices {
    inotify: Inotify,
    dir: PathBuf,
    /// The manifest entries as last looked at, sorted by path.
    entries: Arc<Vec<Entry>>,
    /// The entries that are symlinks: looked at on every check.
    links: Vec<PathBuf>,
    /// Moves with every notice about a manifest file, so that a rewrite
    /// that leaves size and times as they were still moves the version.
    notices: u64,
    last_full: Instant,
    buffer: Vec<u8>,
}

impl Notices {
    /// Starts following `dir` (the watch first, then a look at all of it, so
    /// that nothing changed in between is missed). `None` when notices
    /// cannot be had (no inotify instance left, the directory missing).
    pub(crate) fn start(dir: &Path) -> Option<Self> {
        let inotify = Inotify::init().ok()?;
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::ATTRIB
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR;
        inotify.watches().add(dir, mask).ok()?;
        let (entries, links) = scan(dir).ok()?;
        Some(Self {
            inotify,
            dir: dir.to_path_buf(),
            entries: Arc::new(entries),
            links,
            notices: 0,
            last_full: Instant::now(),
            buffer: vec![0; 16 << 10],
        })
    }

    /// The entries as they are now, and the count of notices taken. `None`
    /// when the directory can no longer be followed (deleted, moved,
    /// unmounted, unlistable): start again.
    pub(crate) fn look(&mut self) -> Option<(Arc<Vec<Entry>>, u64)> {
        let mut named: Vec<PathBuf> = Vec::new();
        let mut full = self.last_full.elapsed() >= FULL_LOOK;
        loop {
            let events = match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return None,
            };
            let mut any = false;
            for event in events {
                any = true;
                if event
                    .mask
                    .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED | EventMask::UNMOUNT)
                {
                    return None;
                }
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    full = true;
                }
                // Other names (editors' swap files, a ConfigMap volume's
                // `..data`) change no manifest entry by themselves; the
                // symlinks that go through them are looked at below.
                if let Some(name) = event.name.filter(|n| is_manifest_name(n)) {
                    named.push(self.dir.join(name));
                }
            }
            if !any {
                break;
            }
        }
        if !named.is_empty() {
            self.notices += 1;
        }
        if full {
            let (entries, links) = scan(&self.dir).ok()?;
            self.links = links;
            self.last_full = Instant::now();
            if *self.entries != entries {
                self.entries = Arc::new(entries);
            }
        } else if !named.is_empty() || !self.links.is_empty() {
            named.sort();
            named.dedup();
            let links = self.links.clone();
            for path in named.iter().chain(links.iter().filter(|l| !named.contains(l))) {
                self.look_at(path);
            }
        }
        Some((self.entries.clone(), self.notices))
    }

    /// Looks again at one manifest path: a new entry, a changed one, or
    /// one gone.
    fn look_at(&mut self, path: &Path) {
        let kind = std::fs::symlink_metadata(path).map(|m| m.file_type().is_symlink());
        let at = self
            .entries
            .binary_search_by(|e| e.path.as_os_str().cmp(path.as_os_str()));
        let link = self.links.iter().position(|l| l == path);
        match (&kind, link) {
            (Ok(true), None) => self.links.push(path.to_path_buf()),
            (Ok(true), Some(_)) => {}
            (_, Some(i)) => {
                self.links.swap_remove(i);
            }
            (_, None) => {}
        }
        let gone = matches!(&kind, Err(e) if e.kind() == io::ErrorKind::NotFound);
        match (at, gone) {
            (Ok(i), true) => {
                Arc::make_mut(&mut self.entries).remove(i);
            }
            (Ok(i), false) => {
                let now = Entry::stat(path.to_path_buf());
                if self.entries[i] != now {
                    Arc::make_mut(&mut self.entries)[i] = now;
                }
            }
            (Err(i), false) => Arc::make_mut(&mut self.entries).insert(i, Entry::stat(path.to_path_buf())),
            (Err(_), true) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lb-notices-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn paths(n: &mut Notices) -> Vec<String> {
        let (entries, _) = n.look().unwrap();
        entries
            .iter()
            .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn files_made_changed_and_removed_are_seen_without_a_full_look() {
        let d = dir("seen");
        std::fs::write(d.join("a.yaml"), "a").unwrap();
        let mut n = Notices::start(&d).unwrap();
        assert_eq!(paths(&mut n), ["a.yaml"]);
        let (_, quiet) = n.look().unwrap();
        std::fs::write(d.join("b.yaml"), "b").unwrap();
        std::fs::write(d.join(".hidden.yaml"), "x").unwrap();
        std::fs::write(d.join("notes.txt"), "x").unwrap();
        assert_eq!(paths(&mut n), ["a.yaml", "b.yaml"]);
        // Rewritten with the same size, its times put back: the count of
        // notices still moves.
        let before = std::fs::metadata(d.join("a.yaml")).unwrap().modified().unwrap();
        let (_, was) = n.look().unwrap();
        assert!(was > quiet);
        std::fs::write(d.join("a.yaml"), "z").unwrap();
        std::fs::File::options()
            .write(true)
            .open(d.join("a.yaml"))
            .unwrap()
            .set_modified(before)
            .unwrap();
        let (entries, now) = n.look().unwrap();
        assert!(now > was);
        assert_eq!(entries[0].state.as_ref().unwrap().0, 1);
        std::fs::rename(d.join("b.yaml"), d.join("c.yml")).unwrap();
        assert_eq!(paths(&mut n), ["a.yaml", "c.yml"]);
        std::fs::remove_file(d.join("a.yaml")).unwrap();
        assert_eq!(paths(&mut n), ["c.yml"]);
        // What a full look finds is what the notices built.
        let (after, _) = n.look().unwrap();
        assert_eq!(*after, scan(&d).unwrap().0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_symlinked_manifest_is_followed_to_its_changed_target() {
        let d = dir("link");
        let elsewhere = dir("link-target");
        std::fs::write(elsewhere.join("t.yaml"), "one").unwrap();
        std::os::unix::fs::symlink(elsewhere.join("t.yaml"), d.join("t.yaml")).unwrap();
        let mut n = Notices::start(&d).unwrap();
        let (first, _) = n.look().unwrap();
        // No notice reaches `d`: the target is in another directory.
        std::fs::write(elsewhere.join("t.yaml"), "three").unwrap();
        let (now, _) = n.look().unwrap();
        assert_ne!(first, now);
        assert_eq!(now[0].state.as_ref().unwrap().0, 5);
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&elsewhere).unwrap();
    }

    #[test]
    fn a_directory_moved_away_ends_the_notices() {
        let d = dir("moved");
        let mut n = Notices::start(&d).unwrap();
        let away = d.with_extension("away");
        let _ = std::fs::remove_dir_all(&away);
        std::fs::rename(&d, &away).unwrap();
        assert!(n.look().is_none());
        std::fs::remove_dir_all(&away).unwrap();
    }
}
