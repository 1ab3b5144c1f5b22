//! The layering: built-in defaults, then the file (`--config PATH`, else
//! `./config.toml` when present), then `SYNCGATE_<SECTION>__<KEY>`. Each
//! layer is merged as a TOML tree checked against the defaults' keys, so an
//! unknown key is a warning that names it, never a stop.

use std::path::Path;

use super::{Config, ConfigError};

/// A loaded configuration plus what the loader wants the operator to know.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

pub const ENV_PREFIX: &str = "SYNCGATE_";

impl Config {
    /// Load with the documented precedence. `explicit` is `--config PATH`.
    pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_from(explicit, std::env::vars().collect(), Path::new("config.toml"))
    }

    /// The same, with the environment and the default file given (for tests).
    pub fn load_from(explicit: Option<&Path>, env: Vec<(String, String)>, default_file: &Path) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let defaults = toml::Value::try_from(Config::default()).expect("the defaults are a TOML table");
        let mut merged = defaults.clone();

        let file = match explicit {
            Some(p) => Some(p),
            None if default_file.exists() => Some(default_file),
            None => None,
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_path_buf(), source })?;
            let value: toml::Table = text.parse()?;
            merge(&mut merged, &defaults, toml::Value::Table(value), "", &mut warnings);
        }

        let mut env = env;
        env.sort();
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
            let Some((section, key)) = rest.split_once("__") else {
                if !rest.is_empty() {
                    warnings.push(format!("ignoring {name}: write it as SYNCGATE_<SECTION>__<KEY>"));
                }
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let Some(default) = defaults.get(&section).and_then(|s| s.get(&key)) else {
                warnings.push(format!("ignoring {name}: there is no setting {section}.{key}"));
                continue;
            };
            let value = coerce_env(default, &raw).map_err(|expected| ConfigError::EnvValue {
                var: name.clone(),
                key: format!("{section}.{key}"),
                raw: raw.clone(),
                expected,
            })?;
            if let Some(toml::Value::Table(t)) = merged.get_mut(&section) {
                t.insert(key, value);
            }
        }

        // The path of a value that does not fit (e.g. `changes.retention_age`) goes into the sentence.
        let config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid { key, message: e.into_inner().message().to_string() }
        })?;
        config.validate()?;
        Ok(Loaded { config, warnings })
    }
}

/// Merge `over` into `base`, warning about keys the defaults do not know.
fn merge(base: &mut toml::Value, defaults: &toml::Value, over: toml::Value, path: &str, warnings: &mut Vec<String>) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                let key_path = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match defaults.get(&k) {
                    None => warnings.push(format!("unknown setting {key_path} ignored")),
                    Some(d) if d.is_table() => {
                        if let Some(slot) = b.get_mut(&k) {
                            if v.is_table() {
                                merge(slot, d, v, &key_path, warnings);
                            } else {
                                warnings.push(format!("setting {key_path} must be a section; ignored"));
                            }
                        }
                    }
                    Some(_) => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Environment values are text; read them as the type the default has (lists
/// comma-separated, text as it is, so a numeric secret stays text). Fails
/// with what the value should have been.
fn coerce_env(default: &toml::Value, raw: &str) -> Result<toml::Value, &'static str> {
    Ok(match default {
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().map_err(|_| "a whole number")?),
        toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().map_err(|_| "a number")?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err("true or false"),
        }),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.to_string())).collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}
