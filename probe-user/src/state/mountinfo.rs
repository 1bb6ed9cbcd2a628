//! `/proc/PID/mountinfo`, parsed as bytes: mount points and roots are paths and need not be
//! UTF-8; the kernel escapes space, tab, newline and backslash as `\ooo` octal.

use std::{io, path::Path};

/// How a mount takes part in propagation (the optional fields of a mountinfo line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Propagation {
    /// `shared:N`: the peer group it belongs to.
    pub shared: Option<u32>,
    /// `master:N`: the peer group it receives propagation from (a slave).
    pub master: Option<u32>,
    /// `propagate_from:N`: the nearest dominant peer group visible in this namespace.
    pub propagate_from: Option<u32>,
    /// `unbindable`.
    pub unbindable: bool,
}

impl Propagation {
    /// The mountinfo-style summary: `shared:5 master:3`, or `private`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.shared {
            parts.push(format!("shared:{n}"));
        }
        if let Some(n) = self.master {
            parts.push(format!("master:{n}"));
        }
        if let Some(n) = self.propagate_from {
            parts.push(format!("propagate_from:{n}"));
        }
        if self.unbindable {
            parts.push("unbindable".into());
        }
        if parts.is_empty() {
            "private".into()
        } else {
            parts.join(" ")
        }
    }
}

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount id (the same number `statx` reports as `STATX_MNT_ID`).
    pub id: u64,
    /// Parent mount id.
    pub parent: u64,
    /// Device of the superblock (`st_dev`): major.
    pub major: u32,
    /// Device of the superblock: minor.
    pub minor: u32,
    /// The directory of the filesystem that is the root of this mount (bind mounts).
    pub root: Vec<u8>,
    /// Where it is mounted, relative to the reading process's root.
    pub mount_point: Vec<u8>,
    /// Per-mount options (`rw,nosuid,...`).
    pub options: String,
    /// Propagation.
    pub propagation: Propagation,
    /// Filesystem type (`ext4`, `overlay`, ...).
    pub fstype: String,
    /// Mount source (`/dev/sda1`, `overlay`, ...).
    pub source: Vec<u8>,
}

impl MountEntry {
    /// Whether `other` shows the same filesystem from the same root (device and root
    /// directory; the mounts' ids may differ): a copy, or this very mount.
    pub fn shows_same_tree(&self, other: &MountEntry) -> bool {
        (self.major, self.minor, &self.root) == (other.major, other.minor, &other.root)
    }
}

/// A malformed mountinfo line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed mountinfo line {line}: {why}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub why: &'static str,
}

/// Reads and parses a mountinfo file.
pub fn read(path: &Path) -> io::Result<Vec<MountEntry>> {
    let text = std::fs::read(path)?;
    parse(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Parses a whole mountinfo text.
pub fn parse(text: &[u8]) -> Result<Vec<MountEntry>, ParseError> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| parse_line(line).map_err(|why| ParseError { line: i + 1, why }))
        .collect()
}

/// Parses one line:
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
pub fn parse_line(line: &[u8]) -> Result<MountEntry, &'static str> {
    let mut fields = line.split(|&b| b == b' ');
    let mut next = |what: &'static str| fields.next().ok_or(what);
    let id = number(next("no mount id")?).ok_or("bad mount id")?;
    let parent = number(next("no parent id")?).ok_or("bad parent id")?;
    let (major, minor) = device(next("no device")?).ok_or("bad major:minor")?;
    let root = unescape(next("no root")?);
    let mount_point = unescape(next("no mount point")?);
    let options = String::from_utf8_lossy(next("no mount options")?).into_owned();
    let mut propagation = Propagation::default();
    loop {
        let field = next("no `-` separator")?;
        if field == b"-" {
            break;
        }
        apply_optional_field(&mut propagation, field);
    }
    let fstype = String::from_utf8_lossy(next("no filesystem type")?).into_owned();
    let source = unescape(next("no mount source")?);
    Ok(MountEntry {
        id,
        parent,
        major,
        minor,
        root,
        mount_point,
        options,
        propagation,
        fstype,
        source,
    })
}

fn apply_optional_field(p: &mut Propagation, field: &[u8]) {
    let (tag, value) = match field.iter().position(|&b| b == b':') {
        Some(i) => (
            &field[..i],
            number(&field[i + 1..]).and_then(|n| u32::try_from(n).ok()),
        ),
        None => (field, None),
    };
    match tag {
        b"shared" => p.shared = value,
        b"master" => p.master = value,
        b"propagate_from" => p.propagate_from = value,
        b"unbindable" => p.unbindable = true,
        _ => {} // fields added by newer kernels are ignored, as the format asks
    }
}

fn number(field: &[u8]) -> Option<u64> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn device(field: &[u8]) -> Option<(u32, u32)> {
    let text = std::str::from_utf8(field).ok()?;
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Undoes the kernel's `\ooo` escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`).
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_man_page_example() {
        let e = parse_line(
            b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!((e.id, e.parent, e.major, e.minor), (36, 35, 98, 0));
        assert_eq!(e.root, b"/mnt1");
        assert_eq!(e.mount_point, b"/mnt2");
        assert_eq!(e.options, "rw,noatime");
        assert_eq!(
            e.propagation,
            Propagation {
                master: Some(1),
                ..Default::default()
            }
        );
        assert_eq!(e.fstype, "ext3");
        assert_eq!(e.source, b"/dev/root");
    }

    #[test]
    fn parses_every_propagation_field_and_ignores_unknown_ones() {
        let e = parse_line(
            b"1 2 0:5 / /x rw shared:7 master:3 propagate_from:2 unbindable future:9 - tmpfs t rw",
        )
        .unwrap();
        assert_eq!(
            e.propagation,
            Propagation {
                shared: Some(7),
                master: Some(3),
                propagate_from: Some(2),
                unbindable: true
            }
        );
        assert_eq!(
            e.propagation.describe(),
            "shared:7 master:3 propagate_from:2 unbindable"
        );
        let private = parse_line(b"1 2 0:5 / /x rw - tmpfs t rw").unwrap();
        assert_eq!(private.propagation.describe(), "private");
    }

    #[test]
    fn unescapes_octal_and_keeps_non_utf8_bytes() {
        let e =
            parse_line(b"40 1 0:50 / /tmp/a\\040b\\011c\\012d\\134e\xff rw - tmpfs my\\040src rw")
                .unwrap();
        assert_eq!(e.mount_point, b"/tmp/a b\tc\nd\\e\xff");
        assert_eq!(e.source, b"my src");
        assert_eq!(unescape(b"\\04"), b"\\04");
        assert_eq!(unescape(b"a\\9zz"), b"a\\9zz");
    }

    #[test]
    fn reports_malformed_lines_with_their_number() {
        let err = parse(b"36 35 98:0 / / rw - ext4 /dev/x rw\n37 x 98:0 / / rw - ext4 a b\n")
            .unwrap_err();
        assert_eq!(
            err,
            ParseError {
                line: 2,
                why: "bad parent id"
            }
        );
        assert_eq!(
            parse_line(b"36 35 98:0 / / rw shared:1").unwrap_err(),
            "no `-` separator"
        );
        assert_eq!(parse_line(b"36").unwrap_err(), "no parent id");
    }

    #[test]
    fn reads_this_processs_mountinfo() {
        let entries = read(Path::new("/proc/self/mountinfo")).unwrap();
        assert!(entries.iter().any(|e| e.mount_point == b"/"), "{entries:?}");
    }
}
