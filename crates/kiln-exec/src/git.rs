//! `ADD <git repository>`: the reference BuildKit accepts (`https://host/repo.git#ref:subdir`,
//! `git@host:repo.git`, `ssh://`, `git://`, query options), resolved to a commit before the key is
//! made, and checked out at that commit into a work area with the `git` program.
//!
//! Credentials in the URL (`https://user:token@host/...`) reach `git` and nothing else: keys,
//! progress, errors and a kept `.git` directory see the URL without them.

use crate::ExecError;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A git source of an ADD, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// What `git` is given: the URL without fragment and query (credentials kept).
    pub remote: String,
    /// The ref to check out: a branch, a tag, a commit, or empty for the remote's HEAD.
    pub reference: String,
    /// The directory of the repository to copy, relative, empty for all of it.
    pub subdir: String,
    /// `?checksum=` / `?commit=` (or `ADD --checksum`): the commit it must resolve to (a prefix).
    pub checksum: Option<String>,
    /// `?keep-git-dir=` (or `ADD --keep-git-dir`).
    pub keep_git_dir: bool,
}

/// A git source with the commit its ref named when the build looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedGit {
    /// The source as written.
    pub source: GitSource,
    /// Full hexadecimal object name.
    pub commit: String,
}

impl GitSource {
    /// Parses an ADD source that `kiln-plan` classified as a git URL. `checksum` and
    /// `keep_git_dir` come from the instruction's flags; the URL's query may say the same, not
    /// something else.
    pub fn parse(text: &str, checksum: Option<&str>, keep_git_dir: bool) -> Result<Self, String> {
        if text.starts_with('-') {
            return Err(format!("{text}: not a git URL"));
        }
        let (without_fragment, fragment) = match text.split_once('#') {
            Some((url, fragment)) => (url, fragment),
            None => (text, ""),
        };
        let (remote, query) = match without_fragment.split_once('?') {
            Some((url, query)) => (url, query),
            None => (without_fragment, ""),
        };
        let scheme_ok = ["https://", "http://", "git://", "ssh://"]
            .iter()
            .any(|s| remote.to_ascii_lowercase().starts_with(s))
            || is_scp_style(remote);
        if !scheme_ok {
            return Err(format!(
                "{}: only https, http, git and ssh repositories can be added",
                redact(remote)
            ));
        }
        let (reference, subdir) = match fragment.split_once(':') {
            Some((reference, subdir)) => (reference.to_string(), subdir.to_string()),
            None => (fragment.to_string(), String::new()),
        };
        let mut source = GitSource {
            remote: remote.to_string(),
            reference,
            subdir,
            checksum: checksum.map(str::to_string),
            keep_git_dir,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let conflict = |what: &str, a: &str, b: &str| {
                format!("{}: {what} conflicts: {a:?} vs {b:?}", redact(remote))
            };
            match key {
                "ref" | "tag" | "branch" => {
                    if !source.reference.is_empty() && source.reference != value {
                        return Err(conflict("ref", &source.reference, value));
                    }
                    source.reference = value.to_string();
                }
                "subdir" => {
                    if !source.subdir.is_empty() && source.subdir != value {
                        return Err(conflict("subdir", &source.subdir, value));
                    }
                    source.subdir = value.to_string();
                }
                "checksum" | "commit" => match &source.checksum {
                    Some(given) if given != value => {
                        return Err(format!(
                            "{}: checksum mismatch {given:?} != {value:?}",
                            redact(remote)
                        ))
                    }
                    _ => source.checksum = Some(value.to_string()),
                },
                "keep-git-dir" => {
                    let keep = match value {
                        "" | "true" | "1" => true,
                        "false" | "0" => false,
                        other => {
                            return Err(format!(
                                "{}: invalid keep-git-dir value {other:?}",
                                redact(remote)
                            ))
                        }
                    };
                    if keep_git_dir && !keep {
                        return Err(format!(
                            "{}: inconsistent keep-git-dir configuration",
                            redact(remote)
                        ));
                    }
                    source.keep_git_dir = keep;
                }
                other => {
                    return Err(format!(
                        "{}: unknown git URL option {other:?} (use ref, tag, branch, subdir, checksum, keep-git-dir)",
                        redact(remote)
                    ))
                }
            }
        }
        if source.reference.starts_with('-') {
            return Err(format!(
                "{}: invalid ref {:?}",
                redact(remote),
                source.reference
            ));
        }
        source.subdir = clean_subdir(&source.subdir);
        if let Some(checksum) = &source.checksum {
            if checksum.is_empty() || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{}: the checksum of a git source is a commit (hexadecimal), not {checksum:?}",
                    redact(remote)
                ));
            }
        }
        Ok(source)
    }

    /// The URL as it may be shown or stored: without user and password.
    pub fn display_remote(&self) -> String {
        redact(&self.remote)
    }
}

/// `user@host:path` (scp-like ssh), but not a Windows-looking or local path.
fn is_scp_style(remote: &str) -> bool {
    match remote.split_once(':') {
        Some((host, path)) => {
            !host.is_empty()
                && !host.contains('/')
                && !path.is_empty()
                && !path.starts_with(':')
                && !path.starts_with("//")
        }
        None => false,
    }
}

/// `a/../b` and absolute forms are cleaned the way BuildKit cleans them (`path.Join("/", x)`),
/// so a subdir never leaves the repository: the planner's own path join.
fn clean_subdir(subdir: &str) -> String {
    kiln_plan::planner::join_path("/", subdir)
        .trim_start_matches('/')
        .to_string()
}

/// The URL without userinfo (`https://user:pw@host/x` → `https://host/x`), as every stored or
/// shown instruction text is.
pub fn redact(url: &str) -> String {
    crate::image::redact_credentials(url)
}

/// Whether the source's ref is a whole commit, so its key needs no look-up on the network.
pub fn names_a_commit(text: &str) -> bool {
    GitSource::parse(text, None, false).is_ok_and(|s| is_full_commit(&s.reference))
}

fn is_full_commit(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `git` command, with nothing that could prompt or be steered by the environment.
fn git(dir: Option<&Path>) -> Command {
    let mut command = Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    command
        // Never ask for a password on the terminal: fail with git's message instead.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        // Only the transports a recipe may name (no ext::, no file:// reading the host).
        .env("GIT_ALLOW_PROTOCOL", "http:https:git:ssh")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(Stdio::null());
    command
}

/// Runs `command`; its standard output on success, or an error with git's own words (any
/// credentials in them removed).
fn run(mut command: Command, what: &str, source: &GitSource) -> Result<String, ExecError> {
    let output = command.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ExecError::Copy(format!(
                "ADD {}: adding a git repository needs the git program, which is not on PATH (apt-get install git)",
                source.display_remote()
            ))
        } else {
            ExecError::Copy(format!("ADD {}: running git: {e}", source.display_remote()))
        }
    })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.replace(&source.remote, &source.display_remote());
    Err(ExecError::Copy(format!(
        "ADD {}: {what}: {}",
        source.display_remote(),
        stderr.trim()
    )))
}

/// Which commit the source's ref names now (`git ls-remote`; a full commit needs no look-up),
/// checked against its checksum.
pub fn resolve(source: &GitSource) -> Result<ResolvedGit, ExecError> {
    let commit = if is_full_commit(&source.reference) {
        source.reference.to_ascii_lowercase()
    } else {
        let mut command = git(None);
        command.arg("ls-remote").arg(&source.remote);
        let pattern = if source.reference.is_empty() {
            "HEAD".to_string()
        } else {
            source.reference.clone()
        };
        // The peeled line of an annotated tag (`v1^{}`) names its commit; without this second
        // pattern ls-remote lists only the tag object.
        command.arg(&pattern).arg(format!("{pattern}^{{}}"));
        let listing = run(command, "resolving the ref", source)?;
        pick_commit(&listing, &pattern).ok_or_else(|| {
            ExecError::Copy(format!(
                "ADD {}: the repository has no ref {pattern:?}",
                source.display_remote()
            ))
        })?
    };
    if let Some(checksum) = &source.checksum {
        if !commit.starts_with(&checksum.to_ascii_lowercase()) {
            return Err(ExecError::Copy(format!(
                "ADD {}: expected checksum to match {checksum}, got {commit}",
                source.display_remote()
            )));
        }
    }
    Ok(ResolvedGit {
        source: source.clone(),
        commit,
    })
}

/// The commit `ls-remote` gives for `pattern`: a tag's peeled commit first, then the tag, then
/// a branch, then any ref whose name is exactly the pattern.
fn pick_commit(listing: &str, pattern: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(commit, _)| is_full_commit(commit))
        .collect();
    let candidates = [
        format!("refs/tags/{pattern}^{{}}"),
        format!("refs/tags/{pattern}"),
        format!("refs/heads/{pattern}"),
        pattern.to_string(),
    ];
    candidates.iter().find_map(|wanted| {
        refs.iter()
            .find(|(_, name)| name == wanted)
            .map(|(commit, _)| commit.to_ascii_lowercase())
    })
}

/// Checks the resolved commit out into `dest` (which must not exist) and returns the
/// directory to copy (`dest`, or its subdir). Every entry gets the commit's time, so the same
/// commit gives the same layer on every machine; `.git` is removed unless kept, and a kept one
/// names the remote without credentials.
pub fn checkout(resolved: &ResolvedGit, dest: &Path) -> Result<PathBuf, ExecError> {
    let source = &resolved.source;
    let io = |path: &Path, e: std::io::Error| ExecError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    std::fs::create_dir(dest).map_err(|e| io(dest, e))?;
    let mut init = git(Some(dest));
    init.args(["init", "-q"]);
    run(init, "git init", source)?;
    // The commit itself when the server allows it, else the ref it was resolved from.
    let mut fetch = git(Some(dest));
    fetch
        .args(["fetch", "-q", "--depth=1", "--no-tags"])
        .arg(&source.remote)
        .arg(&resolved.commit);
    if run(fetch, "fetching the commit", source).is_err() {
        let mut fetch = git(Some(dest));
        fetch.args(["fetch", "-q", "--no-tags"]).arg(&source.remote);
        if !source.reference.is_empty() && !is_full_commit(&source.reference) {
            fetch.arg(&source.reference);
        }
        run(fetch, "fetching the repository", source)?;
    }
    let mut checkout = git(Some(dest));
    checkout
        .args([
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "--detach",
        ])
        .arg(&resolved.commit);
    run(checkout, "checking out the commit", source)?;
    let mut time = git(Some(dest));
    time.args(["log", "-1", "--format=%ct"])
        .arg(&resolved.commit);
    let commit_time: i64 = run(time, "reading the commit time", source)?
        .trim()
        .parse()
        .map_err(|_| {
            ExecError::Copy(format!(
                "ADD {}: git gave no commit time",
                source.display_remote()
            ))
        })?;
    let git_dir = dest.join(".git");
    if source.keep_git_dir {
        // What the fetch left that names the URL (with any credentials) goes.
        let _ = std::fs::remove_file(git_dir.join("FETCH_HEAD"));
        let mut remote = git(Some(dest));
        remote
            .args(["remote", "add", "origin"])
            .arg(source.display_remote());
        run(remote, "naming the remote", source)?;
    } else {
        std::fs::remove_dir_all(&git_dir).map_err(|e| io(&git_dir, e))?;
    }
    let root = if source.subdir.is_empty() {
        dest.to_path_buf()
    } else {
        let below = dest.join(&source.subdir);
        match std::fs::symlink_metadata(&below) {
            Ok(meta) if meta.is_dir() => below,
            _ => {
                return Err(ExecError::Copy(format!(
                    "ADD {}: the commit {} has no directory {}",
                    source.display_remote(),
                    resolved.commit,
                    source.subdir
                )))
            }
        }
    };
    stamp_tree(dest, commit_time)?;
    Ok(root)
}

/// Sets the mtime of every entry below `root` (and `root`) to `seconds`, never following a link.
fn stamp_tree(root: &Path, seconds: i64) -> Result<(), ExecError> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: seconds,
            tv_nsec: 0,
        },
        last_modification: Timespec {
            tv_sec: seconds,
            tv_nsec: 0,
        },
    };
    // Deepest first, so setting a child's time never disturbs its parent's afterwards.
    let entries: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .contents_first(true)
        .into_iter()
        .map(|entry| {
            entry.map(|e| e.into_path()).map_err(|e| ExecError::Io {
                path: e.path().map(Path::to_path_buf).unwrap_or_default(),
                source: e.into(),
            })
        })
        .collect::<Result<_, _>>()?;
    for path in entries {
        rustix::fs::utimensat(CWD, &path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
            ExecError::Io {
                path: path.clone(),
                source: e.into(),
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_buildkit_reads_them() {
        let s =
            GitSource::parse("https://host/org/repo.git#v1.2:docs/../src", None, false).unwrap();
        assert_eq!(s.remote, "https://host/org/repo.git");
        assert_eq!((s.reference.as_str(), s.subdir.as_str()), ("v1.2", "src"));
        let s = GitSource::parse("git@github.com:org/repo.git", None, true).unwrap();
        assert_eq!(s.remote, "git@github.com:org/repo.git");
        assert!(s.reference.is_empty() && s.keep_git_dir);
        let s = GitSource::parse(
            "https://host/r.git?ref=main&subdir=/a/b&keep-git-dir=true&checksum=abc123",
            None,
            false,
        )
        .unwrap();
        assert_eq!(
            (s.reference.as_str(), s.subdir.as_str(), s.keep_git_dir),
            ("main", "a/b", true)
        );
        assert_eq!(s.checksum.as_deref(), Some("abc123"));
        // A subdir never climbs out of the repository.
        let s = GitSource::parse("https://host/r.git#main:../../etc", None, false).unwrap();
        assert_eq!(s.subdir, "etc");
        for bad in [
            "file:///etc/repo.git",
            "ext::sh -c x",
            "--upload-pack=x",
            "https://host/r.git?ref=a#b",
            "https://host/r.git?what=1",
            "https://host/r.git#-x",
            "https://host/r.git?checksum=nothex",
        ] {
            assert!(GitSource::parse(bad, None, false).is_err(), "{bad}");
        }
        assert!(GitSource::parse("https://host/r.git?checksum=aa", Some("bb"), false).is_err());
        assert!(GitSource::parse("https://host/r.git?keep-git-dir=false", None, true).is_err());
    }

    #[test]
    fn only_a_whole_commit_is_known_without_the_network() {
        let commit = "a".repeat(40);
        assert!(names_a_commit(&format!("https://h/r.git#{commit}:sub")));
        assert!(!names_a_commit("https://h/r.git#main"));
        assert!(!names_a_commit("https://h/r.git#abc123"));
        assert!(!names_a_commit("file:///r.git"));
    }

    #[test]
    fn credentials_are_never_shown() {
        let s = GitSource::parse("https://user:s3cret@host/r.git#main", None, false).unwrap();
        assert_eq!(s.display_remote(), "https://host/r.git");
        assert_eq!(redact("ssh://git@host/r.git"), "ssh://host/r.git");
        assert_eq!(redact("git@host:r.git"), "git@host:r.git");
    }

    #[test]
    fn ls_remote_listings_pick_tags_then_branches() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let c = "c".repeat(40);
        let listing = format!(
            "{a}\tHEAD\n{a}\trefs/heads/main\n{b}\trefs/tags/v1\n{c}\trefs/tags/v1^{{}}\n{b}\trefs/heads/v1\n"
        );
        assert_eq!(pick_commit(&listing, "v1"), Some(c.clone()));
        assert_eq!(pick_commit(&listing, "main"), Some(a.clone()));
        assert_eq!(pick_commit(&listing, "HEAD"), Some(a));
        assert_eq!(pick_commit(&listing, "nope"), None);
    }
}
