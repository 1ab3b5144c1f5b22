//! Why the configuration cannot be used, as one sentence naming the key (or
//! the file, or the environment variable) the operator has to fix.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::secret::MIN_SECRET_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: std::io::Error },
    #[error("config file is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// An environment value that is not text of the setting's type.
    #[error("{var} (setting {key}): \"{raw}\" is not {expected}")]
    EnvValue { var: String, key: String, raw: String, expected: &'static str },
    /// A value serde could not read into the setting's type (`key` is its path).
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: String, message: String },
    /// A value outside the setting's choices; `hint` says what to write.
    #[error("{key} is \"{value}\"; {hint}")]
    Choice { key: &'static str, value: String, hint: &'static str },
    #[error("{key} may not be empty{hint}")]
    Empty { key: &'static str, hint: &'static str },
    #[error("{key} must be at least 1")]
    Zero { key: &'static str },
    /// Zero would mean "at once, forever" (a busy loop) or "nothing lives".
    #[error("{key} must be longer than 0s")]
    ZeroDuration { key: &'static str },
    #[error("{key} is longer than 100 years")]
    TooLong { key: &'static str },
    #[error("server.cors_origins has \"{origin}\": {why}")]
    Origin { origin: String, why: String },
    #[error("{key} is \"{value}\": {why}")]
    Url { key: &'static str, value: String, why: String },
    #[error("{key} is \"{value}\", which is not a folder")]
    NotAFolder { key: &'static str, value: String },
    #[error(
        "auth.jwt_secret is {len} bytes long; it must be at least {MIN_SECRET_BYTES} random bytes \
         (e.g. the output of `openssl rand -hex 32`)"
    )]
    ShortSecret { len: usize },
    /// An empty file would make `""` the HMAC key, and anyone could sign an admin token.
    #[error(
        "the secret file {} is {what}; it must hold at least {MIN_SECRET_BYTES} bytes. \
         Delete it to have a new secret generated (every token issued so far stops working), \
         or set auth.jwt_secret",
        file.display()
    )]
    ShortSecretFile { file: PathBuf, what: String },
    #[error("cannot {action} the secret file {} (auth.jwt_secret is not set): {source}", file.display())]
    SecretFile { action: &'static str, file: PathBuf, source: std::io::Error },
    #[error(
        "auth.jwt_secret must be set when server.bind ({bind}) is not a loopback address; \
         set it in config.toml or SYNCGATE_AUTH__JWT_SECRET"
    )]
    SecretRequired { bind: SocketAddr },
    /// A secret generated into one node's data folder would sign tokens that
    /// the other nodes sharing the database refuse.
    #[error(
        "auth.jwt_secret must be set when database.url is set: every syncgate on that database must sign \
         tokens with the same secret, and a generated one lives in a single node's data folder; \
         set it in config.toml or SYNCGATE_AUTH__JWT_SECRET"
    )]
    SharedDatabaseSecretRequired,
    #[error("cannot create the data folder {}: {source}", dir.display())]
    DataFolder { dir: PathBuf, source: std::io::Error },
}
