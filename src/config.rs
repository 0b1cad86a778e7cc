//! Configuration: `config/base.toml`, then `config/<env>.toml`, then `CCASS_`-prefixed
//! environment overrides, deserialised into one typed [`Config`].
//!
//! Rules (see ARCHITECTURE.md, "Config"):
//! - Every key is required: there is no `Default` for any config struct, so a key missing from
//!   every layer is a startup error naming the key (`hostdb.port`).
//! - Unknown keys are errors too (`deny_unknown_fields`), so a typo never silently falls back.
//! - Limits and timeouts carry their unit last: `connect_timeout_ms`, `pool_connections_max`.
//! - An override is `CCASS_<SECTION>__<KEY>=value` (`CCASS_HOSTDB__PORT=5432`); nested tables use
//!   more `__`. Environment variables without `__` (`CCASS_ENV`, `CCASS_TEST_SERVICES`) are not
//!   config keys and are ignored here.
//! - Secrets ([`Secret`]) are never printed: `Debug` and `Display` show `[redacted]`.
//!
//! The loader takes the environment as an explicit list of pairs, so tests never mutate the
//! process environment.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration of a ccass process. Each service reads only its own section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub telemetry: crate::telemetry::TelemetryConfig,
    pub hostdb: crate::hostdb::HostDbConfig,
    pub bus: crate::bus::BusConfig,
    pub directory: crate::auth::DirectoryConfig,
    pub auth: crate::auth::AuthConfig,
    pub cns: crate::cns::CnsConfig,
    pub intake: crate::settlement::intake::IntakeConfig,
    pub settlement: crate::settlement::SettlementConfig,
    pub pki: crate::pki::PkiConfig,
    pub gateway: crate::gateway::GatewayConfig,
    pub statements: crate::statements::StatementsConfig,
    pub demo: crate::demo::DemoConfig,
    pub terminal: crate::terminal::TerminalConfig,
    pub pss: crate::pss::PssSettings,
}

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "CCASS_";
/// Separator between key path segments in an override variable's name.
const ENV_PATH_SEPARATOR: &str = "__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse config file {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment override {variable}: {message}")]
    Override { variable: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

/// Loads `base.toml` and `<environment>.toml` from `dir`, applies overrides from `variables`
/// (pass `std::env::vars()` in a binary, an explicit list in tests) and checks every value.
pub fn load(
    dir: &Path,
    environment: &str,
    variables: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let table = load_table(dir, environment, variables)?;
    let config: Config = deserialize(table)?;
    config.check()?;
    Ok(config)
}

/// The merged key/value tree before typing, for tools that read one section.
pub fn load_table(
    dir: &Path,
    environment: &str,
    variables: impl IntoIterator<Item = (String, String)>,
) -> Result<toml::Table, ConfigError> {
    let mut table = read_table(&dir.join("base.toml"))?;
    merge(
        &mut table,
        read_table(&dir.join(format!("{environment}.toml")))?,
    );
    for (variable, value) in variables {
        apply_override(&mut table, &variable, &value)?;
    }
    Ok(table)
}

/// Deserialises a merged table, naming the key path of the first problem.
pub fn deserialize<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|error| {
        let key = error.path().to_string();
        ConfigError::Key {
            key: if key == "." {
                "(top level)".to_owned()
            } else {
                key
            },
            message: error.into_inner().to_string(),
        }
    })
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|error| ConfigError::Syntax {
            path: path.to_owned(),
            message: error.message().to_owned(),
        })
}

/// Deep merge: tables merge key by key, anything else in `overlay` replaces `base`.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge(base_table, overlay_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn apply_override(table: &mut toml::Table, variable: &str, raw: &str) -> Result<(), ConfigError> {
    let Some(name) = variable.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if !name.contains(ENV_PATH_SEPARATOR) {
        return Ok(());
    }
    let path: Vec<String> = name
        .split(ENV_PATH_SEPARATOR)
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Override {
            variable: variable.to_owned(),
            message: "empty key segment".to_owned(),
        });
    }
    let (leaf, parents) = path
        .split_last()
        .expect("split on a separator yields two parts");
    let mut current = table;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            _ => {
                return Err(ConfigError::Override {
                    variable: variable.to_owned(),
                    message: format!("`{segment}` is a value, not a table"),
                });
            }
        };
    }
    // The value's type follows the key it replaces: a string stays a string (so a password of
    // digits is not turned into a number); anything else is read as a TOML literal.
    let value = match current.get(leaf) {
        None | Some(toml::Value::String(_)) => toml::Value::String(raw.to_owned()),
        Some(_) => parse_literal(raw).ok_or_else(|| ConfigError::Override {
            variable: variable.to_owned(),
            message: format!("`{raw}` is not a TOML value"),
        })?,
    };
    current.insert(leaf.clone(), value);
    Ok(())
}

fn parse_literal(raw: &str) -> Option<toml::Value> {
    let mut table = format!("value = {raw}").parse::<toml::Table>().ok()?;
    table.remove("value")
}

impl Config {
    /// Range checks that types alone cannot express.
    fn check(&self) -> Result<(), ConfigError> {
        self.hostdb.check()?;
        self.bus.check()?;
        self.auth.check()?;
        self.cns.check()?;
        self.intake.check()?;
        self.settlement.check()?;
        self.statements.check(&self.settlement)?;
        self.pki.check()?;
        self.gateway.check()?;
        self.demo.check()?;
        self.terminal.check()?;
        self.pss.check()?;
        Ok(())
    }
}

/// Fails with a [`ConfigError::Key`] unless `value` lies in `range`.
pub fn check_range<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Key {
            key: key.to_owned(),
            message: format!(
                "{value} is out of range {}..={}",
                range.start(),
                range.end()
            ),
        })
    }
}

/// A value that must never reach a log, a metric or an error message.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The secret itself, for the one place that hands it to a driver.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn override_keeps_string_type_and_parses_numbers() {
        // Goal: an override follows the type of the key it replaces.
        let mut t = table("[hostdb]\nport = 1\nuser = \"a\"\n");
        apply_override(&mut t, "CCASS_HOSTDB__PORT", "5432").unwrap();
        apply_override(&mut t, "CCASS_HOSTDB__USER", "123").unwrap();
        apply_override(&mut t, "CCASS_HOSTDB__PASSWORD", "007").unwrap();
        assert_eq!(t["hostdb"]["port"], toml::Value::Integer(5432));
        assert_eq!(t["hostdb"]["user"], toml::Value::String("123".into()));
        assert_eq!(t["hostdb"]["password"], toml::Value::String("007".into()));
    }

    #[test]
    fn override_rejects_a_non_literal_for_a_number() {
        let mut t = table("[hostdb]\nport = 1\n");
        let error = apply_override(&mut t, "CCASS_HOSTDB__PORT", "five").unwrap_err();
        assert!(
            matches!(error, ConfigError::Override { ref variable, .. } if variable == "CCASS_HOSTDB__PORT")
        );
    }

    #[test]
    fn variables_without_separator_are_not_keys() {
        let mut t = table("a = 1\n");
        apply_override(&mut t, "CCASS_ENV", "prod").unwrap();
        apply_override(&mut t, "HOME", "/root").unwrap();
        assert_eq!(t, table("a = 1\n"));
    }

    #[test]
    fn merge_is_deep() {
        let mut base = table("[a]\nx = 1\ny = 2\n");
        merge(&mut base, table("[a]\ny = 3\n"));
        assert_eq!(base, table("[a]\nx = 1\ny = 3\n"));
    }

    #[test]
    fn secret_is_redacted() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
    }
}
