//! Text shown to people: file names and service messages come from others
//! (anyone who can write in a shared drop folder names files; a service or a
//! proxy writes error bodies). Control characters, escape sequences and
//! bidirectional overrides are shown as visible escapes on terminals and in
//! text logs, so a name can neither drive the terminal (OSC 52 clipboard
//! writes, window titles, cursor moves), forge a log line with a newline,
//! nor reorder what a reader sees. `--json` output keeps exact names: JSON
//! escapes them itself and programs need the real bytes.

use std::borrow::Cow;

/// Would showing `c` as is let it act instead of being read?
fn hazardous(c: char) -> bool {
    c.is_control() // C0, DEL and C1 (ESC, CSI, OSC …), newlines and tabs
        || matches!(c,
            '\u{061c}'               // Arabic letter mark
            | '\u{200e}' | '\u{200f}' // left-to-right and right-to-left marks
            | '\u{202a}'..='\u{202e}' // embeddings and overrides
            | '\u{2066}'..='\u{2069}' // isolates
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{feff}' // zero-width no-break space (byte order mark)
        )
}

/// `s` with each hazardous character written as `\u{…}` (`\n`, `\r`, `\t`
/// as themselves escaped); borrowed when there is nothing to escape.
pub fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hazardous) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hazardous(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A path as [`shown`] text.
pub fn path(p: &std::path::Path) -> String {
    shown(&p.display().to_string()).into_owned()
}

/// Slack's mrkdwn treats `<…>` as links and mentions (`<!channel>`) and `&`
/// as the start of an entity: text from names and errors is escaped as
/// Slack asks, after [`shown`].
pub fn slack(s: &str) -> String {
    shown(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_and_bidi_characters_and_nothing_else() {
        assert!(matches!(shown("plain é 東京 name.mp4"), Cow::Borrowed(_)));
        assert_eq!(shown("a\u{1b}]52;c;aGk=\u{7}b"), "a\\u{1b}]52;c;aGk=\\u{7}b");
        assert_eq!(shown("evil\u{202e}4pm.exe"), "evil\\u{202e}4pm.exe");
        assert_eq!(shown("two\nlines\r\t"), "two\\nlines\\r\\t");
        assert_eq!(shown("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(shown("iso\u{2066}x\u{2069}"), "iso\\u{2066}x\\u{2069}");
    }

    #[test]
    fn slack_text_cannot_mention_or_link() {
        assert_eq!(
            slack("<!channel> & <http://x|y>"),
            "&lt;!channel&gt; &amp; &lt;http://x|y&gt;"
        );
    }
}
