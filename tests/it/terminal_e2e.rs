//! The Terminal in real headless Chromium: `node tests/e2e/terminal.mjs` (playwright-core,
//! Debian's /usr/bin/chromium) drives the pages against the stack of [`super::terminal::World`]
//! with three users' client certificates. Screenshots: target/e2e-screenshots/.
//!
//! Needs `chromium` and `tests/e2e/node_modules` (`scripts/e2e-deps`, run by `scripts/test`);
//! with CCASS_TEST_SERVICES=1 their absence fails the test.

use std::path::Path;
use std::time::Duration;

use ccass::bus::auth::{AdminAction, AdminResult, UserRef};

use crate::harness::dates::settlement_date;
use crate::harness::{repo_root, skip};
use crate::terminal::{World, publish_counter, wait_status};

const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_missing() -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!(
            "{CHROMIUM} (apt-get install chromium; scripts/e2e-deps)"
        ));
    }
    if !repo_root()
        .join("tests/e2e/node_modules/playwright-core/package.json")
        .exists()
    {
        return Some("tests/e2e/node_modules (npm ci in tests/e2e; scripts/e2e-deps)".to_owned());
    }
    None
}

#[tokio::test]
async fn chromium_inputs_is_refused_self_authorisation_then_matches_and_settles_live() {
    // Goal: in a real browser, with client certificates and passwords: an SI input (with
    // validation as you type), its self-authorisation refused with the code's message,
    // authorisation by a second user, the SI matched against a PSS-sent counter-instruction,
    // an operator's run from the page, and "settled" shown on the SI's page by server-sent
    // events without a reload; screenshots of each step. Method: the stack in-process, the
    // counter-instruction published on INBOUND first, then node + playwright-core.
    if let Some(missing) = browser_missing() {
        skip("the browser for end-to-end tests", missing);
        return;
    }
    let Some(world) = World::start("terminal_e2e").await else {
        return;
    };
    // ops1 also gets si-authorise (by B01234's participant admin), so the page offers the
    // authorise button on the user's own input and the server must refuse it.
    let granted = world
        .auth
        .administer(
            &UserRef {
                participant: "B01234".into(),
                uid: "admin1".into(),
            },
            AdminAction::Grant {
                user: UserRef {
                    participant: "B01234".into(),
                    uid: "ops1".into(),
                },
                group: "si-authorise".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(granted, AdminResult::Applied);
    publish_counter(&world, "PSSE2E").await;
    wait_status(&world, "B05678", "PSSE2E", "unmatched").await;

    let user = |participant: &str, uid: &str| {
        let (certificate, key) = world.certificate(participant, uid);
        serde_json::json!({
            "certPath": certificate,
            "keyPath": key,
            "password": format!("ccass-dev-{participant}-{uid}"),
        })
    };
    let screenshots = repo_root().join("target/e2e-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    let config = serde_json::json!({
        "url": format!("https://localhost:{}", world.address.port()),
        "reference": "E2E1",
        "settlementDate": settlement_date().to_string(),
        "screenshots": screenshots,
        "users": {
            "maker": user("B01234", "ops1"),
            "checker": user("B01234", "auth1"),
            "operator": user("HKSCC0", "op1"),
        },
    });
    let child = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/e2e/terminal.mjs"))
        .env("E2E_CONFIG", config.to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), child)
        .await
        .expect("the browser run finished within 180 s")
        .expect("node started");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser run failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("e2e: ok"), "{stdout}");
    wait_status(&world, "B01234", "E2E1", "settled").await;
    let shots = std::fs::read_dir(&screenshots).unwrap().count();
    assert!(
        shots >= 8,
        "{shots} screenshots in {}",
        screenshots.display()
    );
}
