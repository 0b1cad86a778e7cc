//! Configuration as shipped: every environment loads, bad keys are named, and the development
//! config points where `scripts/services` starts the servers.

use std::collections::BTreeMap;

use ccass::config::{self, ConfigError};

use crate::harness::repo_root;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn every_shipped_environment_loads() {
    for environment in ["dev", "test"] {
        config::load(&repo_root().join("config"), environment, no_env())
            .unwrap_or_else(|error| panic!("{environment}: {error}"));
    }
}

#[test]
fn a_missing_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo_root().join("config/base.toml")).unwrap();
    std::fs::write(
        dir.path().join("base.toml"),
        base.replace("pool_connections_max = 16\n", ""),
    )
    .unwrap();
    std::fs::write(dir.path().join("x.toml"), "").unwrap();
    let error = config::load(dir.path(), "x", no_env()).unwrap_err();
    assert!(
        matches!(error, ConfigError::Key { ref key, .. } if key == "hostdb"),
        "{error}"
    );
    assert!(
        error.to_string().contains("pool_connections_max"),
        "{error}"
    );
}

#[test]
fn a_bad_override_is_named() {
    let error = config::load(
        &repo_root().join("config"),
        "dev",
        [(
            "CCASS_BUS__PUBLISH_IN_FLIGHT_MAX".to_owned(),
            "many".to_owned(),
        )],
    )
    .unwrap_err();
    assert!(
        matches!(error, ConfigError::Override { ref variable, .. } if variable == "CCASS_BUS__PUBLISH_IN_FLIGHT_MAX"),
        "{error}"
    );
}

#[test]
fn an_unknown_key_is_an_error() {
    let error = config::load(
        &repo_root().join("config"),
        "dev",
        [("CCASS_HOSTDB__PROT".to_owned(), "1".to_owned())],
    )
    .unwrap_err();
    assert!(error.to_string().contains("prot"), "{error}");
}

#[test]
fn an_out_of_range_limit_is_named() {
    let error = config::load(
        &repo_root().join("config"),
        "dev",
        [(
            "CCASS_HOSTDB__POOL_CONNECTIONS_MAX".to_owned(),
            "0".to_owned(),
        )],
    )
    .unwrap_err();
    assert!(
        matches!(error, ConfigError::Key { ref key, .. } if key == "hostdb.pool_connections_max"),
        "{error}"
    );
}

#[test]
fn a_secret_never_reaches_the_debug_output() {
    let config = config::load(
        &repo_root().join("config"),
        "dev",
        [
            ("CCASS_HOSTDB__PASSWORD".to_owned(), "s3cr3t-pg".to_owned()),
            (
                "CCASS_DIRECTORY__BIND_PASSWORD".to_owned(),
                "s3cr3t-ldap".to_owned(),
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        config.hostdb.password.as_ref().unwrap().expose(),
        "s3cr3t-pg"
    );
    let printed = format!("{config:?} {config:#?}");
    assert!(!printed.contains("s3cr3t"), "{printed}");
}

/// `NAME="${NAME:-value}"` lines of scripts/services.env.
fn services_env() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("scripts/services.env")).unwrap();
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once("=\"${")?;
            let value = rest.split_once(":-")?.1.strip_suffix("}\"")?;
            Some((name.trim().to_owned(), value.to_owned()))
        })
        .collect()
}

#[test]
fn dev_and_test_config_point_at_the_servers_the_scripts_start() {
    // Goal: `scripts/services up` and `ccass` agree on where the servers are.
    let env = services_env();
    for environment in ["dev", "test"] {
        let config = config::load(&repo_root().join("config"), environment, no_env()).unwrap();
        assert_eq!(config.hostdb.host, env["PG_HOST"], "{environment}");
        assert_eq!(
            config.hostdb.port.to_string(),
            env["PG_PORT"],
            "{environment}"
        );
        assert_eq!(config.hostdb.user, env["PG_USER"], "{environment}");
        if environment == "dev" {
            assert_eq!(config.hostdb.database, env["PG_DATABASE"]);
        }
        assert_eq!(
            config.bus.url,
            format!("nats://{}:{}", env["NATS_HOST"], env["NATS_PORT"]),
            "{environment}"
        );
        assert_eq!(
            config.directory.url,
            format!("ldap://{}:{}", env["LDAP_HOST"], env["LDAP_PORT"]),
            "{environment}"
        );
        assert_eq!(config.directory.base_dn, env["LDAP_BASE_DN"]);
        assert_eq!(config.directory.bind_dn, env["LDAP_ADMIN_DN"]);
        assert_eq!(
            config.directory.bind_password.expose(),
            &env["LDAP_ADMIN_PASSWORD"]
        );
    }
}
