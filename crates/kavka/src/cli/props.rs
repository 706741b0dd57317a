//! `key=value` flags (`--property`, `--config`, `--producer-property`) as Kafka's tools
//! parse them.

use anyhow::{bail, Result};

/// Splits `key=value` at the first `=`; the value may itself contain `=`.
pub fn parse_kv(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => bail!("invalid property '{s}': expected key=value"),
    }
}

/// Parses every `key=value`; later keys override earlier ones, as in a properties file.
pub fn parse_all(items: &[String]) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items {
        let (k, v) = parse_kv(item)?;
        out.retain(|(existing, _)| *existing != k);
        out.push((k, v));
    }
    Ok(out)
}

/// Kafka's boolean properties: `true`/`false`, case-insensitive.
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => bail!("invalid value '{value}' for {key}: expected true or false"),
    }
}

pub fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    match value.trim().parse() {
        Ok(n) => Ok(n),
        Err(_) => bail!("invalid value '{value}' for {key}: expected a number"),
    }
}

/// Separators typed on a shell line arrive as `\t` and `\n`; turn those escapes into the
/// characters they name, so `key.separator=\t` means a tab.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(parse_kv("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_kv("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_kv("novalue").is_err());
        assert!(parse_kv("=x").is_err());
        let all = parse_all(&["a=1".into(), "b=2".into(), "a=3".into()]).unwrap();
        assert_eq!(
            all,
            vec![("b".into(), "2".into()), ("a".into(), "3".into())]
        );
    }

    #[test]
    fn booleans_numbers_escapes() {
        assert!(parse_bool("k", "TRUE").unwrap());
        assert!(!parse_bool("k", "false").unwrap());
        assert!(parse_bool("k", "yes").is_err());
        assert_eq!(parse_num::<i32>("k", " 42").unwrap(), 42);
        assert!(parse_num::<i32>("k", "x").is_err());
        assert_eq!(unescape(r"\t"), "\t");
        assert_eq!(unescape(r"a\\b\n"), "a\\b\n");
        assert_eq!(unescape(r"\x"), r"\x");
        assert_eq!(unescape(":"), ":");
    }
}
