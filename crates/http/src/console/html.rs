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

/// A time in milliseconds since the Unix epoch, in the catalogue's language.
pub fn when(_cat: &Catalogue, ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    time::OffsetDateTime::from_unix_timestamp(ms / 1000).map_or_else(
        |_| String::new(),
        |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        },
    )
}

/// A count, in the catalogue's language.
pub fn number(_cat: &Catalogue, n: u64) -> String {
    n.to_string()
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
        let en = catalogue::english();
        assert_eq!(when(en, 0), "");
        assert_eq!(when(en, 86_400_000 + 61_000), "1970-01-02 00:01 UTC");
    }
}
