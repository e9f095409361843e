//! Single sign-on against a real Dex: the provider client runs the whole code flow (discovery,
//! the password form, the code exchange with PKCE, ID token checks), and a refresh holds until
//! Dex's admin revokes the user's tokens.

use crate::common::dex::{self, Dex, User};
use portcullis::sso::http::IdpHttp;
use portcullis::sso::oidc::{Provider, Refreshed, discover};
use std::sync::Arc;
use std::time::Duration;

/// Where Dex sends the browser back; the test reads the code off the redirect, so nothing listens.
const REDIRECT: &str = "http://127.0.0.1:9/sso/callback";
const SCOPES: [&str; 5] = ["openid", "email", "profile", "groups", "offline_access"];

async fn provider(dex: &Dex) -> Arc<Provider> {
    let http = IdpHttp::new(vec![dex.origin.clone()], Duration::from_secs(10)).unwrap();
    let metadata = discover(&http, &dex.issuer).await.unwrap();
    Provider::new(http, metadata, dex::CLIENT_ID, dex::CLIENT_SECRET, REDIRECT, "groups").unwrap()
}

#[tokio::test]
async fn a_dex_login_names_the_user_with_groups_and_a_refresh_holds_until_dex_revokes_it() {
    let Some(binary) = dex::binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ada = User::new("ada@example.com", &["ops"]);
    let dex = Dex::start(&binary, dir.path(), std::slice::from_ref(&ada), REDIRECT).await;
    let provider = provider(&dex).await;

    let scopes: Vec<String> = SCOPES.iter().map(|scope| (*scope).to_owned()).collect();
    let authorization = provider.authorize(&scopes);
    let (code, state) = dex.log_in(&authorization.url, &ada.email).await;
    assert_eq!(state, authorization.state, "the callback carries the state this server made");
    let identity = provider.finish(&code, &authorization.pkce_verifier, &authorization.nonce).await.unwrap();
    assert_eq!((identity.email.as_str(), identity.issuer.as_str()), (ada.email.as_str(), dex.issuer.as_str()));
    assert_eq!(identity.groups, ["ops"]);
    let refresh_token = identity.refresh_token.clone().expect("offline_access gives a refresh token");
    assert!(
        provider.finish(&code, &authorization.pkce_verifier, &authorization.nonce).await.is_err(),
        "a code is good once"
    );

    // Still a user: the refresh holds, with the groups as they are now.
    let refresh_token = match provider.refresh(&refresh_token).await.unwrap() {
        Refreshed::Valid { groups, refresh_token: next } => {
            assert_eq!(groups.as_deref(), Some(&["ops".to_owned()][..]));
            next.filter(|next| *next != refresh_token).expect("Dex rotates refresh tokens")
        }
        revoked => panic!("refused while still a user: {revoked:?}"),
    };

    // The IdP's admin revokes the user's tokens (as when someone leaves): the refresh is a
    // refused grant, which is what disables a user; Dex says so with 400 invalid_request.
    dex.revoke_refresh(&identity.subject);
    match provider.refresh(&refresh_token).await {
        Ok(Refreshed::Revoked(why)) => assert!(why.contains("invalid_request"), "{why}"),
        other => panic!("a revoked refresh token must read as a refused grant: {other:?}"),
    }
}
