//! Reading a file of a worktree (or of an attempt's scratch directory) on an agent's behalf,
//! with no more rights than the agent's sandbox: whatever abo reads there ends up in a prompt,
//! an artifact, an event or a model's request, so an agent must not be able to point abo at a
//! file it could not read itself.
//!
//! [`read`] opens each component of the path with `openat(O_NOFOLLOW)` from the directory abo
//! chose, so no symbolic link is followed (in any component, whether it points inside or out:
//! this also rules out `/proc/self/environ`, `/sys` and `/dev`), and nothing is resolved twice
//! (no race between a check and the open). It refuses `..` and absolute paths, `.git` and `.abo`
//! components, paths under a `deny_read` entry inside the directory, anything but a regular file
//! (a FIFO would block, a device would read forever), files with more than one link (a hard link
//! to a file the sandbox denies), and files over a size.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat};

/// Why a file was not read. Only [`Refused::Io`] is unexpected; the others are the agent's doing
/// (or the file is simply not there).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{path}: not a plain relative path inside the directory")]
    Outside { path: String },
    #[error("{path}: a symbolic link (abo follows none in a worktree)")]
    Symlink { path: String },
    #[error("{path}: denied ({why})")]
    Denied { path: String, why: String },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error("{path}: larger than {max} bytes")]
    TooLarge { path: String, max: u64 },
    #[error("{path}: does not exist")]
    Missing { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What may not be read under a directory: `deny_read` paths (only those inside it matter: the
/// rest cannot be reached without following a link).
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub deny_read: Vec<PathBuf>,
}

impl Rules {
    pub fn new(deny_read: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            deny_read: deny_read.into_iter().collect(),
        }
    }
}

/// The content of `dir/rel`, read as described in the module's documentation.
pub fn read(dir: &Path, rel: &str, rules: &Rules, max: u64) -> Result<Vec<u8>, Refused> {
    let path = || rel.to_owned();
    let mut names = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(n) => names.push(n),
            Component::CurDir => {}
            _ => return Err(Refused::Outside { path: path() }),
        }
    }
    let Some((last, dirs)) = names.split_last() else {
        return Err(Refused::Outside { path: path() });
    };
    if names.iter().any(|n| *n == ".git") || names.first().is_some_and(|n| *n == ".abo") {
        return Err(Refused::Denied {
            path: path(),
            why: "git's and abo's own files".into(),
        });
    }
    let full = dir.join(rel);
    let canonical_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    for d in &rules.deny_read {
        let inside = |base: &Path, p: &Path| p.starts_with(d) && !base.starts_with(d);
        if inside(dir, &full) || inside(&canonical_dir, &canonical_dir.join(rel)) {
            return Err(Refused::Denied {
                path: path(),
                why: format!("sandbox.deny_read {}", d.display()),
            });
        }
    }
    let io = |e: nix::Error| {
        let source = std::io::Error::from(e);
        match e {
            nix::Error::ELOOP => Refused::Symlink { path: path() },
            nix::Error::ENOENT => Refused::Missing { path: path() },
            // A component that is a link to a directory, opened with O_DIRECTORY|O_NOFOLLOW.
            nix::Error::ENOTDIR => Refused::NotAFile { path: path() },
            _ => Refused::Io {
                path: path(),
                source,
            },
        }
    };
    let mut at: OwnedFd = openat(
        nix::fcntl::AT_FDCWD,
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    for d in dirs {
        at = openat(
            &at,
            *d,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // O_NOFOLLOW|O_DIRECTORY on a symbolic link fails with ENOTDIR or ELOOP.
            nix::Error::ENOTDIR | nix::Error::ELOOP => match is_symlink(&full) {
                true => Refused::Symlink { path: path() },
                false => Refused::NotAFile { path: path() },
            },
            e => io(e),
        })?;
    }
    let fd = openat(
        &at,
        *last,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io)?;
    let st = fstat(&fd).map_err(io)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(Refused::NotAFile { path: path() });
    }
    if st.st_nlink > 1 {
        return Err(Refused::Denied {
            path: path(),
            why: "a hard link".into(),
        });
    }
    let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if size > max {
        return Err(Refused::TooLarge { path: path(), max });
    }
    let mut out = Vec::new();
    std::fs::File::from(fd)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| Refused::Io {
            path: path(),
            source,
        })?;
    if out.len() as u64 > max {
        return Err(Refused::TooLarge { path: path(), max });
    }
    Ok(out)
}

fn is_symlink(p: &Path) -> bool {
    // Only to name the refusal: some ancestor of `p` within the directory is a link.
    p.ancestors().any(|a| {
        a.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use std::os::unix::fs::symlink;

    use super::*;

    /// Each way out, refused; the same path read naively (the control) reaches what it points at.
    #[test]
    fn reads_plain_files_and_refuses_every_way_out() {
        let tmp = tempfile::tempdir().unwrap();
        let wt = tmp.path().join("wt");
        let secret_dir = tmp.path().join("secret");
        std::fs::create_dir_all(wt.join("src")).unwrap();
        std::fs::create_dir_all(wt.join("denied")).unwrap();
        std::fs::create_dir_all(&secret_dir).unwrap();
        std::fs::write(secret_dir.join("key"), "SECRET\n").unwrap();
        std::fs::write(wt.join("src/a.rs"), "fn a() {}\n").unwrap();
        std::fs::write(wt.join("denied/x"), "DENIED\n").unwrap();
        std::fs::write(wt.join("big"), "x".repeat(100)).unwrap();
        symlink(secret_dir.join("key"), wt.join("abs")).unwrap();
        symlink("../secret/key", wt.join("rel")).unwrap();
        symlink("/proc/self/environ", wt.join("env")).unwrap();
        symlink(&secret_dir, wt.join("dirlink")).unwrap();
        symlink("src/a.rs", wt.join("inside")).unwrap();
        std::fs::hard_link(secret_dir.join("key"), wt.join("hard")).unwrap();
        nix::unistd::mkfifo(&wt.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir_all(wt.join(".abo")).unwrap();
        std::fs::write(wt.join(".abo/proof.key"), "KEY").unwrap();
        let rules = Rules::new([wt.join("denied")]);
        let kind = |rel: &str| match read(&wt, rel, &rules, 50) {
            Ok(b) => String::from_utf8(b).unwrap(),
            Err(e) => format!("{e:?}")
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_owned(),
        };
        let got: Vec<(&str, String)> = [
            "src/a.rs",
            "./src/a.rs",
            "abs",
            "rel",
            "env",
            "dirlink/key",
            "inside",
            "hard",
            "fifo",
            "big",
            "denied/x",
            ".abo/proof.key",
            ".git/config",
            "../secret/key",
            "/etc/passwd",
            "nope",
        ]
        .iter()
        .map(|r| (*r, kind(r)))
        .collect();
        let want: Vec<(&str, String)> = [
            ("src/a.rs", "fn a() {}\n"),
            ("./src/a.rs", "fn a() {}\n"),
            ("abs", "Symlink"),
            ("rel", "Symlink"),
            ("env", "Symlink"),
            ("dirlink/key", "Symlink"),
            ("inside", "Symlink"),
            ("hard", "Denied"),
            ("fifo", "NotAFile"),
            ("big", "TooLarge"),
            ("denied/x", "Denied"),
            (".abo/proof.key", "Denied"),
            (".git/config", "Denied"),
            ("../secret/key", "Outside"),
            ("/etc/passwd", "Outside"),
            ("nope", "Missing"),
        ]
        .iter()
        .map(|(r, k)| (*r, (*k).to_owned()))
        .collect();
        pretty_assertions::assert_eq!(got, want);
        // Control: read naively, the same paths reach the secret and abo's environment.
        assert_eq!(std::fs::read_to_string(wt.join("abs")).unwrap(), "SECRET\n");
        assert_eq!(std::fs::read_to_string(wt.join("rel")).unwrap(), "SECRET\n");
        assert_eq!(
            std::fs::read_to_string(wt.join("dirlink/key")).unwrap(),
            "SECRET\n"
        );
        assert!(std::fs::read(wt.join("env")).unwrap().contains(&b'='));
    }
}
