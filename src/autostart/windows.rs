//! Windows: a per-user `HKCU\Software\Microsoft\Windows\CurrentVersion\Run`
//! value (no admin rights needed), written with `reg.exe`.

use std::path::PathBuf;

use super::{Context, Installed, Plan};

pub const RUN_KEY: &str = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run";
pub const VALUE_NAME: &str = "autorender-sync";

/// Windows command-line quoting (CommandLineToArgvW rules).
pub fn quote(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '"']) {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.push_str(&"\\".repeat(backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.push_str(&"\\".repeat(backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.push_str(&"\\".repeat(backslashes * 2));
    out.push('"');
    out
}

pub fn command_line(ctx: &Context) -> String {
    ctx.argv().iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

pub fn plan(ctx: &Context) -> Plan {
    Plan {
        method: "per-user Run registry value".into(),
        files: Vec::new(),
        commands: vec![vec![
            "reg".into(),
            "add".into(),
            RUN_KEY.into(),
            "/v".into(),
            VALUE_NAME.into(),
            "/t".into(),
            "REG_SZ".into(),
            "/d".into(),
            command_line(ctx),
            "/f".into(),
        ]],
        notes: vec!["the agent starts at your next sign-in".into()],
    }
}

pub fn uninstall() -> Result<Vec<String>, super::AutostartError> {
    Ok(super::run_commands(&[vec![
        "reg".into(),
        "delete".into(),
        RUN_KEY.into(),
        "/v".into(),
        VALUE_NAME.into(),
        "/f".into(),
    ]]))
}

pub fn installed() -> Vec<Installed> {
    let ok = std::process::Command::new("reg")
        .args(["query", RUN_KEY, "/v", VALUE_NAME])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        vec![Installed {
            method: "Run registry value".into(),
            path: PathBuf::from(RUN_KEY),
        }]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_quoting() {
        assert_eq!(quote(r"C:\bin\a.exe"), r"C:\bin\a.exe");
        assert_eq!(quote(r"C:\Program Files\a.exe"), r#""C:\Program Files\a.exe""#);
        assert_eq!(quote(r"C:\dir with space\"), r#""C:\dir with space\\""#);
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
    }
}
