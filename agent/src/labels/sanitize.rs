//! Small pure helpers that turn operator input into values a registry accepts. What every
//! registry accepts is `berth_registry::limits`; this only applies it.

use std::net::IpAddr;

use berth_registry::limits::MAX_META_KEY_LEN;

/// The longest prefix of `s` that fits in `max` bytes and ends on a char boundary.
pub(super) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A name used inside a label key (`berth.service.<svc>`, `berth.check.<name>`): letters,
/// digits, `-` and `_`, not empty.
pub(super) fn key_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The image's base name: no registry, path, tag or digest.
///
/// `registry:5000/org/nginx:1.2@sha256:abc` → `nginx`, `redis` → `redis`.
pub(super) fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or_default();
    let base = without_digest.rsplit('/').next().unwrap_or_default();
    base.split(':').next().unwrap_or_default()
}

/// A service name usable in DNS: lowercase, `[a-z0-9-]` only, no leading or trailing `-`.
///
/// May return an empty string; callers skip the service then.
pub(super) fn service_name(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_owned()
}

/// A meta key as Consul accepts it: lowercase, `[a-z0-9_-]` only, at most 128 chars.
///
/// Returns the key and whether it had to be truncated.
pub(super) fn meta_key(s: &str) -> (String, bool) {
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Only ASCII remains, so byte truncation is char truncation.
    let truncated = mapped.len() > MAX_META_KEY_LEN;
    (truncate(&mapped, MAX_META_KEY_LEN).to_owned(), truncated)
}

/// True for an instance id berth can pass to a registry: registries put ids in URL paths.
pub(super) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '%'))
}

/// An address override: an IP literal clients can dial, or a DNS host name.
///
/// Returns the normalised address, or why it is unusable.
pub(super) fn address(s: &str) -> Result<String, &'static str> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        if ip.is_unspecified() {
            return Err("an unspecified address cannot be dialled");
        }
        return Ok(ip.to_string());
    }
    if is_dns_name(s) {
        return Ok(s.to_ascii_lowercase());
    }
    Err("not an IP address or DNS host name")
}

/// RFC 1123 host name; the last label may not be all digits (that would be a bad IP).
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let labels_ok = s.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    let last_numeric = s
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !last_numeric
}

/// Splits a comma list where `\,` is a literal comma; items are trimmed, empties and repeats
/// dropped, order kept.
pub(super) fn split_list(s: &str) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    let mut push = |item: &str| {
        let item = item.trim();
        if !item.is_empty() && !items.iter().any(|i| i == item) {
            items.push(item.to_owned());
        }
    };
    let mut current = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            ',' => {
                push(&current);
                current.clear();
            }
            _ => current.push(c),
        }
    }
    push(&current);
    items
}

/// Parses a boolean label value: `1/true/yes/on` and `0/false/no/off/""`, any case.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// A value quoted for a one-line note: escaped, and shortened past 64 chars.
pub(super) fn quote(s: &str) -> String {
    const SHOWN: usize = 64;
    match s.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("\"{}…\"", s[..end].escape_debug()),
        None => format!("\"{}\"", s.escape_debug()),
    }
}
