//! File mode: a directory of Kubernetes YAML (or JSON) manifests is the
//! cluster.
//!
//! Files ending in `.yaml`, `.yml` or `.json` are read, in name order, from
//! the directory itself (not its subdirectories, as `kubectl apply -f DIR`);
//! names starting with `.` are skipped (the state file lives in `.lb/`). A file holds one or more
//! documents separated by `---` lines.
//!
//! One bad document disables only itself. When an object that was good
//! before goes bad, its last good version stays in force (and the problem
//! says so), so a typo never takes an address away.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use super::{Origin, Problem, Snapshot};
use crate::objects::{self, Object, ObjectRef};

/// Largest manifest file read (bytes); larger files are reported and skipped.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Splits a YAML stream into documents: (first line number, text).
pub fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        let is_sep = bare == "---" || bare.starts_with("--- #") || bare.starts_with("---\t");
        if is_sep {
            docs.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

/// Parses one YAML document into JSON.
pub fn parse_document(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string().lines().take(3).collect::<Vec<_>>().join(" "))
}

/// The manifest files in `dir`, sorted.
pub fn manifest_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') || !path.is_file() {
            continue;
        }
        if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// A manifests directory, read into snapshots, remembering the last good
/// version of every object.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    last_good: HashMap<ObjectRef, Object>,
    last_good_docs: HashMap<(PathBuf, usize), Vec<Object>>,
    fingerprint: Option<Vec<(PathBuf, u64, Option<SystemTime>)>>,
}

impl FileSource {
    /// A source over `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            last_good: HashMap::new(),
            last_good_docs: HashMap::new(),
            fingerprint: None,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether any file was added, removed or modified since the last
    /// [`FileSource::read`].
    pub fn changed(&self) -> bool {
        self.fingerprint.as_ref() != fingerprint(&self.dir).ok().as_ref()
    }

    /// Reads every manifest into a snapshot. Fails only when the directory
    /// itself cannot be listed.
    pub fn read(&mut self) -> io::Result<Snapshot> {
        let files = manifest_files(&self.dir)?;
        self.fingerprint = fingerprint(&self.dir).ok();
        let mut snap = Snapshot {
            complete: true,
            ..Snapshot::default()
        };
        for file in files {
            let text = match read_limited(&file) {
                Ok(t) => t,
                Err(e) => {
                    snap.problems.push(Problem {
                        origin: Some(Origin {
                            file: file.clone(),
                            document: 0,
                            line: 0,
                        }),
                        ..Problem::error(None, None, format!("cannot read file: {e}"))
                    });
                    snap.complete = false;
                    continue;
                }
            };
            self.read_text(&mut snap, &file, &text);
        }
        Ok(snap)
    }

    /// Adds the documents of one file's text to `snap`.
    pub fn read_text(&mut self, snap: &mut Snapshot, file: &Path, text: &str) {
        for (n, (line, doc)) in split_documents(text).into_iter().enumerate() {
            let origin = Origin {
                file: file.to_path_buf(),
                document: n + 1,
                line,
            };
            self.read_document(snap, origin, doc);
        }
    }

    fn read_document(&mut self, snap: &mut Snapshot, origin: Origin, doc: &str) {
        let key = (origin.file.clone(), origin.document);
        let value = match parse_document(doc) {
            Ok(v) => v,
            Err(e) => {
                let kept = self.last_good_docs.get(&key).cloned();
                let note = super::kept_note(kept.is_some());
                snap.problems.push(Problem {
                    origin: Some(origin.clone()),
                    ..Problem::error(None, None, format!("invalid YAML: {e}{note}"))
                });
                match kept {
                    Some(objs) => snap.objects.extend(objs.into_iter().map(|o| (Some(origin.clone()), o))),
                    None => snap.complete = false,
                }
                return;
            }
        };
        // A `kind: List` (kubectl get -o yaml) holds its objects in `items`.
        let items = match value {
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                m.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
            }
            v => vec![v],
        };
        let mut good = Vec::new();
        for item in items {
            let r = ObjectRef::of(&item);
            match objects::decode(item) {
                Ok(Some(obj)) => {
                    let mut objs = vec![obj];
                    if let Object::ConfigMap(cm) = &objs[0]
                        && let Some(converted) = objects::legacy::convert(cm, &r, &mut snap.problems, &origin)
                    {
                        objs.extend(converted);
                    }
                    for obj in objs {
                        self.last_good.insert(objects::object_ref(&obj), obj.clone());
                        good.push(obj.clone());
                        snap.objects.push((Some(origin.clone()), obj));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let kept = self.last_good.get(&r).cloned();
                    let note = super::kept_note(kept.is_some());
                    snap.problems.push(Problem {
                        origin: Some(origin.clone()),
                        ..Problem::error(
                            (!r.kind.is_empty()).then(|| r.clone()),
                            e.field().map(str::to_owned),
                            format!("{}{note}", message_without_field(&e)),
                        )
                    });
                    match kept {
                        Some(obj) => {
                            good.push(obj.clone());
                            snap.objects.push((Some(origin.clone()), obj));
                        }
                        None => snap.unreadable.push(r),
                    }
                }
            }
        }
        self.last_good_docs.insert((origin.file, origin.document), good);
    }
}

/// Parses the text of one manifest file into a snapshot (no directory, no
/// last good versions): what `validate` does for one file.
pub fn parse_manifests(file: &Path, text: &str) -> Snapshot {
    let mut snap = Snapshot {
        complete: true,
        ..Snapshot::default()
    };
    FileSource::new(".").read_text(&mut snap, file, text);
    snap
}

fn message_without_field(e: &objects::DecodeError) -> String {
    match e {
        objects::DecodeError::Field { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn read_limited(path: &Path) -> io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_FILE_BYTES {
        return Err(io::Error::other(format!(
            "file is {len} bytes; the limit is {MAX_FILE_BYTES}"
        )));
    }
    let bytes = std::fs::read(path)?;
    String::from_utf8(bytes).map_err(|_| io::Error::other("file is not UTF-8"))
}

fn fingerprint(dir: &Path) -> io::Result<Vec<(PathBuf, u64, Option<SystemTime>)>> {
    manifest_files(dir)?
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p)?;
            Ok((p, m.len(), m.modified().ok()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_line_numbers() {
        let text = "# leading comment\n---\na: 1\n---\n\n--- # note\nb: 2\n---\n";
        let docs = split_documents(text);
        assert_eq!(docs, vec![(3, "a: 1\n"), (7, "b: 2\n")]);
        assert_eq!(split_documents("a: 1"), vec![(1, "a: 1")]);
        // `---` inside a block scalar is indented, so not a separator.
        assert_eq!(split_documents("a: |\n  ---\n").len(), 1);
    }
}
