//! The spanned-TOML reader: typed fields with their key and line, every
//! problem collected, "did you mean" for unknown keys.

use super::*;

pub(super) type Span = Range<usize>;
pub(super) type Item<'a, 'i> = &'a Spanned<DeValue<'i>>;

pub(super) struct Walker<'s> {
    pub(super) src: &'s str,
    pub(super) file: String,
    pub(super) errors: Vec<ConfigError>,
}

impl<'s> Walker<'s> {
    pub(super) fn line(&self, span: &Span) -> usize {
        let end = span.start.min(self.src.len());
        self.src[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    pub(super) fn err(&mut self, key: &str, span: Option<Span>, message: impl Into<String>) {
        let line = span.map(|s| self.line(&s));
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Splits a table into known fields, reporting unknown ones.
    pub(super) fn fields<'a, 'i>(
        &mut self,
        table: &'a DeTable<'i>,
        prefix: &str,
        allowed: &[&str],
    ) -> HashMap<String, Item<'a, 'i>> {
        let mut out = HashMap::new();
        for (k, v) in table.iter() {
            let name: &str = k.get_ref();
            let full = join_key(prefix, name);
            if allowed.contains(&name) {
                out.insert(name.to_string(), v);
            } else {
                let hint = allowed
                    .iter()
                    .map(|a| (strsim::jaro_winkler(a, name), *a))
                    .filter(|(score, _)| *score > 0.8)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, a)| format!("; did you mean `{}`?", join_key(prefix, a)))
                    .unwrap_or_else(|| format!("; known keys here: {}", allowed.join(", ")));
                self.err(&full, Some(k.span()), format!("unknown key{hint}"));
            }
        }
        out
    }

    pub(super) fn table<'a, 'i>(&mut self, item: Item<'a, 'i>, key: &str) -> Option<&'a DeTable<'i>> {
        match item.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(
                    key,
                    Some(item.span()),
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn string(
        &mut self,
        f: &HashMap<String, Item>,
        name: &str,
        key: &str,
    ) -> Option<(String, Span)> {
        let item = f.get(name)?;
        match item.get_ref() {
            DeValue::String(s) => Some((s.to_string(), item.span())),
            other => {
                self.err(
                    key,
                    Some(item.span()),
                    format!("expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, f: &HashMap<String, Item>, name: &str, key: &str) -> Option<bool> {
        let item = f.get(name)?;
        match item.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.err(
                    key,
                    Some(item.span()),
                    format!("expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn integer(
        &mut self,
        f: &HashMap<String, Item>,
        name: &str,
        key: &str,
        min: i64,
    ) -> Option<i64> {
        let item = f.get(name)?;
        let parsed = match item.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            other => {
                self.err(
                    key,
                    Some(item.span()),
                    format!("expected a whole number, found {}", other.type_str()),
                );
                return None;
            }
        };
        match parsed {
            Some(v) if v >= min => Some(v),
            _ => {
                self.err(key, Some(item.span()), format!("must be a whole number ≥ {min}"));
                None
            }
        }
    }

    pub(super) fn duration(&mut self, f: &HashMap<String, Item>, name: &str, key: &str) -> Option<Duration> {
        let (text, span) = self.string(f, name, key)?;
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(key, Some(span), e.to_string());
                None
            }
        }
    }

    /// A byte size ("10MB", "1.5GiB", "0").
    pub(super) fn size(&mut self, f: &HashMap<String, Item>, name: &str, key: &str) -> Option<u64> {
        let (text, span) = self.string(f, name, key)?;
        match crate::units::parse_size(&text) {
            Ok(n) => Some(n),
            Err(e) => {
                self.err(key, Some(span), e.to_string());
                None
            }
        }
    }

    /// A duration where "off" or "0s" means disabled.
    pub(super) fn optional_duration(
        &mut self,
        f: &HashMap<String, Item>,
        name: &str,
        key: &str,
    ) -> Option<Option<Duration>> {
        let (text, span) = self.string(f, name, key)?;
        if text.trim().eq_ignore_ascii_case("off") {
            return Some(None);
        }
        match parse_duration(&text) {
            Ok(d) if d.is_zero() => Some(None),
            Ok(d) => Some(Some(d)),
            Err(e) => {
                self.err(key, Some(span), format!("{e}, or \"off\""));
                None
            }
        }
    }

    pub(super) fn strings(
        &mut self,
        f: &HashMap<String, Item>,
        name: &str,
        key: &str,
    ) -> Option<Vec<(String, Span)>> {
        let item = f.get(name)?;
        let DeValue::Array(items) = item.get_ref() else {
            self.err(
                key,
                Some(item.span()),
                format!(
                    "expected a list of strings like [\"a\", \"b\"], found {}",
                    item.get_ref().type_str()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for v in items.iter() {
            match v.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), v.span())),
                other => {
                    self.err(
                        key,
                        Some(v.span()),
                        format!("list items must be strings, found {}", other.type_str()),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    pub(super) fn path(&mut self, text: &str, span: &Span, key: &str) -> Option<PathBuf> {
        match expand_tilde(text) {
            Ok(p) if p.is_absolute() => Some(p),
            Ok(_) => {
                self.err(
                    key,
                    Some(span.clone()),
                    format!("\"{text}\" is a relative path; write an absolute path or one starting with ~/"),
                );
                None
            }
            Err(e) => {
                self.err(key, Some(span.clone()), e);
                None
            }
        }
    }
}

pub(super) fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

pub(super) fn to_json(v: &DeValue) -> Option<serde_json::Value> {
    Some(match v {
        DeValue::String(s) => serde_json::Value::String(s.to_string()),
        DeValue::Integer(i) => serde_json::Value::from(i64::from_str_radix(i.as_str(), i.radix()).ok()?),
        DeValue::Float(f) => serde_json::Value::from(f.as_str().parse::<f64>().ok()?),
        DeValue::Boolean(b) => serde_json::Value::Bool(*b),
        DeValue::Datetime(d) => serde_json::Value::String(d.to_string()),
        DeValue::Array(a) => {
            serde_json::Value::Array(a.iter().map(|x| to_json(x.get_ref())).collect::<Option<_>>()?)
        }
        DeValue::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, x)| Some((k.get_ref().to_string(), to_json(x.get_ref())?)))
                .collect::<Option<_>>()?,
        ),
    })
}
