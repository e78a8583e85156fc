//! The console's HTML: escaping, the page every view sits in (language, direction, the
//! stylesheet, the navigation) and small builders. Every word comes from the request's
//! catalogue; every value is escaped.

use std::fmt::Write;

use super::Section;
use super::catalogue::{self, Catalogue};

/// `text` escaped for HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title` and `body` (already HTML) in the catalogue's language and direction,
/// with links to the `sections` the caller may open and to the same `path` in each other
/// language.
pub fn page(cat: &Catalogue, title: &str, path: &str, sections: &[&Section], body: &str) -> String {
    let mut links = String::new();
    for section in sections {
        let current = if path.starts_with(section.path) {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            links,
            " <a href=\"{}\"{current}>{}</a>",
            section.path,
            esc(cat.text(section.key))
        );
    }
    let mut languages = String::new();
    for other in catalogue::all() {
        if other.code == cat.code {
            let _ = write!(
                languages,
                "<li><strong lang=\"{}\">{}</strong></li>",
                other.code,
                esc(other.text("language.name"))
            );
        } else {
            let _ = write!(
                languages,
                "<li><a href=\"{}?lang={}\" lang=\"{}\" hreflang=\"{}\">{}</a></li>",
                esc(path),
                other.code,
                other.code,
                other.code,
                esc(other.text("language.name"))
            );
        }
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\" dir=\"{dir}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · {console}</title>\n<link rel=\"stylesheet\" href=\"/console/style.css\">\n</head>\n\
         <body>\n<header><nav aria-label=\"{nav}\"><a class=\"brand\" href=\"/console/\">{console}</a>{links}</nav>\
         <nav aria-label=\"{language}\"><ul class=\"languages\">{languages}</ul></nav></header>\n\
         <main>\n<h1>{title}</h1>\n{body}</main>\n<footer><p>{footer}</p></footer>\n</body>\n</html>\n",
        lang = cat.code,
        dir = cat.direction.as_str(),
        title = esc(title),
        console = esc(cat.text("console.title")),
        nav = esc(cat.text("nav.main")),
        language = esc(cat.text("nav.languages")),
        footer = esc(cat.text("console.footer")),
    )
}

/// A description list of `rows` (label, value already HTML), empty values left out.
pub fn facts(rows: &[(&str, String)]) -> String {
    let mut out = String::from("<dl>");
    for (label, value) in rows.iter().filter(|(_, v)| !v.is_empty()) {
        let _ = write!(out, "<dt>{}</dt><dd>{value}</dd>", esc(label));
    }
    out.push_str("</dl>\n");
    out
}

/// Escaped values joined by commas.
pub fn list(values: &[String]) -> String {
    values.iter().map(|v| esc(v)).collect::<Vec<_>>().join(", ")
}

/// A protobuf enum value name as a catalogue key: `prefix.` and the name without its type
/// prefix, lower case, `_` as `-` (`PURPOSE_SERVICE_REFERRAL` → `purpose.service-referral`).
pub fn enum_key(prefix: &str, type_prefix: &str, name: &str) -> String {
    format!(
        "{prefix}.{}",
        name.trim_start_matches(type_prefix)
            .to_ascii_lowercase()
            .replace('_', "-")
    )
}

/// A time in milliseconds since the Unix epoch, in UTC, written as the catalogue's
/// `format.datetime` pattern says (`{day}`, `{month}` (the name `format.month.N`), `{year}`,
/// `{hour}`, `{minute}`); empty for no time (0 or less).
pub fn when(cat: &Catalogue, ms: i64) -> String {
    datetime(cat, "format.datetime", ms)
}

/// A day (milliseconds since the Unix epoch, in UTC), as the catalogue's `format.date` says.
pub fn day(cat: &Catalogue, ms: i64) -> String {
    datetime(cat, "format.date", ms)
}

fn datetime(cat: &Catalogue, pattern: &str, ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    time::OffsetDateTime::from_unix_timestamp(ms / 1000).map_or_else(
        |_| String::new(),
        |t| {
            let month = cat.text(&format!("format.month.{}", u8::from(t.month())));
            cat.fill(
                pattern,
                &[
                    ("day", &t.day().to_string()),
                    ("month", month),
                    ("year", &t.year().to_string()),
                    ("hour", &format!("{:02}", t.hour())),
                    ("minute", &format!("{:02}", t.minute())),
                ],
            )
        },
    )
}

/// A count with its digits grouped by three with the separator the catalogue's
/// `format.group` names (`comma`, `period`, `narrow-no-break-space`, `no-break-space`,
/// `apostrophe`, `none`): English `1,234`, French `1 234` (a narrow no-break space),
/// Portuguese and Spanish `1.234`, Arabic `1,234` (Latin digits, as in the node's logs and
/// the numbers a user copies).
pub fn number(cat: &Catalogue, n: u64) -> String {
    let digits = n.to_string();
    let separator = match cat.text("format.group") {
        "comma" => ",",
        "period" => ".",
        "narrow-no-break-space" => "\u{202f}",
        "no-break-space" => "\u{a0}",
        "apostrophe" => "\u{2019}",
        _ => "",
    };
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * separator.len());
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(separator);
        }
        out.push(digit);
    }
    out
}

/// The box a refusal is shown in: the reason code and what the service said (or the
/// catalogue's own words for that reason, if it has them).
pub fn refusal(cat: &Catalogue, reason: &str, message: &str) -> String {
    let said = cat
        .lookup(&format!("refusal.{reason}"))
        .map_or_else(|| esc(message), esc);
    format!(
        "<section class=\"refusal\" role=\"alert\"><h2>{}</h2><p>{said}</p><p>{}: <code>{}</code></p></section>\n",
        esc(cat.text("refused.title")),
        esc(cat.text("refused.reason")),
        esc(reason)
    )
}

/// A notice box (a result message).
pub fn notice(text: &str) -> String {
    format!("<p class=\"notice\" role=\"status\">{}</p>\n", esc(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_enum_names_become_keys() {
        assert_eq!(
            esc("<a href='x'>\"&"),
            "&lt;a href=&#39;x&#39;&gt;&quot;&amp;"
        );
        assert_eq!(
            enum_key("purpose", "PURPOSE_", "PURPOSE_SERVICE_REFERRAL"),
            "purpose.service-referral"
        );
    }

    #[test]
    fn dates_and_numbers_are_written_as_each_language_writes_them() {
        let cat = |code| catalogue::find(code).expect("a catalogue");
        // 2025-11-29 23:14 UTC.
        let ms = 1_764_458_040_000;
        let expected = [
            (
                "en",
                "29 Nov 2025, 23:14 UTC",
                "29 Nov 2025",
                "1,234,567",
                "999",
            ),
            (
                "fr",
                "29 nov. 2025 à 23:14 UTC",
                "29 nov. 2025",
                "1\u{202f}234\u{202f}567",
                "999",
            ),
            (
                "pt",
                "29 nov. 2025, 23:14 UTC",
                "29 nov. 2025",
                "1.234.567",
                "999",
            ),
            (
                "es",
                "29 nov 2025, 23:14 UTC",
                "29 nov 2025",
                "1.234.567",
                "999",
            ),
            (
                "ar",
                "29 نوفمبر 2025، 23:14 UTC",
                "29 نوفمبر 2025",
                "1,234,567",
                "999",
            ),
        ];
        for (code, datetime, date, big, small) in expected {
            assert_eq!(when(cat(code), ms), datetime, "{code}");
            assert_eq!(day(cat(code), ms), date, "{code}");
            assert_eq!(number(cat(code), 1_234_567), big, "{code}");
            assert_eq!(number(cat(code), 999), small, "{code}");
            assert_eq!(number(cat(code), 0), "0", "{code}");
            assert_eq!(when(cat(code), 0), "", "{code}");
        }
        assert_eq!(number(cat("en"), 1000), "1,000");
        assert_eq!(
            when(cat("en"), 86_400_000 + 61_000),
            "2 Jan 1970, 00:01 UTC"
        );
        for code in ["en", "fr", "pt", "es", "ar"] {
            for month in 1..=12 {
                assert!(
                    cat(code).lookup(&format!("format.month.{month}")).is_some(),
                    "{code} names month {month}"
                );
            }
        }
    }
}
