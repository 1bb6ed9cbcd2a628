//! Paths are bytes on Linux: joining, prefix tests and making them safe for a terminal,
//! without ever converting them lossily on the way.

use std::fmt::Write as _;

/// Whether `path` is `prefix` or lies below it, on a component boundary: `/a/b` covers `/a/b`
/// and `/a/b/c`, not `/a/bc`. A trailing `/` on the prefix is ignored.
pub fn is_under(path: &[u8], prefix: &[u8]) -> bool {
    let prefix = trim_trailing_slashes(prefix);
    if prefix.is_empty() {
        return path.starts_with(b"/");
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(b"/"),
        None => false,
    }
}

fn trim_trailing_slashes(p: &[u8]) -> &[u8] {
    let end = p.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &p[..end]
}

/// `base` joined with the relative `rel` (`base/rel`), no normalisation: `..` stays as the
/// kernel would walk it.
pub fn join(base: &[u8], rel: &[u8]) -> Vec<u8> {
    let mut out = trim_trailing_slashes(base).to_vec();
    out.push(b'/');
    out.extend_from_slice(rel);
    out
}

/// The path `within` a mount (from its root, `/` the root itself) as seen under its mount
/// point: `/mnt/x` and `/f` give `/mnt/x/f`, `/mnt/x` and `/` give `/mnt/x`.
pub fn under_mount_point(mount_point: &[u8], within: &[u8]) -> Vec<u8> {
    let rel = &within[within.iter().take_while(|&&b| b == b'/').count()..];
    if rel.is_empty() {
        return mount_point.to_vec();
    }
    join(mount_point, rel)
}

/// Bytes made printable for a terminal: valid UTF-8 stays as it is except control characters
/// (escaped `\n`, `\t`, `\x1b`...), and bytes that are not UTF-8 become `\xNN`. A terminal
/// never receives a raw control byte from a path or comm.
pub fn escape_for_terminal(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// `bytes` up to its first NUL (all of it without one).
pub fn nul_terminated(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_on_component_boundaries() {
        assert!(is_under(b"/a/b", b"/a/b"));
        assert!(is_under(b"/a/b/c", b"/a/b"));
        assert!(is_under(b"/a/b/c", b"/a/b/"));
        assert!(!is_under(b"/a/bc", b"/a/b"));
        assert!(!is_under(b"/a", b"/a/b"));
        assert!(is_under(b"/anything", b"/"));
        assert!(!is_under(b"relative", b"/"));
    }

    #[test]
    fn joins_relative_paths() {
        assert_eq!(join(b"/tmp/x", b"mnt"), b"/tmp/x/mnt");
        assert_eq!(join(b"/", b"mnt"), b"/mnt");
        assert_eq!(join(b"/tmp/", b"../m"), b"/tmp/../m");
    }

    #[test]
    fn paths_within_a_mount_go_under_its_mount_point() {
        assert_eq!(under_mount_point(b"/mnt/x", b"/f"), b"/mnt/x/f");
        assert_eq!(under_mount_point(b"/mnt/x/", b"/d/f"), b"/mnt/x/d/f");
        assert_eq!(under_mount_point(b"/mnt/x", b"/"), b"/mnt/x");
        assert_eq!(under_mount_point(b"/", b"/f"), b"/f");
        assert_eq!(
            under_mount_point(b"/mnt/x", b"/f (deleted)"),
            b"/mnt/x/f (deleted)"
        );
    }

    #[test]
    fn escapes_control_and_invalid_bytes() {
        assert_eq!(escape_for_terminal(b"/mnt/plain"), "/mnt/plain");
        assert_eq!(escape_for_terminal("/mnt/ünï".as_bytes()), "/mnt/ünï");
        assert_eq!(
            escape_for_terminal(b"/mnt/\x1b[31mred\n"),
            "/mnt/\\u{1b}[31mred\\n"
        );
        assert_eq!(escape_for_terminal(b"/mnt/\xff\xfe"), "/mnt/\\xff\\xfe");
        assert_eq!(escape_for_terminal(b"a\\b"), "a\\\\b");
        assert_eq!(escape_for_terminal("\u{9b}".as_bytes()), "\\u{9b}");
    }
}
