//! What a reload changed, in the config's own words: the keys whose value
//! differs between the text the agent runs with and the text it reads now
//! (`agent.direct_upload_max: "8MiB" → "0"`, `watch[1].include: added`).
//! Read from the TOML itself, so what `reload` reports is what the user
//! edited, not a rendering of internal defaults.

use toml::{Table, Value};

/// Keys a running agent keeps until it is restarted (its journal, its
/// control address, its log file): a reload reports them as such.
pub const AFTER_RESTART: [&str; 3] = ["agent.state_dir", "control.listen", "agent.log_file"];

/// Keys whose values are secrets (a webhook's or healthcheck's URL, a
/// database address with its password): said to have changed, never shown.
fn secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    last == "url" || last.ends_with("_url") || last == "database" || last.contains("key")
}

/// One line per key that differs between `old` and `new`, table by table
/// in key order (what `old` had and `new` has not after the rest).
pub fn changes(old: &Table, new: &Table) -> Vec<String> {
    let mut out = Vec::new();
    tables("", old, new, &mut out);
    for line in &mut out {
        if AFTER_RESTART.iter().any(|k| line.starts_with(&format!("{k}:"))) {
            line.push_str(" (takes effect when the agent is restarted)");
        }
    }
    out
}

fn tables(prefix: &str, old: &Table, new: &Table, out: &mut Vec<String>) {
    for (k, v) in new {
        let key = join(prefix, k);
        match old.get(k) {
            None => out.push(format!("{key}: added{}", shown(&key, v, " = "))),
            Some(was) => values(&key, was, v, out),
        }
    }
    for (k, was) in old {
        if !new.contains_key(k) {
            let key = join(prefix, k);
            let was = shown(&key, was, "");
            if was.is_empty() {
                out.push(format!("{key}: removed"));
            } else {
                out.push(format!("{key}: removed (was {was})"));
            }
        }
    }
}

fn values(key: &str, was: &Value, now: &Value, out: &mut Vec<String>) {
    match (was, now) {
        (Value::Table(a), Value::Table(b)) => tables(key, a, b, out),
        // An array of tables ([[watch]], [[notify]]): entry by entry.
        (Value::Array(a), Value::Array(b)) if a.iter().chain(b).all(Value::is_table) => {
            for i in 0..a.len().max(b.len()) {
                let at = format!("{key}[{i}]");
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => values(&at, x, y, out),
                    (None, Some(_)) => out.push(format!("{at}: added")),
                    (Some(_), None) => out.push(format!("{at}: removed")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a == b => {}
        (a, b) if secret(key) => {
            let _ = (a, b);
            out.push(format!("{key}: changed"));
        }
        (a, b) => out.push(format!("{key}: {a} → {b}")),
    }
}

/// ` = VALUE` (or the `lead` given) unless the key is a secret.
fn shown(key: &str, v: &Value, lead: &str) -> String {
    if secret(key) || v.is_table() || v.as_array().is_some_and(|a| a.iter().all(Value::is_table)) {
        String::new()
    } else {
        format!("{lead}{v}")
    }
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Table {
        text.parse().unwrap()
    }

    #[test]
    fn changed_added_and_removed_keys_are_named_with_their_values() {
        let old = t(r#"
[agent]
direct_upload_max = "8MiB"
concurrent_files = 2
[[watch]]
path = "/a"
remote_folder = "x"
[[notify]]
url = "https://hooks.example/secret-path"
"#);
        let new = t(r#"
[agent]
direct_upload_max = "0"
settle = "5s"
[[watch]]
path = "/a"
remote_folder = "y"
[[watch]]
path = "/b"
remote_folder = "z"
[[notify]]
url = "https://hooks.example/other-secret"
"#);
        assert_eq!(
            changes(&old, &new),
            [
                "agent.direct_upload_max: \"8MiB\" → \"0\"",
                "agent.settle: added = \"5s\"",
                "agent.concurrent_files: removed (was 2)",
                "notify[0].url: changed",
                "watch[0].remote_folder: \"x\" → \"y\"",
                "watch[1]: added",
            ]
        );
        assert!(changes(&new, &new).is_empty());
        // A healthcheck URL's path is its secret, as a webhook's is.
        assert_eq!(
            changes(
                &t("[agent]\nhealthcheck_url = \"https://hc-ping.com/old-uuid\""),
                &t("[agent]\nhealthcheck_url = \"https://hc-ping.com/new-uuid\"")
            ),
            ["agent.healthcheck_url: changed"]
        );
        assert_eq!(
            changes(
                &t("[agent]\nstate_dir = \"/a\""),
                &t("[agent]\nstate_dir = \"/b\"")
            ),
            ["agent.state_dir: \"/a\" → \"/b\" (takes effect when the agent is restarted)"]
        );
    }
}
