//! The JWT secret: `auth.jwt_secret` when configured (at least
//! [`MIN_SECRET_BYTES`]); on a loopback bind without one, a random secret
//! generated once into the data folder's `jwt_secret` file. A short one, or
//! a generated file that is empty, blank or short, is refused: an empty key
//! would let anyone sign an admin token.

use std::path::{Path, PathBuf};

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use super::{files, Config, ConfigError};

/// Shortest HMAC key accepted, in bytes: shorter keys can be guessed.
pub const MIN_SECRET_BYTES: usize = 32;

/// The file in the data folder that holds a generated secret.
pub fn secret_file(config: &Config) -> PathBuf {
    config.data_dir().join("jwt_secret")
}

/// Refuse a secret that is configured but too short, or a generated secret
/// file that exists but is empty, blank or too short. Creates nothing: every
/// CLI command runs this before it starts.
pub fn check_secret(config: &Config) -> Result<(), ConfigError> {
    let configured = config.auth.jwt_secret.expose_secret().trim();
    if !configured.is_empty() {
        return check_configured(configured);
    }
    if !config.database.url.expose_secret().trim().is_empty() {
        return Err(ConfigError::SharedDatabaseSecretRequired);
    }
    let file = secret_file(config);
    match std::fs::read(&file) {
        Ok(bytes) => check_file_secret(&file, &bytes).map(|_| ()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ConfigError::SecretFile { action: "read", file, source }),
    }
}

fn check_configured(configured: &str) -> Result<(), ConfigError> {
    if configured.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::ShortSecret { len: configured.len() });
    }
    Ok(())
}

/// The secret in an existing file, or a sentence naming the file and the key.
fn check_file_secret(file: &Path, bytes: &[u8]) -> Result<SecretString, ConfigError> {
    let text = String::from_utf8_lossy(bytes);
    let secret = text.trim();
    if secret.len() < MIN_SECRET_BYTES {
        let what = if secret.is_empty() { "empty".to_string() } else { format!("only {} bytes long", secret.len()) };
        return Err(ConfigError::ShortSecretFile { file: file.to_path_buf(), what });
    }
    Ok(secret.into())
}

/// The secret to sign with: the configured one; on a loopback bind without
/// one, a random secret generated once into the data folder (with a warning).
/// Returns (secret, warning).
pub fn resolve_secret(config: &Config) -> Result<(SecretString, Option<String>), ConfigError> {
    let configured = config.auth.jwt_secret.expose_secret().trim();
    if !configured.is_empty() {
        check_configured(configured)?;
        return Ok((configured.into(), None));
    }
    let bind = config.bind_addr()?;
    if !bind.ip().is_loopback() {
        return Err(ConfigError::SecretRequired { bind });
    }
    if !config.database.url.expose_secret().trim().is_empty() {
        return Err(ConfigError::SharedDatabaseSecretRequired);
    }
    let dir = config.data_dir();
    files::create_private_dir(&dir).map_err(|source| ConfigError::DataFolder { dir, source })?;
    let file = secret_file(config);
    let (secret, created) = read_or_create_secret(&file)?;
    let warning = created.then(|| {
        format!(
            "auth.jwt_secret is not set; generated a random one in {} (fine on this machine; set auth.jwt_secret in production)",
            file.display()
        )
    });
    Ok((secret, warning))
}

fn read_or_create_secret(file: &Path) -> Result<(SecretString, bool), ConfigError> {
    let unreadable = |source| ConfigError::SecretFile { action: "read", file: file.to_path_buf(), source };
    match std::fs::read(file) {
        Ok(bytes) => {
            files::tighten_file(file);
            return check_file_secret(file, &bytes).map(|s| (s, false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(unreadable(e)),
    }
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    match files::write_new_private_file(file, secret.as_bytes()) {
        Ok(true) => Ok((secret.into(), true)),
        // Another process (the CLI next to the server) made it first: use theirs.
        Ok(false) => {
            let bytes = std::fs::read(file).map_err(unreadable)?;
            check_file_secret(file, &bytes).map(|s| (s, false))
        }
        Err(source) => Err(ConfigError::SecretFile { action: "write", file: file.to_path_buf(), source }),
    }
}
