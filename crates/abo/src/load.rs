//! Finding the repository, loading abo.yml and the backlog, opening the store.

use std::path::{Path, PathBuf};

use anyhow::Context;

use abo_core::backlog::{self, Backlog};
use abo_core::config::Config;
use abo_core::diag::{InputError, InputErrors};
use abo_core::plan::Plan;
use abo_runtime::git::Git;
use abo_runtime::screen;
use abo_store::Store;

use crate::exit::Usage;

pub(crate) const DEFAULT_STORE: &str = "sqlite:.abo/abo.db";

/// The repository's top level, from `-C` or the working directory.
pub(crate) async fn repo_root(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_owned(),
        None => std::env::current_dir().context("reading the working directory")?,
    };
    if !dir.is_dir() {
        return Err(Usage::new(format!("{}: no such directory", dir.display())).into());
    }
    Git::toplevel(&dir).await.map_err(|_| {
        Usage::new(format!("{}: not a git repository", dir.display()))
            .hint("run abo inside a git repository, or give -C DIR")
            .into()
    })
}

/// abo.yml from `--config`, else the repository's, else the embedded defaults.
pub(crate) fn config(
    root: &Path,
    flag: Option<&Path>,
) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let path = match flag {
        Some(p) => Some(p.to_owned()),
        None => Some(root.join("abo.yml")).filter(|p| p.exists()),
    };
    let Some(path) = path else {
        return Ok((Config::embedded_default(), None));
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Usage::new(format!("{}: {e}", path.display())))?;
    let shown = display_path(&path);
    let config = Config::parse(&shown, &text).map_err(InputErrors::from)?;
    Ok((config, Some(path)))
}

/// A path as the user would write it: relative to the working directory when inside it.
pub(crate) fn display_path(p: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    p.strip_prefix(&cwd)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// A backlog file, parsed, with its text (its secrets are located in it).
pub(crate) struct Source {
    pub(crate) backlog: Backlog,
    pub(crate) text: String,
}

/// The largest backlog file read: a plan is text a person wrote, not a data dump.
const MAX_BACKLOG_BYTES: u64 = 8 << 20;

/// Parses a backlog file, or every `.yml`/`.yaml`/`.md` file of a directory.
///
/// A directory's entries are what an earlier run's agent may have committed, so each is read only
/// if it is a regular file or a link to one inside the directory: a link out of it (to a key, to
/// `/proc/self/environ`), a FIFO or a device is refused, located, and nothing starts.
pub(crate) fn backlogs(path: &Path) -> anyhow::Result<Vec<Source>> {
    let shown = display_path(path);
    if !path.exists() {
        return Err(Usage::new(format!("{shown}: no such file")).into());
    }
    let mut errors = Vec::new();
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Usage::new(format!("{shown}: {e}")))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| {
                    ["yml", "yaml", "md", "markdown"].contains(&e.to_string_lossy().as_ref())
                })
            })
            .collect();
        f.sort();
        if f.is_empty() {
            return Err(Usage::new(format!(
                "{shown}: no backlog files (.yml, .yaml, .md) in this directory"
            ))
            .into());
        }
        let dir = path
            .canonicalize()
            .map_err(|e| Usage::new(format!("{shown}: {e}")))?;
        f.retain(|file| match in_directory(&dir, file) {
            Ok(()) => true,
            Err(why) => {
                errors.push(InputError::new(&display_path(file), why));
                false
            }
        });
        f
    } else {
        vec![path.to_owned()]
    };
    let mut out = Vec::new();
    for f in files {
        let name = display_path(&f);
        let text = match read_bounded(&f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(InputError::new(&name, e));
                continue;
            }
        };
        match backlog::parse_file(&name, &text) {
            Ok(backlog) => out.push(Source { backlog, text }),
            Err(e) => errors.extend(e.0),
        }
    }
    if !errors.is_empty() {
        return Err(InputErrors(errors).into());
    }
    Ok(out)
}

/// Whether a directory's entry `file` is a regular file of `dir` (canonical), itself or through
/// links that stay in it.
fn in_directory(dir: &Path, file: &Path) -> Result<(), String> {
    let real = file
        .canonicalize()
        .map_err(|e| format!("cannot be read: {e}"))?;
    if !real.starts_with(dir) {
        return Err(format!(
            "a link to {} outside the backlog's directory; not read (hint: copy the file into the directory)",
            real.display()
        ));
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file; not read".into());
    }
    Ok(())
}

/// A backlog file's text, refused past [`MAX_BACKLOG_BYTES`] (read with a bound, so a file that
/// grows while read cannot take the memory either).
fn read_bounded(file: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.take(MAX_BACKLOG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_BACKLOG_BYTES {
        return Err(format!(
            "larger than {} MiB; a backlog is read whole, so it is not read",
            MAX_BACKLOG_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|_| "stream did not contain valid UTF-8".into())
}

/// Validates backlogs against the config into a plan, and checks them like a change: a secret in
/// a backlog or in a patch file it names, or a patch file outside the repository (`root`) and the
/// backlog's directory, is refused, located, before anything of it is stored.
pub(crate) fn plan(root: &Path, sources: &[Source], config: &Config) -> anyhow::Result<Plan> {
    let scanner = abo_policy::secrets::Scanner::default();
    let mut screened = Vec::new();
    let mut refused = Vec::new();
    for s in sources {
        screened.extend(screen::secrets(&scanner, &s.backlog, &s.text));
        let dir = Path::new(&s.backlog.file)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let (errors, paths) =
            screen::patches(&scanner, &s.backlog, &[root.to_owned(), dir.to_owned()]);
        screened.extend(errors);
        refused.extend(paths);
    }
    let backlogs: Vec<Backlog> = sources.iter().map(|s| s.backlog.clone()).collect();
    // A refused patch file is reported as such, not also as missing.
    let built = Plan::build(&backlogs, config, &|p: &Path| {
        p.is_file() || refused.iter().any(|r| r == p)
    });
    match built {
        Ok(plan) if screened.is_empty() => Ok(plan),
        Ok(_) => Err(InputErrors(screened).into()),
        Err(mut e) => {
            e.0.extend(screened);
            Err(e.into())
        }
    }
}

/// Whether the store already exists (a SQLite file on disk).
pub(crate) fn store_exists(root: &Path, flag: Option<&str>, config: &Config) -> bool {
    let url = flag.or(config.store.as_deref()).unwrap_or(DEFAULT_STORE);
    match url.strip_prefix("sqlite:") {
        Some(path) => root.join(path.trim_start_matches("//")).exists(),
        None => true,
    }
}

/// Opens the store named by `--store`, the config, or the default.
pub(crate) async fn store(
    root: &Path,
    flag: Option<&str>,
    config: &Config,
) -> anyhow::Result<Store> {
    let url = flag.or(config.store.as_deref()).unwrap_or(DEFAULT_STORE);
    let shared = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !url.starts_with("sqlite:") && !shared {
        return Err(Usage::new(format!(
            "unsupported store `{}`",
            abo_store::redact_url(url)
        ))
        .hint("sqlite:PATH on one machine, postgres://USER@HOST:PORT/DB when many share it")
        .into());
    }
    Ok(Store::open(url, root).await?)
}

/// Creates `.abo/` and keeps git from seeing it (`.git/info/exclude`, shared by all worktrees).
pub(crate) async fn prepare_abo_dir(root: &Path, git: &Git) -> anyhow::Result<()> {
    for d in ["worktrees", "artifacts", "policy", "tmp"] {
        std::fs::create_dir_all(root.join(".abo").join(d))
            .with_context(|| format!("creating .abo/{d}"))?;
    }
    // No sandbox on this machine may read it, whichever repository it runs for.
    let _ = abo_runtime::sandbox::remember_state_dir(&root.join(".abo"));
    let common = match git.common_git_dir() {
        Some(dir) => dir,
        None => root.join(git.run(&["rev-parse", "--git-common-dir"]).await?.trim()),
    };
    let exclude = common.join("info/exclude");
    let current = std::fs::read_to_string(&exclude).unwrap_or_default();
    if !current
        .lines()
        .any(|l| l.trim() == "/.abo/" || l.trim() == ".abo/")
    {
        std::fs::create_dir_all(common.join("info"))?;
        let sep = if current.is_empty() || current.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        std::fs::write(&exclude, format!("{current}{sep}/.abo/\n"))
            .context("writing .git/info/exclude")?;
    }
    Ok(())
}
