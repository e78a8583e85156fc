//! The console's words: one message catalogue per language (`crates/http/locales/<code>/`,
//! compiled in), and the choice of language for a request: `?lang=`, then the language
//! cookie, then `Accept-Language`, then English.
//!
//! A catalogue is plain text a translator can edit: one message per line, `key = text`;
//! lines starting with `#` and blank lines are ignored; `{name}` is filled in by the console.
//! A language's catalogue is split into one file per part of the console ([`PARTS`]); a key
//! is defined once across them.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The cookie that keeps the language a user chose with `?lang=`.
pub const LANGUAGE_COOKIE: &str = "kinbridge-lang";

/// The files of each language's catalogue, one per part of the console.
pub const PARTS: [&str; 7] = [
    "console", "compose", "sent", "tracing", "audit", "admin", "session",
];

/// One language's catalogue files, in the order of [`PARTS`].
macro_rules! language {
    ($code:literal, $direction:expr) => {
        (
            $code,
            $direction,
            [
                include_str!(concat!("../../locales/", $code, "/console.txt")),
                include_str!(concat!("../../locales/", $code, "/compose.txt")),
                include_str!(concat!("../../locales/", $code, "/sent.txt")),
                include_str!(concat!("../../locales/", $code, "/tracing.txt")),
                include_str!(concat!("../../locales/", $code, "/audit.txt")),
                include_str!(concat!("../../locales/", $code, "/admin.txt")),
                include_str!(concat!("../../locales/", $code, "/session.txt")),
            ],
        )
    };
}

/// Every language the console speaks: its code, its writing direction, its catalogue files.
const SOURCES: &[(&str, Direction, [&str; PARTS.len()])] = &[
    language!("en", Direction::Ltr),
    language!("fr", Direction::Ltr),
    language!("pt", Direction::Ltr),
    language!("es", Direction::Ltr),
    language!("ar", Direction::Rtl),
];

/// A writing direction, for `<html dir>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Left to right.
    Ltr,
    /// Right to left (Arabic).
    Rtl,
}

impl Direction {
    /// The value of the `dir` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ltr => "ltr",
            Direction::Rtl => "rtl",
        }
    }
}

/// One language's messages.
pub struct Catalogue {
    /// Its language code (BCP 47 primary subtag), for `<html lang>`.
    pub code: &'static str,
    /// Its writing direction.
    pub direction: Direction,
    messages: HashMap<&'static str, &'static str>,
}

impl Catalogue {
    /// The catalogue of `files`: each `key = text` line of each.
    fn parse(code: &'static str, direction: Direction, files: &[&'static str]) -> Self {
        let messages = files.iter().flat_map(|text| messages_of(text)).collect();
        Self {
            code,
            direction,
            messages,
        }
    }

    /// The message `key`, or English's if this catalogue lacks it, or the key itself.
    pub fn text(&self, key: &str) -> &'static str {
        self.lookup(key)
            .or_else(|| english().lookup(key))
            .unwrap_or("?")
    }

    /// The message `key` with each `{name}` replaced by its value.
    pub fn fill(&self, key: &str, values: &[(&str, &str)]) -> String {
        let mut text = self.text(key).to_owned();
        for (name, value) in values {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }

    /// The message `key` if this catalogue has it.
    pub fn lookup(&self, key: &str) -> Option<&'static str> {
        self.messages.get(key).copied()
    }

    /// Every key of the catalogue.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.messages.keys().copied()
    }
}

/// The `(key, text)` pairs of one catalogue file.
fn messages_of(text: &'static str) -> impl Iterator<Item = (&'static str, &'static str)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim(), value.trim()))
}

/// Every catalogue, English first.
pub fn all() -> &'static [Catalogue] {
    static ALL: OnceLock<Vec<Catalogue>> = OnceLock::new();
    ALL.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(code, direction, files)| Catalogue::parse(code, *direction, files))
            .collect()
    })
}

/// The English catalogue, the reference every other one translates.
pub fn english() -> &'static Catalogue {
    &all()[0]
}

/// The catalogue of language `code` (a primary subtag, any case), if the console has it.
pub fn find(code: &str) -> Option<&'static Catalogue> {
    let primary = code.split(['-', '_']).next().unwrap_or_default();
    all()
        .iter()
        .find(|c| c.code.eq_ignore_ascii_case(primary.trim()))
}

/// The language for a request: `chosen` (`?lang=`), else the `cookie`'s, else the first
/// of `accept_language` the console has (by quality, then order), else English.
pub fn choose(
    chosen: Option<&str>,
    cookie: Option<&str>,
    accept_language: Option<&str>,
) -> &'static Catalogue {
    if let Some(c) = chosen.and_then(find).or_else(|| cookie.and_then(find)) {
        return c;
    }
    let mut ranges: Vec<(f32, usize, &str)> = accept_language
        .unwrap_or_default()
        .split(',')
        .enumerate()
        .filter_map(|(i, range)| {
            let mut parts = range.split(';');
            let tag = parts.next()?.trim();
            let quality = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (quality > 0.0).then_some((quality, i, tag))
        })
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges
        .into_iter()
        .find_map(|(_, _, tag)| find(tag))
        .unwrap_or_else(english)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_has_every_english_key_and_no_empty_message() {
        let english = english();
        assert!(english.keys().count() > 50);
        for catalogue in all() {
            let mut missing: Vec<_> = english
                .keys()
                .filter(|k| catalogue.lookup(k).is_none())
                .collect();
            missing.sort_unstable();
            assert!(
                missing.is_empty(),
                "the {} catalogue lacks {missing:?}",
                catalogue.code
            );
            for key in catalogue.keys() {
                assert!(
                    english.lookup(key).is_some(),
                    "the {} catalogue has {key}, which English does not",
                    catalogue.code
                );
                assert!(
                    !catalogue.text(key).is_empty(),
                    "{}: {key} is empty",
                    catalogue.code
                );
            }
        }
    }

    #[test]
    fn a_key_is_defined_once_in_a_language() {
        for (code, _, files) in SOURCES {
            let mut seen = std::collections::HashSet::new();
            for (part, text) in PARTS.iter().zip(files) {
                for (key, _) in messages_of(text) {
                    assert!(seen.insert(key), "{code}/{part}.txt defines {key} again");
                }
            }
        }
    }

    #[test]
    fn the_language_is_the_chosen_then_the_cookie_then_the_browser_then_english() {
        assert_eq!(choose(Some("ar"), Some("fr"), Some("es")).code, "ar");
        assert_eq!(choose(Some("xx"), Some("fr"), Some("es")).code, "fr");
        assert_eq!(
            choose(None, None, Some("de, pt-BR;q=0.8, es;q=0.9")).code,
            "es"
        );
        assert_eq!(choose(None, None, Some("fr-CA;q=0, pt")).code, "pt");
        assert_eq!(choose(None, None, Some("de")).code, "en");
        assert_eq!(choose(None, None, None).code, "en");
        assert_eq!(choose(Some("ar"), None, None).direction, Direction::Rtl);
    }
}
