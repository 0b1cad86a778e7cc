//! Generated references stay current: docs/metrics.md is `ccass metrics list --markdown`;
//! the Helm chart's values schema names exactly config/base.toml's sections and keys, and
//! the chart embeds base.toml itself.

use std::process::Command;

use crate::harness::repo_root;

#[test]
fn metrics_reference_equals_the_command_output() {
    let output = Command::new(env!("CARGO_BIN_EXE_ccass"))
        .args(["metrics", "list", "--markdown"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    let committed = std::fs::read_to_string(repo_root().join("docs/metrics.md")).unwrap();
    assert!(
        generated == committed,
        "docs/metrics.md is stale: run `cargo run -- metrics list --markdown > docs/metrics.md`"
    );
    assert!(generated.contains("`ccass_statements_pages_queued_total` | counter"));
}

/// Every module that describes metrics (a `metrics.rs` with `describe_all`) is in the
/// reference, so a new module's metrics cannot be left out of docs/metrics.md.
#[test]
fn every_metrics_module_is_in_the_reference() {
    let output = Command::new(env!("CARGO_BIN_EXE_ccass"))
        .args(["metrics", "list"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(output.status.success());
    let listed = String::from_utf8(output.stdout).unwrap();
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("src")).unwrap() {
        let path = entry.unwrap().path().join("metrics.rs");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let module = path.parent().unwrap().file_name().unwrap();
        // telemetry's own metrics are process-wide (ccass_build_info, ccass_ops_*).
        if !text.contains("pub fn describe_all") || module == "telemetry" {
            continue;
        }
        modules.push(module.to_string_lossy().into_owned());
    }
    assert!(modules.len() >= 4, "found only {modules:?}");
    for module in modules {
        assert!(
            listed.contains(&format!("ccass_{module}_")),
            "src/{module}/metrics.rs describes metrics that `ccass metrics list` does not show: \
             add its describe_all to DESCRIBERS in src/telemetry/catalogue.rs"
        );
    }
}

#[test]
fn chart_values_schema_mirrors_the_config_keys() {
    let base: toml::Table = std::fs::read_to_string(repo_root().join("config/base.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("charts/ccass/values.schema.json")).unwrap(),
    )
    .unwrap();
    let config = &schema["properties"]["config"];
    assert_eq!(
        config["additionalProperties"],
        serde_json::Value::Bool(false)
    );
    let keys = |section: &serde_json::Value| -> Vec<String> {
        let mut keys: Vec<String> = section["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let mut sections: Vec<String> = base.keys().cloned().collect();
    sections.sort();
    let stale =
        "charts/ccass/values.schema.json is stale: run `scripts/chart-check --update-schema`";
    assert_eq!(keys(config), sections, "{stale}");
    for (section, table) in &base {
        let in_schema = &config["properties"][section.as_str()];
        assert_eq!(
            in_schema["additionalProperties"],
            serde_json::Value::Bool(false)
        );
        let mut expected: Vec<String> = table.as_table().unwrap().keys().cloned().collect();
        expected.sort();
        assert_eq!(keys(in_schema), expected, "[{section}]: {stale}");
    }
    let embedded = std::fs::read_to_string(repo_root().join("charts/ccass/files/base.toml"));
    assert_eq!(
        embedded.unwrap(),
        std::fs::read_to_string(repo_root().join("config/base.toml")).unwrap(),
        "charts/ccass/files/base.toml must be config/base.toml (a symbolic link)"
    );
}
