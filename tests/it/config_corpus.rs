//! The bad-config corpus: every file in `tests/config-corpus/` is a broken
//! config whose first line says `# expect: <key> on line <N>`. Each must make
//! `check` exit 2, and the message naming that key must name line N (and
//! never panic).
//! A new case is one new file.

use std::path::Path;

use crate::harness::*;

#[test]
fn every_broken_config_is_exit_2_naming_the_key_and_line() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config-corpus");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap().join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("file.txt"), "x").unwrap();
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case)
            .unwrap()
            .replace("@DIR@", &root.display().to_string());
        let (expect, line) = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .and_then(|l| l.rsplit_once(" on line "))
            .unwrap_or_else(|| panic!("{} lacks its `# expect: <key> on line <N>` line", case.display()));
        let (expect, line) = (expect.to_string(), line.trim().to_string());
        let config = dir.path().join("config.toml");
        std::fs::write(&config, &text).unwrap();
        let mut c = std::process::Command::new(bin());
        c.arg("--config")
            .arg(&config)
            .args(["check", "--offline"])
            .env("AUTORENDER_API_KEY", "k");
        let out = run(c);
        let needle = if expect.contains(' ') {
            expect.clone()
        } else {
            format!("`{expect}`")
        };
        // The message naming the key, and the line it names.
        let message = out.stderr.lines().find(|l| l.contains(&needle));
        let named = message.is_some();
        let has_line = message.is_some_and(|m| m.contains(&format!("config.toml:{line}:")));
        if out.code != 2 || !named || !has_line || out.stderr.contains("panicked") {
            failures.push(format!(
                "{}: exit {}, stderr: {}",
                case.display(),
                out.code,
                out.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "config corpus: {0}/{0} cases exit 2 naming their key and its exact line",
        cases.len()
    );
}
