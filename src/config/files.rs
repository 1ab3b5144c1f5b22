//! The data folder's files hold secrets (Google refresh tokens, Calendly
//! signing keys, the generated JWT secret), so only their owner may read
//! them: the folder is created 0700, files 0600, and an existing install's
//! looser modes are tightened on start with a log line. New secret files are
//! written atomically, so a crash or a full disk never leaves an empty one.

use std::io::Write;
use std::path::Path;

/// Mode of the data folder.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the database, its `-wal`/`-shm`, the secret file and backups.
pub const FILE_MODE: u32 = 0o600;

/// Create the data folder (and missing parents) with mode 0700; tighten an
/// existing one that others may read.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir == Path::new(".") {
        return Ok(());
    }
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(DIR_MODE);
        }
        return builder.create(dir);
    }
    tighten_dir(dir);
    Ok(())
}

/// An existing data folder that group or others may enter becomes 0700 — only
/// when this user owns it and it is not a shared folder (sticky bit, like
/// `/tmp`), which is not ours to change.
#[cfg(unix)]
fn tighten_dir(dir: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::metadata(dir) else { return };
    let mode = meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    let not_ours = current_uid().is_some_and(|uid| uid != meta.uid());
    if mode & 0o077 == 0 || sticky || not_ours {
        return;
    }
    match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)) {
        Ok(()) => {
            tracing::info!(folder = %dir.display(), from = format!("{:o}", mode & 0o777), to = "700", "tightened the data folder's permissions")
        }
        Err(e) => tracing::warn!(folder = %dir.display(), error = %e, "cannot tighten the data folder's permissions"),
    }
}

#[cfg(not(unix))]
fn tighten_dir(_dir: &Path) {}

/// This process's user (Linux: the owner of `/proc/self`; no libc call needed).
#[cfg(unix)]
fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok()
}

/// Make `file` mode 0600 if it exists and others may read it, with a log line.
pub fn tighten_file(file: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(file) else { return };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            return;
        }
        match std::fs::set_permissions(file, std::fs::Permissions::from_mode(FILE_MODE)) {
            Ok(()) => tracing::info!(file = %file.display(), from = format!("{mode:o}"), to = "600", "tightened a data file's permissions"),
            Err(e) => tracing::warn!(file = %file.display(), error = %e, "cannot tighten a data file's permissions"),
        }
    }
    #[cfg(not(unix))]
    let _ = file;
}

/// Create an empty file with mode 0600 if it does not exist yet, so that
/// SQLite (which gives `-wal`/`-shm` the mode of the database file) never
/// creates a world-readable one.
pub fn create_private_file(file: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    match opts.open(file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Write `contents` to a new file atomically, mode 0600: a temporary file in
/// the same folder is written and fsynced, then linked into place (which,
/// unlike a rename, never replaces a file another process made first), and
/// the folder is fsynced. Returns false when `file` already existed (then
/// nothing was written).
pub fn write_new_private_file(file: &Path, contents: &[u8]) -> std::io::Result<bool> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{:016x}", std::process::id(), rand::random::<u64>()));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(FILE_MODE);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        match std::fs::hard_link(&tmp, file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            // A filesystem without hard links: a rename is atomic too (and only
            // races with another syncgate starting in the same instant).
            Err(_) if !file.exists() => std::fs::rename(&tmp, file)?,
            Err(e) => return Err(e),
        }
        sync_dir(&dir)?;
        Ok(true)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_file_is_private_and_never_replaces_another() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        assert!(write_new_private_file(&f, b"first").unwrap());
        assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!write_new_private_file(&f, b"second").unwrap());
        assert_eq!(std::fs::read(&f).unwrap(), b"first");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }
}
