//! A worktree's index (`git ls-files --stage`), read from git's index file without starting git
//! when the file is in a format this module knows (versions 2 and 3, no extension git requires
//! readers to understand); otherwise, or when anything in it does not add up, `None`, and the
//! caller asks `git ls-files`. The file is git's, in the repository's git directory; an agent that
//! rewrote it gains nothing over what `git ls-files` would read from it.

use std::path::Path;

/// One index entry: `MODE OBJECT STAGE\tPATH` of `git ls-files --stage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub object: String,
    pub stage: u8,
    pub path: String,
}

impl Entry {
    /// A submodule's commit (a nested repository).
    pub fn is_gitlink(&self) -> bool {
        self.mode == 0o160000
    }

    pub fn is_symlink(&self) -> bool {
        self.mode == 0o120000
    }
}

/// What the index recorded of an entry's file when git last found it unchanged (`lstat(2)`'s
/// fields, cut to 32 bits as git stores them): a file whose `lstat` still gives these was not
/// written since (its change time is the kernel's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ctime: (u32, u32),
    pub mtime: (u32, u32),
    pub ino: u32,
    pub size: u32,
}

impl Stat {
    /// Whether `m` (an `lstat`) is what was recorded, to the nanosecond.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "git stores each field cut to 32 bits"
    )]
    pub fn matches(&self, m: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.ctime == (m.ctime() as u32, m.ctime_nsec() as u32)
            && self.mtime == (m.mtime() as u32, m.mtime_nsec() as u32)
            && self.ino == m.ino() as u32
            && self.size == m.size() as u32
    }
}

/// Bytes of an entry before its object name: ctime, mtime, dev, ino, mode, uid, gid, size.
const STAT: usize = 40;
/// Past this many entries the file is not read (git itself would take long on it anyway).
const MAX_ENTRIES: u32 = 10_000_000;

/// The entries of the index file at `file`, whose object names are `hash_len` bytes (20 for
/// SHA-1, 32 for SHA-256).
pub fn read(file: &Path, hash_len: usize) -> Option<Vec<Entry>> {
    parse(&std::fs::read(file).ok()?, hash_len)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn parse(b: &[u8], hash_len: usize) -> Option<Vec<Entry>> {
    parse_with_stats(b, hash_len).map(|v| v.into_iter().map(|(e, _)| e).collect())
}

/// The entries of the index file at `file`, each with the stat data git recorded for it.
pub fn read_with_stats(file: &Path, hash_len: usize) -> Option<Vec<(Entry, Stat)>> {
    parse_with_stats(&std::fs::read(file).ok()?, hash_len)
}

pub fn parse_with_stats(b: &[u8], hash_len: usize) -> Option<Vec<(Entry, Stat)>> {
    if b.get(0..4)? != b"DIRC" {
        return None;
    }
    let version = be32(b, 4)?;
    if !(2..=3).contains(&version) {
        return None;
    }
    let count = be32(b, 8)?;
    if count > MAX_ENTRIES {
        return None;
    }
    // The file ends with the hash of everything before it.
    let end = b.len().checked_sub(hash_len)?;
    let mut at = 12;
    let mut out = Vec::with_capacity(usize::try_from(count).ok()?.min(1 << 20));
    for _ in 0..count {
        let start = at;
        let mode = be32(b, at + 24)?;
        let object = hex::encode(b.get(at + STAT..at + STAT + hash_len)?);
        at += STAT + hash_len;
        let flags = be16(b, at)?;
        at += 2;
        if flags & 0x4000 != 0 {
            // Extended flags (version 3 only).
            if version < 3 {
                return None;
            }
            at += 2;
        }
        let len = usize::from(flags & 0x0fff);
        let name_end = if len < 0x0fff {
            at + len
        } else {
            at + b.get(at..end)?.iter().position(|c| *c == 0)?
        };
        let name = b.get(at..name_end)?;
        if *b.get(name_end)? != 0 || name.is_empty() || name.contains(&0) {
            return None;
        }
        // NUL padding to a multiple of eight bytes from the entry's start, at least one.
        let size = (name_end - start + 8) & !7;
        at = start + size;
        if at > end || b.get(name_end..at)?.iter().any(|c| *c != 0) {
            return None;
        }
        // Only files, links and gitlinks: a sparse index's directories are not read here.
        if !matches!(mode, 0o100644 | 0o100755 | 0o120000 | 0o160000) {
            return None;
        }
        let stat = Stat {
            ctime: (be32(b, start)?, be32(b, start + 4)?),
            mtime: (be32(b, start + 8)?, be32(b, start + 12)?),
            ino: be32(b, start + 20)?,
            size: be32(b, start + 36)?,
        };
        let entry = Entry {
            mode,
            object,
            stage: u8::try_from((flags >> 12) & 3).ok()?,
            path: String::from_utf8(name.to_vec()).ok()?,
        };
        out.push((entry, stat));
    }
    // Extensions: a signature and a size each. One whose signature does not start with an
    // uppercase letter changes what the entries mean (a split or sparse index): not read here.
    while at < end {
        let sig = b.get(at..at + 4)?;
        if !sig[0].is_ascii_uppercase() {
            return None;
        }
        let size = usize::try_from(be32(b, at + 4)?).ok()?;
        at = at.checked_add(8)?.checked_add(size)?;
    }
    (at == end).then_some(out)
}

/// `git ls-files --stage -z` output as entries.
pub fn from_ls_files(out: &str) -> Vec<Entry> {
    out.split('\0')
        .filter_map(|record| {
            let (meta, path) = record.split_once('\t')?;
            let mut m = meta.split(' ');
            let mode = u32::from_str_radix(m.next()?, 8).ok()?;
            let object = m.next()?.to_owned();
            let stage = m.next()?.parse().ok()?;
            Some(Entry {
                mode,
                object,
                stage,
                path: path.to_owned(),
            })
        })
        .collect()
}
