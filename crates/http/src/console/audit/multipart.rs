//! A `multipart/form-data` body (RFC 7578), as a browser sends a form with files: its parts,
//! each with its field name and bytes. Small on purpose: the console reads whole bodies it
//! has already bounded, so no streaming parser is needed.

use axum::http::{HeaderMap, header};

/// One part of a form: its field name, the file name if it is a file, its bytes.
#[derive(Debug)]
pub struct Part {
    /// The field's name.
    pub name: String,
    /// The file's name, for a file field.
    pub file_name: Option<String>,
    /// The value or the file's content.
    pub data: Vec<u8>,
}

/// A parsed form: its parts in order.
#[derive(Debug, Default)]
pub struct Parts(pub Vec<Part>);

impl Parts {
    /// The first part named `name`.
    pub fn first(&self, name: &str) -> Option<&Part> {
        self.0.iter().find(|p| p.name == name)
    }

    /// The first part named `name` as text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.first(name)
            .and_then(|p| std::str::from_utf8(&p.data).ok())
    }

    /// Every non-empty file of the field `name`, in order.
    pub fn files<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Part> + 'a {
        self.0
            .iter()
            .filter(move |p| p.name == name && p.file_name.is_some() && !p.data.is_empty())
    }
}

/// The boundary of a `multipart/form-data` request, from its `Content-Type`.
pub fn boundary(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mut params = value.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

/// The parts of `body`, delimited by `boundary`; `None` if it is not a well-formed form.
pub fn parse(body: &[u8], boundary: &str) -> Option<Parts> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut at = find(body, delimiter, 0)? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        let rest = body.get(at..)?;
        if rest.starts_with(b"--") {
            return Some(Parts(parts));
        }
        at += if rest.starts_with(b"\r\n") {
            2
        } else {
            return None;
        };
        let head_end = find(body, b"\r\n\r\n", at)?;
        let head = std::str::from_utf8(&body[at..head_end]).ok()?;
        let data_start = head_end + 4;
        let mut close = Vec::with_capacity(delimiter.len() + 2);
        close.extend_from_slice(b"\r\n");
        close.extend_from_slice(delimiter);
        let data_end = find(body, &close, data_start)?;
        let (name, file_name) = disposition(head)?;
        parts.push(Part {
            name,
            file_name,
            data: body[data_start..data_end].to_vec(),
        });
        at = data_end + close.len();
    }
}

/// The field name and file name of a part's headers.
fn disposition(head: &str) -> Option<(String, Option<String>)> {
    let line = head.split("\r\n").find(|l| {
        l.split_once(':')
            .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("content-disposition"))
    })?;
    let (_, value) = line.split_once(':')?;
    let mut name = None;
    let mut file_name = None;
    for param in value.split(';').skip(1) {
        let Some((k, v)) = param.trim().split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "name" => name = Some(v),
            "filename" => file_name = Some(v),
            _ => {}
        }
    }
    Some((name?, file_name))
}

/// Where `needle` first occurs in `haystack` from `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let offset = haystack[at..].iter().position(|b| *b == first)?;
        at += offset;
        if haystack.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_form_with_a_file_parses() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"export\"; filename=\"a.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\nline1\r\nline2\n\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"key\"; filename=\"\"\r\n\r\n\r\n--XyZ--\r\n";
        let parts = parse(body, "XyZ").expect("parses");
        assert_eq!(parts.text("csrf"), Some("tok"));
        let export = parts.first("export").expect("file");
        assert_eq!(export.file_name.as_deref(), Some("a.jsonl"));
        assert_eq!(export.data, b"line1\r\nline2\n");
        assert_eq!(
            parts.files("key").count(),
            0,
            "an empty file field is no file"
        );
    }

    #[test]
    fn a_broken_form_is_none_and_the_boundary_comes_from_the_header() {
        assert!(
            parse(
                b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
                "XyZ"
            )
            .is_none()
        );
        assert!(parse(b"nothing", "XyZ").is_none());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=\"----abc\""
                .parse()
                .expect("header"),
        );
        assert_eq!(boundary(&headers).as_deref(), Some("----abc"));
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().expect("header"),
        );
        assert_eq!(boundary(&headers), None);
    }
}
