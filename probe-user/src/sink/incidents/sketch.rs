//! What grouping into incidents reads of an attempt: its id, time, result, target, whether it
//! names a mount, and its holders' identities (kind, process, exact path). Read straight from
//! a recorded line's text, borrowing it, this is a fraction of the work of the whole line
//! ([`UmountLine`]): `replay` of a long recording reads every line this way, and the whole
//! line only of the attempts whose content an incident keeps (the first failure, a holder or
//! a mount not known yet: [`AttemptSketch::whole`]).

use std::borrow::Cow;

use serde::{de::IgnoredAny, Deserialize};
use smallvec::SmallVec;

use super::ts_ns;
use crate::sink::json::wire::{exact_bytes, HolderWire, UmountLine};

/// One attempt, as grouping sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptSketch<'a> {
    /// Its id in its run.
    pub id: u64,
    /// Its `ts` (RFC 3339).
    pub ts: Cow<'a, str>,
    /// `ts` in ns since the epoch (0 when it cannot be read).
    pub ts_ns: u64,
    /// The errno's name; none on success.
    pub errno: Option<Cow<'a, str>>,
    /// The target's exact bytes.
    pub target: Cow<'a, [u8]>,
    /// Whether the line names the mount the target resolved to.
    pub has_mount: bool,
    /// The holders named, in the line's order.
    pub holders: Vec<HolderSketch<'a>>,
    /// The whole line, when it has been read: always for a line parsed whole
    /// ([`AttemptSketch::of`]); for one read as a sketch, set by the reader when grouping
    /// needs it (`needs_whole` of the incidents), else what it would add is left out.
    pub whole: Option<&'a UmountLine>,
}

/// An attempt's holders as read and sent between threads: most name one or two, kept without
/// an allocation (not in [`AttemptSketch`]: a `SmallVec` would fix its lifetime, which must
/// shrink to a whole line read after it).
type Holders<T> = SmallVec<[T; 2]>;

/// A holder, as grouping tells holders apart: kind, process and exact path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolderSketch<'a> {
    /// `fd`, `cwd`...
    pub kind: Cow<'a, str>,
    /// Its process, when it is one.
    pub pid: Option<u32>,
    /// The exact path, when known.
    pub path: Option<Cow<'a, [u8]>>,
}

impl<'a> AttemptSketch<'a> {
    /// The sketch of a line parsed whole.
    pub fn of(line: &'a UmountLine) -> Self {
        Self {
            id: line.id,
            ts: Cow::Borrowed(&line.ts),
            ts_ns: ts_ns(&line.ts),
            errno: line.errno.as_deref().map(Cow::Borrowed),
            target: line.target_bytes(),
            has_mount: line.mount.is_some(),
            holders: line.holders().iter().map(HolderSketch::of).collect(),
            whole: Some(line),
        }
    }

    /// The sketch of a line's text (without its newline), when it is an `umount` line of
    /// schema `schema` whose grouped fields read well; `None` for anything else (another
    /// type or version, or a line the whole parse must say what is wrong with). The fields
    /// it does not read are checked only as JSON.
    pub fn from_text(text: &'a str, schema: u64) -> Option<Self> {
        let wire: SketchWire<'a> = serde_json::from_str(text).ok()?;
        if wire.v != schema || wire.kind != "umount" {
            return None;
        }
        Some(Self {
            id: wire.id,
            ts_ns: ts_ns(&wire.ts),
            ts: wire.ts,
            errno: wire.errno.map(|Text(errno)| errno),
            target: exact(wire.target, wire.target_b64),
            has_mount: wire.mount.is_some(),
            holders: wire
                .holders
                .unwrap_or_default()
                .into_iter()
                .map(HolderSketchWire::sketch)
                .collect(),
            whole: None,
        })
    }

    /// Whether the call failed.
    pub fn failed(&self) -> bool {
        self.errno.is_some()
    }

    /// The errno's name, or `ok`.
    pub fn result(&self) -> &str {
        self.errno.as_deref().unwrap_or("ok")
    }
}

impl<'a> HolderSketch<'a> {
    /// The sketch of a holder read whole.
    pub fn of(h: &'a HolderWire) -> Self {
        Self {
            kind: Cow::Borrowed(&h.kind),
            pid: h.pid,
            path: h.path_bytes(),
        }
    }

    /// Whether `h` is this holder.
    pub fn is(&self, h: &HolderWire) -> bool {
        self.kind == h.kind && self.pid == h.pid && self.path == h.path_bytes()
    }
}

/// A text field's exact bytes, with its `_b64` sibling as the wire reads them
/// ([`exact_bytes`]); borrowed when the text is and has no sibling.
fn exact<'a>(text: Cow<'a, str>, b64: Option<Text<'_>>) -> Cow<'a, [u8]> {
    match (text, b64) {
        (text, Some(Text(b64))) => Cow::Owned(exact_bytes(&text, Some(&b64)).into_owned()),
        (Cow::Borrowed(s), None) => Cow::Borrowed(s.as_bytes()),
        (Cow::Owned(s), None) => Cow::Owned(s.into_bytes()),
    }
}

/// A string field, borrowed from the line unless it has escapes (serde borrows a `Cow` only
/// when it is a field's own type, not inside an `Option`).
#[derive(Deserialize)]
#[serde(transparent)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The fields of an `umount` line a sketch reads; serde skips the others (as JSON only).
#[derive(Deserialize)]
struct SketchWire<'a> {
    v: u64,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    id: u64,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    errno: Option<Text<'a>>,
    #[serde(borrow)]
    target: Cow<'a, str>,
    #[serde(default, borrow)]
    target_b64: Option<Text<'a>>,
    #[serde(default)]
    mount: Option<IgnoredAny>,
    #[serde(default, borrow)]
    holders: Option<Holders<HolderSketchWire<'a>>>,
}

/// The fields of a holder a sketch reads.
#[derive(Deserialize)]
struct HolderSketchWire<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    pid: Option<u32>,
    #[serde(default, borrow)]
    path: Option<Text<'a>>,
    #[serde(default, borrow)]
    path_b64: Option<Text<'a>>,
}

impl<'a> HolderSketchWire<'a> {
    fn sketch(self) -> HolderSketch<'a> {
        HolderSketch {
            kind: self.kind,
            pid: self.pid,
            path: self.path.map(|Text(path)| exact(path, self.path_b64)),
        }
    }
}

/// A sketch without its borrow, to cross threads with the text it was read from: each
/// borrowed field as where it is in that text (a field read with escapes, or from base64,
/// is owned).
#[derive(Debug)]
pub struct DetachedSketch {
    id: u64,
    ts: Piece,
    ts_ns: u64,
    errno: Option<Piece>,
    target: Piece,
    has_mount: bool,
    holders: Holders<(Piece, Option<u32>, Option<Piece>)>,
}

/// A field's bytes: where they are in the text, or their own.
#[derive(Debug)]
enum Piece {
    At(usize, usize),
    Owned(Vec<u8>),
}

impl Piece {
    /// `bytes`, read from `text`: where they are in it when they are borrowed from it, else
    /// a copy.
    fn of(bytes: &[u8], text: &[u8]) -> Self {
        let offset = (bytes.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
        match offset <= text.len() && text.len() - offset >= bytes.len() {
            true => Piece::At(offset, bytes.len()),
            false => Piece::Owned(bytes.to_vec()),
        }
    }

    fn bytes<'a>(&'a self, text: &'a [u8]) -> Cow<'a, [u8]> {
        match self {
            Piece::At(at, len) => Cow::Borrowed(&text[*at..*at + *len]),
            Piece::Owned(bytes) => Cow::Borrowed(bytes),
        }
    }

    /// The piece as text (it was read as text: lossy only if `text` is not the one it was
    /// read from).
    fn str<'a>(&'a self, text: &'a [u8]) -> Cow<'a, str> {
        let bytes = match self {
            Piece::At(at, len) => &text[*at..*at + *len],
            Piece::Owned(bytes) => bytes,
        };
        std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes), Cow::Borrowed)
    }
}

impl AttemptSketch<'_> {
    /// The sketch detached from `text`, the line it was read from ([`DetachedSketch::attach`]
    /// to the same text gives it back, without its whole line).
    pub fn detach(&self, text: &[u8]) -> DetachedSketch {
        DetachedSketch {
            id: self.id,
            ts: Piece::of(self.ts.as_bytes(), text),
            ts_ns: self.ts_ns,
            errno: self.errno.as_ref().map(|e| Piece::of(e.as_bytes(), text)),
            target: Piece::of(&self.target, text),
            has_mount: self.has_mount,
            holders: self
                .holders
                .iter()
                .map(|h| {
                    let path = h.path.as_ref().map(|p| Piece::of(p, text));
                    (Piece::of(h.kind.as_bytes(), text), h.pid, path)
                })
                .collect(),
        }
    }
}

impl DetachedSketch {
    /// The sketch again, borrowing `text`: the text it was detached from.
    pub fn attach<'a>(&'a self, text: &'a [u8]) -> AttemptSketch<'a> {
        AttemptSketch {
            id: self.id,
            ts: self.ts.str(text),
            ts_ns: self.ts_ns,
            errno: self.errno.as_ref().map(|e| e.str(text)),
            target: self.target.bytes(text),
            has_mount: self.has_mount,
            holders: self
                .holders
                .iter()
                .map(|(kind, pid, path)| HolderSketch {
                    kind: kind.str(text),
                    pid: *pid,
                    path: path.as_ref().map(|p| p.bytes(text)),
                })
                .collect(),
            whole: None,
        }
    }
}
