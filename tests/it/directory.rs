//! The LDAP directory as `scripts/services up` loads it from `tests/data/ldap/directory.ldif`:
//! the service account binds, and user groups resolve to their members through `memberOf`.

use ccass::auth::{Directory, DirectoryError};

use crate::harness::test_config;

#[tokio::test]
async fn the_fixture_directory_answers_group_membership() {
    // Goal: the directory layout the auth service will read is in place.
    // Method: bind as the service account, then list members of predefined user groups.
    let directory = Directory::new(test_config().directory);
    if let Err(error) = directory.ping().await {
        crate::harness::skip("ldap directory", error);
        return;
    }
    let authorisers: Vec<String> = directory
        .users_in_group("si-authorise")
        .await
        .unwrap()
        .into_iter()
        .map(|user| user.dn)
        .collect();
    for expected in [
        "uid=auth1,ou=B01234,ou=participants,dc=ccass,dc=test",
        "uid=auth1,ou=B05678,ou=participants,dc=ccass,dc=test",
        "uid=ops1,ou=C00123,ou=participants,dc=ccass,dc=test",
    ] {
        assert!(
            authorisers.iter().any(|dn| dn == expected),
            "{expected} not in {authorisers:?}"
        );
    }
    let admins = directory.users_in_group("participant-admin").await.unwrap();
    assert_eq!(admins.len(), 1, "{admins:?}");
    assert_eq!(admins[0].uid, "admin1");
    assert!(
        directory
            .users_in_group("no-such-group")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_the_url() {
    // Goal: the directory fails closed: a bad service password is an error naming the server.
    let mut config = test_config().directory;
    if let Err(error) = Directory::new(config.clone()).ping().await {
        crate::harness::skip("ldap directory", error);
        return;
    }
    config.bind_password = ccass::config::Secret::new("wrong".to_owned());
    let error = Directory::new(config.clone()).ping().await.unwrap_err();
    assert!(
        matches!(error, DirectoryError::Unavailable { ref url, .. } if *url == config.url),
        "{error}"
    );
    assert!(
        !error.to_string().contains("wrong"),
        "no secret in errors: {error}"
    );
}
