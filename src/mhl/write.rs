//! Our generation: the files of a set as they were uploaded (process
//! "transfer", the workspace as destination), appended to the card's chain.

use std::collections::BTreeMap;
use std::path::Path;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::read::{CHAIN, FOLDER, History};
use super::{Format, c4_of};

/// Our namespace for what ASC MHL has no element for (each file's sha256,
/// file_no and URL), inside the `<metadata>` the schema leaves open.
const OUR_NS: &str = "urn:autorender-sync:mhl:1";

/// One file of the generation.
#[derive(Debug, Clone)]
pub(crate) struct GenerationFile {
    /// Relative to the card, `/`-separated.
    pub rel: String,
    pub size: u64,
    pub mtime_ms: Option<i64>,
    pub hashes: BTreeMap<Format, String>,
    /// The formats the history held for this file and that matched
    /// ("verified"); the others are "original".
    pub verified: Vec<Format>,
    pub sha256: String,
    pub file_no: Option<String>,
    pub url: Option<String>,
}

/// What the generation says about itself.
#[derive(Debug, Clone)]
pub(crate) struct Generation {
    /// The card folder's name (in the file name, as the reference tool
    /// names generations).
    pub card_name: String,
    pub at_ms: i64,
    /// Where the files went ("AutoRender workspace folder …").
    pub location: String,
    pub comment: String,
    pub files: Vec<GenerationFile>,
}

/// Writes `generation` as the next one after `previous` (or the first)
/// into `card`/ascmhl below `root` and rewrites the chain to list it.
/// Returns the names written (the generation, then the chain). A
/// generation file is never overwritten; the chain is replaced whole
/// (written aside, renamed over).
pub(crate) fn write_generation(
    root: &Path,
    card: &Path,
    previous: Option<&History>,
    generation: &Generation,
) -> Result<Vec<String>, String> {
    let seq = previous
        .and_then(|h| h.chain.iter().map(|c| c.0).max())
        .unwrap_or(0)
        + 1;
    let ignore: Vec<String> = match previous {
        Some(h) if !h.ignore.is_empty() => h.ignore.clone(),
        _ => vec![".DS_Store".into(), FOLDER.into(), format!("{FOLDER}/")],
    };
    let xml = generation_xml(generation, &ignore).map_err(|e| e.to_string())?;
    let stamp = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(generation.at_ms.max(0) as u64),
    )
    .to_string();
    // 2026-12-05T12:15:37Z → 2026-12-05_121537Z
    let (date, time) = stamp
        .trim_end_matches('Z')
        .split_once('T')
        .unwrap_or((&stamp, ""));
    let name = format!(
        "{seq:04}_{}_{date}_{}Z.mhl",
        safe_name(&generation.card_name),
        time.replace(':', "")
    );
    let dir = card.join(FOLDER);
    if previous.is_none() {
        make_folder(root, &dir)?;
    }
    crate::anchor::put_below(root, &dir.join(&name), &xml, false)
        .map_err(|e| format!("{}: {e}", dir.join(&name).display()))?;
    let mut chain: Vec<(u32, String, String)> = previous.map(|h| h.chain.clone()).unwrap_or_default();
    chain.push((seq, name.clone(), c4_of(&xml)));
    let chain_xml = chain_xml(&chain).map_err(|e| e.to_string())?;
    crate::anchor::put_below(root, &dir.join(CHAIN), &chain_xml, true)
        .map_err(|e| format!("{}: {e}", dir.join(CHAIN).display()))?;
    Ok(vec![name, CHAIN.to_string()])
}

/// Creates `dir` (the card's `ascmhl/`) below `root` if it is not there,
/// refusing a symlink in its place.
fn make_folder(root: &Path, dir: &Path) -> Result<(), String> {
    match crate::anchor::stat(root, dir) {
        Ok(crate::anchor::Kind::Dir) => Ok(()),
        Ok(_) => Err(format!("{} is there and is not a folder", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Made with mkdirat from descriptors reached without following
            // a link: a parent swapped for a symlink since the stat is refused.
            crate::anchor::make_dirs(root, dir).map_err(|e| format!("{}: {e}", dir.display()))
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn date(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

fn generation_xml(g: &Generation, ignore: &[String]) -> std::io::Result<Vec<u8>> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let now = date(g.at_ms);
    w.create_element("hashlist")
        .with_attribute(("version", "2.0"))
        .with_attribute(("xmlns", "urn:ASC:MHL:v2.0"))
        .write_inner_content(|w| {
            w.create_element("creatorinfo").write_inner_content(|w| {
                w.create_element("creationdate")
                    .write_text_content(BytesText::new(&now))?;
                w.create_element("hostname")
                    .write_text_content(BytesText::new(crate::sys::host_name()))?;
                w.create_element("tool")
                    .with_attribute(("version", env!("CARGO_PKG_VERSION")))
                    .write_text_content(BytesText::new("autorender-sync"))?;
                w.create_element("location")
                    .write_text_content(BytesText::new(&g.location))?;
                w.create_element("comment")
                    .write_text_content(BytesText::new(&g.comment))?;
                Ok(())
            })?;
            w.create_element("processinfo").write_inner_content(|w| {
                w.create_element("process")
                    .write_text_content(BytesText::new("transfer"))?;
                w.create_element("ignore").write_inner_content(|w| {
                    for p in ignore {
                        w.create_element("pattern")
                            .write_text_content(BytesText::new(p))?;
                    }
                    Ok(())
                })?;
                Ok(())
            })?;
            w.create_element("hashes").write_inner_content(|w| {
                for f in &g.files {
                    w.create_element("hash").write_inner_content(|w| {
                        let size = f.size.to_string();
                        let mut path = w.create_element("path").with_attribute(("size", size.as_str()));
                        let mtime = f.mtime_ms.map(date);
                        if let Some(m) = &mtime {
                            path = path.with_attribute(("lastmodificationdate", m.as_str()));
                        }
                        path.write_text_content(BytesText::new(&f.rel))?;
                        // BTreeMap order is the schema's order.
                        for (format, value) in &f.hashes {
                            let action = if f.verified.contains(format) {
                                "verified"
                            } else {
                                "original"
                            };
                            w.create_element(format.name())
                                .with_attribute(("action", action))
                                .with_attribute(("hashdate", now.as_str()))
                                .write_text_content(BytesText::new(value))?;
                        }
                        w.create_element("metadata").write_inner_content(|w| {
                            let mut e = w
                                .create_element("autorender")
                                .with_attribute(("xmlns", OUR_NS))
                                .with_attribute(("sha256", f.sha256.as_str()));
                            if let Some(n) = &f.file_no {
                                e = e.with_attribute(("file_no", n.as_str()));
                            }
                            if let Some(u) = &f.url {
                                e = e.with_attribute(("url", u.as_str()));
                            }
                            e.write_empty()?;
                            Ok(())
                        })?;
                        Ok(())
                    })?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    let mut out = w.into_inner();
    out.push(b'\n');
    Ok(out)
}

fn chain_xml(chain: &[(u32, String, String)]) -> std::io::Result<Vec<u8>> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("ascmhldirectory")
        .with_attribute(("xmlns", "urn:ASC:MHL:DIRECTORY:v2.0"))
        .write_inner_content(|w| {
            for (seq, name, c4) in chain {
                let seq = seq.to_string();
                w.create_element("hashlist")
                    .with_attribute(("sequencenr", seq.as_str()))
                    .write_inner_content(|w| {
                        w.create_element("path")
                            .write_text_content(BytesText::new(name))?;
                        w.create_element("c4").write_text_content(BytesText::new(c4))?;
                        Ok(())
                    })?;
            }
            Ok(())
        })?;
    let mut out = w.into_inner();
    out.push(b'\n');
    Ok(out)
}
