//! Secrets at rest (issue 13, items 1 and 8): a generated secret file that is
//! empty, blank or short stops `serve` and every CLI command; a configured
//! secret under 32 bytes is refused; the data folder is 0700, the database
//! and its `-wal`/`-shm` 0600 (an existing install's files are tightened on
//! start), and `backup --to` writes 0600.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::cli::{db_path, ok, only_line, run, serve, syncgate, SECRET};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// Every command must refuse, naming the file and the key, and never listen.
async fn assert_every_command_refuses(d: &Path, needle: &str) {
    let commands: [&[&str]; 6] = [
        &["serve"],
        &["user", "add", "--email", "eve@example.com"],
        &["token", "--anon"],
        &["token", "--user", "1"],
        &["login-link", "--user", "1"],
        &["check"],
    ];
    for args in commands {
        let out = run(syncgate(d), args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "syncgate {args:?} must refuse to run; stderr:\n{stderr}");
        assert!(stderr.contains(needle), "syncgate {args:?} names {needle}: {stderr}");
        assert!(stderr.contains("auth.jwt_secret"), "syncgate {args:?} names auth.jwt_secret: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "it never listened");
        assert!(out.stdout.is_empty(), "syncgate {args:?} printed nothing on stdout (no token): {:?}", out.stdout);
    }
}

#[tokio::test]
async fn an_empty_blank_or_short_secret_file_stops_every_command() {
    // The secret file is the generated one, which only a server without
    // database.url uses.
    if crate::helpers::sqlite_only("an_empty_blank_or_short_secret_file_stops_every_command", "no secret file is used with database.url") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A user first, so `token --user 1` would otherwise succeed.
    let id = ok(syncgate(d), &["user", "add", "--email", "ada@example.com"]).await;
    assert_eq!(only_line(&id), "1");
    let secret_file = d.join("data").join("jwt_secret");
    for bad in ["", "   \n\t\n", "short-but-not-empty-31-bytes-xx"] {
        std::fs::write(&secret_file, bad).unwrap();
        let shown = secret_file.display().to_string();
        assert_every_command_refuses(d, &shown).await;
        assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), bad, "the bad file is left for the operator to look at");
    }
    // Deleting it, as the message says, gets a fresh long secret again.
    std::fs::remove_file(&secret_file).unwrap();
    let tok = ok(syncgate(d), &["token", "--user", "1"]).await;
    only_line(&tok);
    assert!(std::fs::read_to_string(&secret_file).unwrap().trim().len() >= 32);
}

#[tokio::test]
async fn a_configured_secret_shorter_than_32_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for args in [&["serve"][..], &["token", "--anon"][..], &["user", "add", "--email", "a@example.com"][..]] {
        let mut cmd = syncgate(d);
        cmd.env("SYNCGATE_AUTH__JWT_SECRET", "0123456789abcdef0123456789abcde"); // 31 bytes
        let out = run(cmd, args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must refuse a 31-byte secret");
        assert!(stderr.contains("auth.jwt_secret") && stderr.contains("32"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    // 32 bytes is enough.
    let mut cmd = syncgate(d);
    cmd.env("SYNCGATE_AUTH__JWT_SECRET", "0123456789abcdef0123456789abcdef");
    only_line(&ok(cmd, &["token", "--anon"]).await);
}

#[tokio::test]
async fn the_generated_secret_is_written_whole_and_private() {
    // With database.url a secret must be configured; none is generated
    // (`cli::without_a_secret_a_loopback_server_generates_one_once` checks the refusal).
    if crate::helpers::sqlite_only("the_generated_secret_is_written_whole_and_private", "no secret is generated with database.url") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    only_line(&ok(syncgate(d), &["token", "--anon"]).await);
    let data = d.join("data");
    let secret_file = data.join("jwt_secret");
    assert_eq!(mode(&secret_file), 0o600);
    assert!(std::fs::read_to_string(&secret_file).unwrap().trim().len() >= 64);
    let names: Vec<String> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.contains("tmp")), "no temporary file is left behind: {names:?}");
}

#[tokio::test]
async fn the_data_folder_and_database_files_are_private_and_an_old_install_is_tightened() {
    // The SQLite file, its WAL and a backup of it are what must be private here.
    if crate::helpers::sqlite_only(
        "the_data_folder_and_database_files_are_private_and_an_old_install_is_tightened",
        "it checks the modes of the SQLite file, its WAL and a backup copy",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cmd = syncgate(d);
    cmd.env("SYNCGATE_AUTH__JWT_SECRET", SECRET);
    let server = serve(cmd).await;
    let data = d.join("data");
    let db = db_path(d);
    let (s, _) = server.get("/health/ready", "").await;
    assert_eq!(s, 200);
    assert_eq!(mode(&data), 0o700, "a new data folder is 0700");
    for f in [db.clone(), d.join("data/syncgate.db-wal"), d.join("data/syncgate.db-shm")] {
        assert_eq!(mode(&f), 0o600, "{} is 0600", f.display());
    }
    assert!(server.terminate().await.success());

    // An install made before this change: everything world-readable.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret_file = data.join("jwt_secret");
    std::fs::write(&secret_file, "an-old-generated-secret-of-more-than-32-bytes").unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = serve(syncgate(d)).await;
    let (s, _) = server.get("/health/ready", "").await;
    assert_eq!(s, 200);
    assert_eq!(mode(&data), 0o700, "the folder is tightened on start");
    assert_eq!(mode(&db), 0o600, "the database is tightened on start");
    assert_eq!(mode(&secret_file), 0o600, "the secret file is tightened on start");
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("tightened"), "the change is logged: {log}");
    assert!(server.terminate().await.success());

    // A backup is as private as the database it copies.
    let to = d.join("backup.db");
    let mut cmd = syncgate(d);
    cmd.env("SYNCGATE_AUTH__JWT_SECRET", SECRET);
    ok(cmd, &["backup", "--to", &to.to_string_lossy()]).await;
    assert_eq!(mode(&to), 0o600, "backup --to writes 0600");
}
