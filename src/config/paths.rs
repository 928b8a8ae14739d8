//! Paths and endpoints: `~`, the default state dir, remote folder names,
//! and which endpoints may be reached over plain HTTP.

use super::*;

pub fn default_state_dir() -> PathBuf {
    project_dirs()
        .map(|d| d.data_local_dir().to_path_buf())
        .unwrap_or_else(|| std::env::temp_dir().join("autorender-sync"))
}

/// Expands a leading `~` or `~/` to the home directory.
pub fn expand_tilde(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("is empty; write a path".into());
    }
    if text == "~" || text.starts_with("~/") {
        let home = directories::BaseDirs::new()
            .map(|b| b.home_dir().to_path_buf())
            .ok_or_else(|| "cannot expand ~: no home directory is known".to_string())?;
        return Ok(if text == "~" { home } else { home.join(&text[2..]) });
    }
    if text.starts_with('~') {
        return Err(format!(
            "\"{text}\": only ~/ (your own home) is expanded; write the full path"
        ));
    }
    Ok(PathBuf::from(text))
}

/// `/uploads//videos/` → `uploads/videos`; rejects `..` and `.` segments.
pub fn normalise_remote_folder(text: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for seg in text.split('/') {
        match seg {
            "" => continue,
            "." | ".." => {
                return Err(format!(
                    "\"{text}\" contains \"{seg}\"; remote folders are plain paths like \"uploads/videos\""
                ));
            }
            s if s.chars().any(|c| c.is_control() || c == '\\') => {
                return Err(format!("\"{text}\" contains a control character or backslash"));
            }
            s => parts.push(s),
        }
    }
    Ok(parts.join("/"))
}

/// An endpoint must parse, be http(s), and plain http only on loopback.
pub fn check_endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("\"{text}\" is not a URL ({e})"))?;
    check_transport(&url).map_err(|e| format!("{e}; use https://"))?;
    Ok(url)
}

/// Plain `http://` is allowed only to loopback hosts; everything else must be https.
pub fn check_transport(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "plain http:// to {} would send data unencrypted; http is allowed only to 127.0.0.1/localhost",
            url.host_str().unwrap_or("?")
        )),
        other => Err(format!("scheme \"{other}\" is not supported")),
    }
}

pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}
