//! The guest's initramfs: a tree of directories, files and symlinks, written as an
//! uncompressed `newc` cpio archive (the format the kernel unpacks into its rootfs; see the
//! kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`).

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// Where an entry's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Bytes held in memory (scripts, decompressed modules, small config files).
    Bytes(Vec<u8>),
    /// A file on the host, read only while the archive is written.
    HostFile(PathBuf),
}

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory with these permission bits.
    Dir(u32),
    /// A regular file with these permission bits.
    File(u32, Content),
    /// A symbolic link to this target.
    Symlink(String),
}

/// A file tree for the guest, keyed by absolute guest path. Adding an entry adds its missing
/// parent directories; adding a path twice keeps the last one.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (mode 0755) and its parents.
    pub fn dir(&mut self, path: &str) {
        let key = normalize(path);
        if key.is_empty() {
            return;
        }
        self.parents(&key);
        self.entries.entry(key).or_insert(Entry::Dir(0o755));
    }

    /// Adds a regular file with the given bytes.
    pub fn bytes(&mut self, path: &str, mode: u32, data: impl Into<Vec<u8>>) {
        self.insert(path, Entry::File(mode, Content::Bytes(data.into())));
    }

    /// Adds a host file under the guest path `path`, keeping its permission bits.
    pub fn host_file(&mut self, path: &str, host: &Path) -> Result<()> {
        let meta = fs::metadata(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        self.insert(
            path,
            Entry::File(mode, Content::HostFile(host.to_path_buf())),
        );
        Ok(())
    }

    /// Adds a symbolic link `path` -> `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Entry::Symlink(target.to_owned()));
    }

    /// Whether the tree has an entry at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&normalize(path))
    }

    fn insert(&mut self, path: &str, entry: Entry) {
        let key = normalize(path);
        self.parents(&key);
        self.entries.insert(key, entry);
    }

    fn parents(&mut self, key: &str) {
        let mut end = 0;
        while let Some(slash) = key[end..].find('/') {
            end += slash;
            self.entries
                .entry(key[..end].to_owned())
                .or_insert(Entry::Dir(0o755));
            end += 1;
        }
    }

    /// Writes the tree as a newc archive (parents before children: the map is sorted and a
    /// prefix sorts first). Returns the number of bytes written.
    pub fn write_newc(&self, out: impl Write) -> Result<u64> {
        let mut w = NewcWriter::new(out);
        for (name, entry) in &self.entries {
            match entry {
                Entry::Dir(mode) => w.entry(name, S_IFDIR | mode, &[])?,
                Entry::Symlink(target) => w.entry(name, S_IFLNK | 0o777, target.as_bytes())?,
                Entry::File(mode, Content::Bytes(data)) => w.entry(name, S_IFREG | mode, data)?,
                Entry::File(mode, Content::HostFile(host)) => {
                    let data =
                        fs::read(host).with_context(|| format!("reading {}", host.display()))?;
                    w.entry(name, S_IFREG | mode, &data)?
                }
            }
        }
        Ok(w.finish()?)
    }
}

/// A guest path as an archive name: no leading or trailing slash.
fn normalize(path: &str) -> String {
    path.trim_matches('/').to_owned()
}

/// Writes newc cpio entries: a 110-byte ASCII header (`070701` and 13 eight-digit hex fields),
/// the NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes.
pub struct NewcWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> NewcWriter<W> {
    /// A writer appending to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// Writes one entry (owner root, mtime 0, one link).
    pub fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(ino, name, mode, data)
    }

    fn raw_entry(&mut self, ino: u32, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::other(format!("{name}: larger than 4 GiB")))?;
        let namesize = name.len() as u32 + 1;
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    /// Writes the `TRAILER!!!` entry and flushes; returns the archive's size.
    pub fn finish(mut self) -> io::Result<u64> {
        self.raw_entry(0, "TRAILER!!!", 0, &[])?;
        self.out.flush()?;
        Ok(self.written)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a newc archive back: (name, mode, data) per entry, up to the trailer.
    fn parse(mut bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(&bytes[..6], b"070701", "magic at offset {offset}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap() as usize
            };
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let name = std::str::from_utf8(&bytes[110..110 + namesize - 1]).unwrap();
            assert_eq!(bytes[110 + namesize - 1], 0, "name is NUL-terminated");
            let data_at = (110 + namesize).next_multiple_of(4);
            let data = bytes[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            assert_eq!((offset + data_at) % 4, 0, "data of {name} is 4-aligned");
            if name == "TRAILER!!!" {
                assert_eq!(next, bytes.len(), "nothing after the trailer");
                return entries;
            }
            entries.push((name.to_owned(), mode as u32, data));
            bytes = &bytes[next..];
            offset += next;
        }
    }

    #[test]
    fn one_file_is_byte_exact() {
        let mut out = Vec::new();
        let mut w = NewcWriter::new(&mut out);
        w.entry("init", S_IFREG | 0o755, b"#!/bin/sh\n").unwrap();
        let size = w.finish().unwrap();
        let expected_header = concat!(
            "070701", "00000001", "000081ed", "00000000", "00000000", "00000001", "00000000",
            "0000000a", "00000000", "00000000", "00000000", "00000000", "00000005", "00000000"
        );
        assert_eq!(&out[..110], expected_header.as_bytes());
        // 110 + "init\0" = 115 -> padded to 116; 10 bytes of data -> 126 -> padded to 128.
        assert_eq!(&out[110..116], b"init\0\0");
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        assert_eq!(&out[126..128], b"\0\0");
        assert_eq!(&out[128..134], b"070701");
        assert_eq!(size as usize, out.len());
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn tree_writes_parents_first_and_reads_back() {
        let mut tree = Tree::new();
        tree.bytes("/usr/sbin/mkfs.ext4", 0o755, b"elf".to_vec());
        tree.symlink("/bin/sh", "busybox");
        tree.bytes("/init", 0o700, b"x".to_vec());
        tree.dir("/tmp/");
        tree.bytes("/bin/sh", 0o755, b"replaced".to_vec());
        let mut out = Vec::new();
        tree.write_newc(&mut out).unwrap();
        let entries = parse(&out);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "init",
                "tmp",
                "usr",
                "usr/sbin",
                "usr/sbin/mkfs.ext4"
            ]
        );
        assert_eq!(entries[0].1, S_IFDIR | 0o755);
        assert_eq!(
            entries[1],
            ("bin/sh".into(), S_IFREG | 0o755, b"replaced".to_vec())
        );
        assert_eq!(entries[2].1, S_IFREG | 0o700);
    }

    #[test]
    fn symlink_data_is_its_target() {
        let mut tree = Tree::new();
        tree.symlink("lib64/ld.so", "/lib/x86_64-linux-gnu/ld.so");
        let mut out = Vec::new();
        tree.write_newc(&mut out).unwrap();
        let entries = parse(&out);
        assert_eq!(entries[1].1, S_IFLNK | 0o777);
        assert_eq!(entries[1].2, b"/lib/x86_64-linux-gnu/ld.so");
    }

    #[test]
    fn host_files_keep_their_mode() {
        let dir = std::env::temp_dir().join(format!("xtask-newc-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tool");
        fs::write(&file, b"data").unwrap();
        fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
        let mut tree = Tree::new();
        tree.host_file("/usr/bin/tool", &file).unwrap();
        let mut out = Vec::new();
        tree.write_newc(&mut out).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let entries = parse(&out);
        assert_eq!(
            entries[2],
            ("usr/bin/tool".into(), S_IFREG | 0o750, b"data".to_vec())
        );
    }
}
