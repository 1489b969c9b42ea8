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

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchMask};

use super::file::{Entry, is_manifest_name, scan, unnoticed};

/// How often the whole directory is looked at even without notices.
pub(crate) const FULL_LOOK: Duration = Duration::from_secs(10);

/// Most reads of the notice queue per check: a writer that never stops
/// cannot hold a check (the rest is read at the next one).
const MAX_READS: usize = 64;

/// Most files looked at one by one per check; more notices than that look
/// at the whole directory.
const MAX_NAMED: usize = 1024;

/// How long a file written to and not yet closed holds the fingerprint
/// moving (a render piped into the directory that pauses, a slow copy):
/// past this since its last write, it is taken as it is.
pub(crate) const WRITE_WAIT: Duration = Duration::from_secs(2);

/// A directory followed by its notices.
#[derive(Debug)]
pub(crate) struct Notices {
    inotify: Inotify,
    dir: PathBuf,
    /// The directory's device and inode when it was first looked at:
    /// another directory at the path (a symlink swapped, a parent renamed)
    /// ends the notices.
    identity: (u64, u64),
    /// The manifest entries as last looked at, sorted by path.
    entries: Arc<Vec<Entry>>,
    /// The entries no notice covers (see [`unnoticed`]): looked at on every
    /// check.
    unseen: BTreeSet<PathBuf>,
    /// Moves with every check that took a notice about a manifest file or
    /// found an entry changed: a rewrite that leaves size and times as they
    /// were still moves the fingerprint.
    generation: u64,
    /// Of the entries and the generation.
    fingerprint: u64,
    last_full: Instant,
    /// The last look at the whole directory found what no notice had said:
    /// a change of that kind may still be under way, so the next check
    /// looks at the whole directory again.
    full_next: bool,
    /// Files written to and not closed since, with the time of their last
    /// write: while one is, the fingerprint moves at every check, so that
    /// a reader waiting for it to hold still does not take half a file.
    writing: std::collections::BTreeMap<PathBuf, Instant>,
    buffer: Vec<u8>,
}

/// Why notices cannot be had.
#[derive(Debug)]
pub(crate) enum Unavailable {
    /// No inotify instance (the per-user limit, a kernel without it): poll.
    Inotify(io::Error),
    /// The directory cannot be watched or listed now (missing, say).
    Directory,
}

/// What a check found.
#[derive(Debug)]
pub(crate) struct Look {
    /// The manifest entries, sorted by path.
    pub(crate) entries: Arc<Vec<Entry>>,
    /// Moves whenever the entries, or a file behind them, may have changed.
    pub(crate) fingerprint: u64,
}

impl Notices {
    /// Starts following `dir` (the watch first, then a look at all of it, so
    /// that nothing changed in between is missed).
    pub(crate) fn start(dir: &Path) -> Result<Self, Unavailable> {
        let inotify = Inotify::init().map_err(Unavailable::Inotify)?;
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::ATTRIB
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR
            // A file deleted while still open is no longer the directory's.
            | WatchMask::EXCL_UNLINK;
        inotify.watches().add(dir, mask).map_err(|_| Unavailable::Directory)?;
        let meta = std::fs::metadata(dir).map_err(|_| Unavailable::Directory)?;
        let (entries, unseen) = scan(dir).map_err(|_| Unavailable::Directory)?;
        let mut notices = Self {
            inotify,
            dir: dir.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            entries: Arc::new(entries),
            unseen,
            generation: 0,
            fingerprint: 0,
            last_full: Instant::now(),
            full_next: false,
            writing: std::collections::BTreeMap::new(),
            buffer: vec![0; 16 << 10],
        };
        notices.fingerprint = notices.fingerprint();
        Ok(notices)
    }

    /// The entries as they are now. `None` when the directory can no longer
    /// be followed (deleted, moved, replaced, unmounted, unlistable): start
    /// again.
    pub(crate) fn look(&mut self) -> Option<Look> {
        let meta = std::fs::metadata(&self.dir).ok()?;
        if (meta.dev(), meta.ino()) != self.identity {
            return None;
        }
        let mut changed: BTreeSet<PathBuf> = BTreeSet::new();
        let mut noticed = false;
        let mut whole = std::mem::take(&mut self.full_next) || self.last_full.elapsed() >= FULL_LOOK;
        for _ in 0..MAX_READS {
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
                    whole = true;
                }
                match event.name {
                    Some(name) if is_manifest_name(name) => {
                        noticed = true;
                        let path = self.dir.join(name);
                        if event.mask.contains(EventMask::MODIFY) {
                            self.writing.insert(path.clone(), Instant::now());
                        }
                        if event
                            .mask
                            .intersects(EventMask::CLOSE_WRITE | EventMask::DELETE | EventMask::MOVED_FROM)
                        {
                            self.writing.remove(&path);
                        }
                        if changed.len() < MAX_NAMED {
                            changed.insert(path);
                        } else {
                            whole = true;
                        }
                    }
                    // Other names (editors' swap files, a ConfigMap
                    // volume's `..data`) change no manifest entry by
                    // themselves; the symlinks that go through them are
                    // looked at below.
                    Some(_) => {}
                    // The directory itself (its mode): still listable?
                    None => whole = true,
                }
            }
            if !any {
                break;
            }
        }
        // Writers gone quiet for long are not waited for any more.
        self.writing.retain(|_, last| last.elapsed() < WRITE_WAIT);
        let mut moved = noticed || !self.writing.is_empty();
        if whole {
            let (entries, unseen) = scan(&self.dir).ok()?;
            self.unseen = unseen;
            self.last_full = Instant::now();
            if *self.entries != entries {
                self.entries = Arc::new(entries);
                self.full_next = true;
                moved = true;
            }
        } else {
            changed.extend(self.unseen.iter().cloned());
            for path in &changed {
                moved |= self.look_at(path);
            }
        }
        if moved {
            self.generation += 1;
            self.fingerprint = self.fingerprint();
        }
        Some(Look {
            entries: self.entries.clone(),
            fingerprint: self.fingerprint,
        })
    }

    fn fingerprint(&self) -> u64 {
        // SipHash took 3 % of a 10,000-file rebuild: foldhash, seeded
        // the same in every call.
        let mut h = std::hash::BuildHasher::build_hasher(&foldhash::quality::FixedState::default());
        (&self.entries, self.generation).hash(&mut h);
        h.finish()
    }

    /// Looks again at one manifest path (a new entry, a changed one, or
    /// one gone); true when its entry changed.
    fn look_at(&mut self, path: &Path) -> bool {
        let at = self
            .entries
            .binary_search_by(|e| e.path.as_os_str().cmp(path.as_os_str()));
        let link = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.unseen.remove(path);
                return match at {
                    Ok(i) => {
                        Arc::make_mut(&mut self.entries).remove(i);
                        true
                    }
                    Err(_) => false,
                };
            }
            found => found.is_ok_and(|m| m.file_type().is_symlink()),
        };
        let (now, meta) = Entry::stat_with_metadata(path.to_path_buf());
        if unnoticed(link, meta.as_ref(), self.identity.0) {
            self.unseen.insert(path.to_path_buf());
        } else {
            self.unseen.remove(path);
        }
        match at {
            Ok(i) if self.entries[i] == now => false,
            Ok(i) => {
                Arc::make_mut(&mut self.entries)[i] = now;
                true
            }
            Err(i) => {
                Arc::make_mut(&mut self.entries).insert(i, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Notices on `dir`, or `None` (with a notice) where inotify cannot be
    /// had: what these tests check does not exist there.
    fn start(dir: &Path) -> Option<Notices> {
        match Notices::start(dir) {
            Ok(n) => Some(n),
            Err(Unavailable::Inotify(e)) => {
                eprintln!("skipped: no inotify instance ({e})");
                None
            }
            Err(Unavailable::Directory) => panic!("{} cannot be watched", dir.display()),
        }
    }

    fn names(n: &mut Notices) -> Vec<String> {
        let look = n.look().unwrap();
        look.entries
            .iter()
            .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn size(n: &mut Notices, name: &str) -> u64 {
        let look = n.look().unwrap();
        let e = look.entries.iter().find(|e| e.path.ends_with(name)).unwrap();
        e.state.as_ref().unwrap().0
    }

    #[test]
    fn files_made_changed_saved_by_rename_and_removed_are_seen() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        std::fs::write(d.join("a.yaml"), "a").unwrap();
        let Some(mut n) = start(d) else { return };
        assert_eq!(names(&mut n), ["a.yaml"]);
        let quiet = n.look().unwrap().fingerprint;
        assert_eq!(n.look().unwrap().fingerprint, quiet, "nothing changed, nothing moves");
        std::fs::write(d.join("b.yaml"), "b").unwrap();
        std::fs::write(d.join(".hidden.yaml"), "x").unwrap();
        std::fs::write(d.join("notes.txt"), "x").unwrap();
        assert_eq!(names(&mut n), ["a.yaml", "b.yaml"]);
        // Saved as an editor does: a temporary file renamed over it.
        std::fs::write(d.join(".b.yaml.swp"), "bbb").unwrap();
        std::fs::rename(d.join(".b.yaml.swp"), d.join("b.yaml")).unwrap();
        assert_eq!(size(&mut n, "b.yaml"), 3);
        std::fs::rename(d.join("b.yaml"), d.join("c.yml")).unwrap();
        assert_eq!(names(&mut n), ["a.yaml", "c.yml"]);
        std::fs::remove_file(d.join("a.yaml")).unwrap();
        assert_eq!(names(&mut n), ["c.yml"]);
        // What the notices built is what a look at every file finds.
        assert_eq!(*n.look().unwrap().entries, scan(d).unwrap().0);
    }

    #[test]
    fn a_rewrite_that_keeps_size_and_times_moves_the_fingerprint() {
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        std::fs::write(d.join("a.yaml"), "a").unwrap();
        let Some(mut n) = start(d) else { return };
        let before = n.look().unwrap().fingerprint;
        std::fs::write(d.join("a.yaml"), "z").unwrap();
        assert_ne!(n.look().unwrap().fingerprint, before);
    }

    #[test]
    fn a_file_open_for_writing_keeps_the_fingerprint_moving_until_closed() {
        use std::io::Write as _;
        let d = tempfile::tempdir().unwrap();
        let d = d.path();
        std::fs::write(d.join("a.yaml"), "a").unwrap();
        let Some(mut n) = start(d) else { return };
        let mut file = std::fs::File::create(d.join("a.yaml")).unwrap();
        file.write_all(b"half").unwrap();
        let one = n.look().unwrap().fingerprint;
        let two = n.look().unwrap().fingerprint;
        assert_ne!(one, two, "a reader waiting for the directory to hold still must wait");
        drop(file);
        let closed = n.look().unwrap().fingerprint;
        assert_eq!(n.look().unwrap().fingerprint, closed, "closed: it holds still");
        // A file deleted while open is no longer the directory's.
        let mut ghost = std::fs::File::create(d.join("ghost.yaml")).unwrap();
        std::fs::remove_file(d.join("ghost.yaml")).unwrap();
        n.look().unwrap();
        let gone = n.look().unwrap().fingerprint;
        ghost.write_all(b"tick").unwrap();
        assert_eq!(n.look().unwrap().fingerprint, gone);
    }

    #[test]
    fn symlinked_and_hard_linked_manifests_are_followed_to_their_changes() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let (d, elsewhere) = (d.path(), elsewhere.path());
        std::fs::write(elsewhere.join("t.yaml"), "one").unwrap();
        std::os::unix::fs::symlink(elsewhere.join("t.yaml"), d.join("t.yaml")).unwrap();
        std::fs::write(d.join("a.yaml"), "a").unwrap();
        std::fs::hard_link(d.join("a.yaml"), d.join("b.yaml")).unwrap();
        let Some(mut n) = start(d) else { return };
        assert_eq!(size(&mut n, "t.yaml"), 3);
        // No notice reaches `d` for either: the target is in another
        // directory, and `b.yaml` is written through `a.yaml`'s name only
        // (a notice names `a.yaml`).
        std::fs::write(elsewhere.join("t.yaml"), "three").unwrap();
        assert_eq!(size(&mut n, "t.yaml"), 5);
        std::fs::write(d.join("a.yaml"), "aaaa").unwrap();
        assert_eq!(size(&mut n, "b.yaml"), 4);
    }

    #[test]
    fn a_directory_moved_away_or_replaced_ends_the_notices() {
        let top = tempfile::tempdir().unwrap();
        let d = top.path().join("d");
        std::fs::create_dir(&d).unwrap();
        let Some(mut n) = start(&d) else { return };
        std::fs::rename(&d, top.path().join("away")).unwrap();
        assert!(n.look().is_none());
        // The path a symlink swapped to another directory (as a release
        // directory is): the old one hears nothing of it.
        let (v1, v2, current) = (top.path().join("v1"), top.path().join("v2"), top.path().join("current"));
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::os::unix::fs::symlink(&v1, &current).unwrap();
        let Some(mut n) = start(&current) else { return };
        assert!(n.look().is_some());
        std::os::unix::fs::symlink(&v2, top.path().join("next")).unwrap();
        std::fs::rename(top.path().join("next"), &current).unwrap();
        std::fs::write(v2.join("new.yaml"), "x").unwrap();
        assert!(n.look().is_none());
    }
}
