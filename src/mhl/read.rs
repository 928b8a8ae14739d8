//! Loading a card's ASC MHL history and checking files against it.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use quick_xml::events::Event;

use super::{Digests, Format};
use crate::anchor::{self, Kind};

/// A generation or chain file larger than this is refused (a card of
/// 100,000 files writes about 40 MB).
const MAX_XML: u64 = 256 * 1024 * 1024;
pub(crate) const FOLDER: &str = "ascmhl";
pub(crate) const CHAIN: &str = "ascmhl_chain.xml";

/// Who wrote a generation, for reports ("generation 2 (Silverstack 8.1,
/// 2026-…)").
#[derive(Debug, Clone)]
pub(crate) struct GenInfo {
    pub seq: u32,
    pub tool: String,
    pub date: String,
    pub comment: String,
}

impl std::fmt::Display for GenInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "generation {} ({}, {})", self.seq, self.tool, self.date)
    }
}

/// What the latest generation that lists a file (with a hash not marked
/// failed) says of it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub size: Option<u64>,
    pub hashes: Vec<(Format, String)>,
    /// Index into [`History::gens`].
    pub generation: usize,
}

/// A card's history: its generations in order, the chain as read, and per
/// file (path relative to the card, `/`-separated) the latest entry.
#[derive(Debug, Clone)]
pub(crate) struct History {
    pub gens: Vec<GenInfo>,
    /// (sequence number, file name, C4 id) as the chain lists them.
    pub chain: Vec<(u32, String, String)>,
    pub latest: BTreeMap<String, Entry>,
    /// The ignore patterns of the latest generation.
    pub ignore: Vec<String>,
}

impl History {
    /// The formats the card's files were hashed with (what a check must
    /// compute).
    pub(crate) fn formats(&self) -> Vec<Format> {
        let mut f: Vec<Format> = self
            .latest
            .values()
            .flat_map(|e| e.hashes.iter().map(|(f, _)| *f))
            .collect();
        f.sort();
        f.dedup();
        f
    }

    /// Loads the history in `card`/ascmhl below `root`: None when there is
    /// none; an error naming the file and the fault when it cannot be
    /// trusted (a generation not matching the chain's C4 id, unreadable
    /// XML, a path leaving the card).
    pub(crate) fn load(root: &Path, card: &Path) -> Result<Option<History>, String> {
        let dir = card.join(FOLDER);
        match anchor::stat(root, &dir) {
            Ok(Kind::Dir) => {}
            Ok(Kind::Symlink) => {
                return Err(format!(
                    "{} is a symbolic link; it is not followed",
                    dir.display()
                ));
            }
            Ok(_) => return Err(format!("{} is not a folder", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
        let chain_path = dir.join(CHAIN);
        let chain_xml = read_small(root, &chain_path)?;
        let chain = parse_chain(&chain_xml).map_err(|e| format!("{}: {e}", chain_path.display()))?;
        if chain.is_empty() {
            return Err(format!("{} lists no generation", chain_path.display()));
        }
        let mut gens = Vec::new();
        let mut latest: BTreeMap<String, Entry> = BTreeMap::new();
        let mut ignore = Vec::new();
        for (seq, name, c4) in &chain {
            if name.contains('/') || name.contains('\\') || name == ".." || name == "." {
                return Err(format!(
                    "{}: generation {seq} is named {name:?}, not a file in the ascmhl folder",
                    chain_path.display()
                ));
            }
            let path = dir.join(name);
            let bytes = read_small(root, &path)?;
            let actual = super::c4_of(&bytes);
            if actual != *c4 {
                return Err(format!(
                    "{}: its C4 id is {actual}, but the chain records {c4} for generation {seq}: \
                     the history was altered after it was written",
                    path.display()
                ));
            }
            let g = parse_generation(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            let index = gens.len();
            gens.push(GenInfo {
                seq: *seq,
                tool: g.tool,
                date: g.date,
                comment: g.comment,
            });
            ignore = g.ignore;
            for (rel, size, hashes) in g.hashes {
                if !safe_rel(&rel) {
                    return Err(format!(
                        "{}: the path {rel:?} leaves the card; the history is not used",
                        path.display()
                    ));
                }
                let good: Vec<(Format, String)> = hashes
                    .into_iter()
                    .filter(|(_, _, action)| action.as_deref() != Some("failed"))
                    .map(|(f, v, _)| (f, v))
                    .collect();
                if good.is_empty() {
                    continue;
                }
                latest.insert(
                    rel,
                    Entry {
                        size,
                        hashes: good,
                        generation: index,
                    },
                );
            }
        }
        Ok(Some(History {
            gens,
            chain,
            latest,
            ignore,
        }))
    }
}

/// A path relative to the card that stays inside it.
fn safe_rel(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.starts_with('/')
        && !rel.contains('\\')
        && rel.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn read_small(root: &Path, path: &Path) -> Result<Vec<u8>, String> {
    let file = anchor::open_file(root, path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_XML + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_XML {
        return Err(format!(
            "{}: larger than {} MiB; not read as an ASC MHL file",
            path.display(),
            MAX_XML >> 20
        ));
    }
    Ok(bytes)
}

/// Text of the current element, entity references resolved.
#[derive(Default)]
struct Text(String);

impl Text {
    fn push(&mut self, e: &Event) -> Result<(), String> {
        match e {
            Event::Text(t) => self.0.push_str(&t.xml10_content()),
            Event::CData(t) => self.0.push_str(&t.xml10_content()),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
                    self.0.push(c);
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(r) {
                    self.0.push_str(s);
                } else {
                    return Err(format!("unknown entity &{};", &**r));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.0).trim().to_string()
    }
}

fn local(name: &str) -> String {
    name.rsplit(':').next().unwrap_or(name).to_string()
}

fn attr(e: &quick_xml::events::BytesStart, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| local(a.key.as_ref()) == key)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

fn parse_chain(xml: &[u8]) -> Result<Vec<(u32, String, String)>, String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut text = Text::default();
    let mut out = Vec::new();
    let mut current: Option<(u32, String, String)> = None;
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("not well-formed XML at byte {}: {e}", reader.buffer_position()))?;
        match &ev {
            Event::Start(e) => {
                let name = local(e.name().as_ref());
                if name == "hashlist" && stack.len() == 1 {
                    let seq = attr(e, "sequencenr")
                        .and_then(|s| s.parse().ok())
                        .ok_or("a <hashlist> without a numeric sequencenr")?;
                    current = Some((seq, String::new(), String::new()));
                }
                stack.push(name);
                text = Text::default();
            }
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                let value = text.take();
                match (name.as_str(), current.as_mut()) {
                    ("path", Some(c)) => c.1 = value,
                    ("c4", Some(c)) => c.2 = value,
                    ("hashlist", Some(_)) => {
                        let c = current.take().unwrap_or_default();
                        if c.1.is_empty() || c.2.is_empty() {
                            return Err(format!("generation {} has no path or no c4", c.0));
                        }
                        out.push(c);
                    }
                    _ => {}
                }
            }
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(format!("the document ends inside <{open}> (cut short?)"));
                }
                break;
            }
            other => text.push(other)?,
        }
        buf.clear();
    }
    out.sort_by_key(|c| c.0);
    for w in out.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(format!("generation {} is listed twice", w[0].0));
        }
    }
    Ok(out)
}

/// One `<hash>` as read: path, size, and (format, value, action) each.
type HashRead = (String, Option<u64>, Vec<(Format, String, Option<String>)>);

/// What one generation file says.
struct Parsed {
    tool: String,
    date: String,
    comment: String,
    ignore: Vec<String>,
    hashes: Vec<HashRead>,
}

fn parse_generation(xml: &[u8]) -> Result<Parsed, String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut text = Text::default();
    let mut p = Parsed {
        tool: String::new(),
        date: String::new(),
        comment: String::new(),
        ignore: Vec::new(),
        hashes: Vec::new(),
    };
    let mut tool_version = None;
    let mut root_seen = false;
    // The <hash> being read: path, size, (format, value, action)…
    let mut hash: Option<HashRead> = None;
    let mut action = None;
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("not well-formed XML at byte {}: {e}", reader.buffer_position()))?;
        match &ev {
            Event::Start(e) => {
                let name = local(e.name().as_ref());
                if stack.is_empty() {
                    if name != "hashlist" {
                        return Err(format!("<{name}> where an ASC MHL <hashlist> was expected"));
                    }
                    root_seen = true;
                }
                let parent = stack.last().map(String::as_str);
                match (parent, name.as_str()) {
                    (Some("hashes"), "hash") => hash = Some((String::new(), None, Vec::new())),
                    (Some("hash"), "path") => {
                        if let Some(h) = hash.as_mut() {
                            h.1 = attr(e, "size").and_then(|s| s.parse().ok());
                        }
                    }
                    (Some("hash"), f) if Format::parse(f).is_some() => action = attr(e, "action"),
                    (Some("creatorinfo"), "tool") => tool_version = attr(e, "version"),
                    _ => {}
                }
                stack.push(name);
                text = Text::default();
            }
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                let parent = stack.last().map(String::as_str);
                let value = text.take();
                match (parent, name.as_str()) {
                    (Some("creatorinfo"), "creationdate") => p.date = value,
                    (Some("creatorinfo"), "comment") => p.comment = value,
                    (Some("creatorinfo"), "tool") => {
                        p.tool = match tool_version.take() {
                            Some(v) => format!("{value} {v}"),
                            None => value,
                        }
                    }
                    (Some("ignore"), "pattern") => p.ignore.push(value),
                    (Some("hash"), "path") => {
                        if let Some(h) = hash.as_mut() {
                            h.0 = value;
                        }
                    }
                    (Some("hash"), f) => {
                        if let (Some(format), Some(h)) = (Format::parse(f), hash.as_mut()) {
                            h.2.push((format, value, action.take()));
                        }
                    }
                    (Some("hashes"), "hash") => {
                        if let Some(h) = hash.take() {
                            if h.0.is_empty() {
                                return Err("a <hash> without a <path>".into());
                            }
                            p.hashes.push(h);
                        }
                    }
                    _ => {}
                }
            }
            Event::Empty(e) => {
                if stack.is_empty() {
                    return Err("an empty document".into());
                }
                // <tool version="…"/> and the like carry nothing we need.
                let _ = e;
            }
            Event::Eof => {
                if let Some(open) = stack.last() {
                    return Err(format!("the document ends inside <{open}> (cut short?)"));
                }
                break;
            }
            other => text.push(other)?,
        }
        buf.clear();
    }
    if !root_seen {
        return Err("no ASC MHL <hashlist> in it".into());
    }
    if p.tool.is_empty() {
        p.tool = "unknown tool".into();
    }
    Ok(p)
}

/// One file whose bytes are not what the history says.
#[derive(Debug, Clone)]
pub(crate) struct Mismatch {
    pub rel: String,
    pub what: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.rel, self.what)
    }
}

/// The outcome of checking a card's files against its history.
#[derive(Debug, Clone, Default)]
pub(crate) struct Checked {
    /// Files (relative to the card) that matched every format.
    pub matched: usize,
    pub mismatches: Vec<Mismatch>,
    /// Listed in the history, not on disk.
    pub missing: Vec<String>,
    /// On disk (among the files checked), not in the history.
    pub unlisted: Vec<String>,
    /// Listed and on disk, but left out by the watch's filters (not sent,
    /// not checked).
    pub not_sent: usize,
}

impl Checked {
    pub(crate) fn passed(&self) -> bool {
        self.mismatches.is_empty() && self.missing.is_empty()
    }

    /// Every fault, one per line, then what is unlisted.
    pub(crate) fn report(&self) -> String {
        let mut lines: Vec<String> = self.mismatches.iter().map(|m| m.to_string()).collect();
        lines.extend(
            self.missing
                .iter()
                .map(|m| format!("{m}: listed in the history but missing")),
        );
        lines.extend(
            self.unlisted
                .iter()
                .map(|u| format!("{u}: not in the history (not checked)")),
        );
        lines.join("\n")
    }

    /// One line for `status` and the set's reason.
    pub(crate) fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.mismatches.first() {
            parts.push(if self.mismatches.len() > 1 {
                format!("{m} (and {} more)", self.mismatches.len() - 1)
            } else {
                m.to_string()
            });
        }
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} listed but missing ({})",
                self.missing.len(),
                self.missing
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        format!("ASC MHL check failed: {}", parts.join("; "))
    }
}

/// Compares the files hashed (path relative to the card → size and
/// digests) with the history; a listed file not among them is looked for
/// on disk below `root` (missing, or only left out by the filters).
pub(crate) fn check(
    root: &Path,
    card: &Path,
    history: &History,
    files: &BTreeMap<String, (u64, Digests)>,
) -> Checked {
    let mut out = Checked::default();
    for (rel, (size, digests)) in files {
        let Some(entry) = history.latest.get(rel) else {
            out.unlisted.push(rel.clone());
            continue;
        };
        let generation = &history.gens[entry.generation];
        if let Some(want) = entry.size
            && want != *size
        {
            out.mismatches.push(Mismatch {
                rel: rel.clone(),
                what: format!("{size} bytes, {generation} says {want}"),
            });
            continue;
        }
        let mut bad = None;
        for (format, want) in &entry.hashes {
            match digests.mhl.get(format) {
                Some(have) if format.same(have, want) => {}
                Some(_) => {
                    bad = Some(format!("{} differs from {generation}", format.name()));
                    break;
                }
                None => {
                    bad = Some(format!("{} was not computed", format.name()));
                    break;
                }
            }
        }
        match bad {
            Some(what) => out.mismatches.push(Mismatch {
                rel: rel.clone(),
                what,
            }),
            None => out.matched += 1,
        }
    }
    for rel in history.latest.keys() {
        if files.contains_key(rel) {
            continue;
        }
        let path: PathBuf = rel.split('/').fold(card.to_path_buf(), |p, c| p.join(c));
        match anchor::stat(root, &path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.missing.push(rel.clone()),
            Ok(Kind::File(_)) => out.not_sent += 1,
            // A folder, link or device where a file was: not the file.
            Ok(_) => out.missing.push(rel.clone()),
            Err(_) => out.missing.push(rel.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_with_entities_namespaces_and_directory_hashes() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<hashlist version="2.0" xmlns="urn:ASC:MHL:v2.0">
  <creatorinfo><creationdate>2026-01-02T03:04:05+00:00</creationdate>
    <hostname>h</hostname><tool version="8.1">Silver&amp;stack</tool></creatorinfo>
  <processinfo><process>in-place</process><ignore><pattern>.DS_Store</pattern></ignore></processinfo>
  <hashes>
    <hash><path size="3">Clips/A &lt;1&gt;.mov</path><xxh64 action="original">ABCDEF</xxh64><md5>00</md5></hash>
    <directoryhash><path>Clips</path><content><xxh64>11</xxh64></content><structure><xxh64>22</xxh64></structure></directoryhash>
    <hash><path size="1">b.mov</path><xxh64 action="failed">99</xxh64><metadata><path>x</path></metadata></hash>
  </hashes>
</hashlist>"#;
        let p = parse_generation(xml).unwrap();
        assert_eq!(p.tool, "Silver&stack 8.1");
        assert_eq!(p.ignore, vec![".DS_Store"]);
        assert_eq!(p.hashes.len(), 2);
        assert_eq!(p.hashes[0].0, "Clips/A <1>.mov");
        assert_eq!(p.hashes[0].1, Some(3));
        assert_eq!(
            p.hashes[0].2[0],
            (Format::Xxh64, "ABCDEF".into(), Some("original".into()))
        );
        assert_eq!(
            p.hashes[1].0, "b.mov",
            "a path inside <metadata> is not the file's"
        );
        assert!(Format::Xxh64.same("abcdef", "ABCDEF"));
    }

    #[test]
    fn bad_documents_are_named_not_panicked_on() {
        for bad in [
            &b"<hashlist><hashes><hash>"[..],
            b"",
            b"<other/>",
            b"<hashlist>&bogus;</hashlist>",
        ] {
            assert!(
                parse_generation(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(
            parse_chain(b"<ascmhldirectory><hashlist><path>a</path></hashlist></ascmhldirectory>").is_err()
        );
        assert!(!safe_rel("../x") && !safe_rel("/x") && !safe_rel("a//b") && safe_rel("a/b.mov"));
    }
}
