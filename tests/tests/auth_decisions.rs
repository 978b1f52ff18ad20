//! End to end: Envoy's own authentication and authorization filters (jwt_authn, RBAC, ext_authz,
//! basic_auth, an mTLS listener) decide, and the Warden filter in front of them records who the client
//! was and what was decided, without ever storing a credential.
//!
//! Each test first asserts what Envoy answered the client, so a failure there is Envoy's
//! configuration (`envoy/auth.yaml.tmpl`), and a failure after it is the record.

use serde_json::{Value, json};
use std::time::Duration;
use warden_e2e::Client;
use warden_e2e::auth::{
    ALICE_COMMON_NAME, ALICE_DNS_SAN, ALICE_URI_SAN, API_KEY_HEADER, AUDIENCE, AuthStack,
    BASIC_USER, BILLING_API_KEY, ISSUER, basic_authorization, claims, jwt_signature, now_secs,
    random_hex,
};
use warden_e2e::collector::encode_query_value;
use warden_e2e::secrets::{assert_not_in_files, assert_not_in_text};

const HOUR: Duration = Duration::from_secs(3600);

/// The one record whose path starts with `path`, once it has arrived.
async fn record_for(auth: &AuthStack, path: &str) -> Value {
    let mut records = auth
        .stack
        .wait_for_records(&format!("path_prefix={}", encode_query_value(path)), 1)
        .await;
    records.remove(0)
}

/// A request to send: path, headers, the status Envoy must answer.
type Request<'a> = (String, Vec<(&'a str, String)>, u16);

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts the decision fields of a denial.
fn assert_denied(record: &Value, mechanism: &str, deny_kind: &str, reason: &str) {
    assert_eq!(record["decision"], "deny", "decision: {record:#}");
    assert_eq!(record["mechanism"], mechanism, "mechanism: {record:#}");
    assert_eq!(record["deny_kind"], deny_kind, "deny_kind: {record:#}");
    assert_eq!(record["reason"], reason, "reason: {record:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_jwt_is_recorded_as_an_allow_with_its_principal_and_claims() {
    let auth = AuthStack::start().await;
    let token = auth.token(&claims("alice", Some("admin"), HOUR));
    let client = Client::from("127.0.0.1");

    let response = client
        .get_with(
            &auth.url("/api/orders"),
            &[("authorization", &bearer(&token))],
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");

    let record = record_for(&auth, "/api/orders").await;
    assert_eq!(record["status"], 200);
    assert_eq!(record["principal"], "alice", "{record:#}");
    assert_eq!(record["principal_source"], "jwt", "{record:#}");
    assert_eq!(record["principal_issuer"], ISSUER, "{record:#}");
    assert_eq!(
        record["principal_audiences"],
        json!([AUDIENCE]),
        "{record:#}"
    );
    assert_eq!(
        record["principal_claims"]["email"], "alice@warden.test",
        "{record:#}"
    );
    assert_eq!(
        record["principal_claims"]["client_id"], "alice-cli",
        "{record:#}"
    );
    assert_eq!(record["principal_claims"]["role"], "admin", "{record:#}");
    assert_eq!(record["decision"], "allow", "{record:#}");
    assert_eq!(record["mechanism"], "jwt_authn", "{record:#}");
    assert!(record["deny_kind"].is_null(), "{record:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_jwts_are_recorded_as_authentication_denials_with_envoys_reason() {
    let auth = AuthStack::start().await;
    let now = now_secs();
    let mut expired = claims("alice", Some("admin"), HOUR);
    expired["iat"] = json!(now - 7200);
    // Well past jwt_authn's default 60 s clock skew.
    expired["exp"] = json!(now - 3600);
    let mut wrong_issuer = claims("alice", Some("admin"), HOUR);
    wrong_issuer["iss"] = json!("https://issuer.evil.test");
    let mut wrong_audience = claims("alice", Some("admin"), HOUR);
    wrong_audience["aud"] = json!("someone-else");
    let forged = auth
        .materials
        .impostor
        .sign(&claims("alice", Some("admin"), HOUR))
        .expect("sign");

    // (path, token, status, deny kind, Envoy's response code details). jwt_authn answers 403,
    // not 401, to a verified token meant for another audience.
    let cases: [(&str, Option<String>, u16, &str, &str); 5] = [
        (
            "/api/expired",
            Some(auth.token(&expired)),
            401,
            "authentication",
            "jwt_authn_access_denied{Jwt_is_expired}",
        ),
        (
            "/api/wrong-issuer",
            Some(auth.token(&wrong_issuer)),
            401,
            "authentication",
            "jwt_authn_access_denied{Jwt_issuer_is_not_configured}",
        ),
        (
            "/api/wrong-audience",
            Some(auth.token(&wrong_audience)),
            403,
            "authorization",
            "jwt_authn_access_denied{Audiences_in_Jwt_are_not_allowed}",
        ),
        (
            "/api/bad-signature",
            Some(forged),
            401,
            "authentication",
            "jwt_authn_access_denied{Jwt_verification_fails}",
        ),
        (
            "/api/missing",
            None,
            401,
            "authentication",
            "jwt_authn_access_denied{Jwt_is_missing}",
        ),
    ];
    let client = Client::from("127.0.0.1");
    for (path, token, status, _, _) in &cases {
        let headers = token
            .iter()
            .map(|t| ("authorization", bearer(t)))
            .collect::<Vec<_>>();
        let headers = headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect::<Vec<_>>();
        let response = client.get_with(&auth.url(path), &headers).await;
        assert_eq!(response.status, *status, "{path}: {response:?}");
    }

    for (path, _, status, deny_kind, reason) in &cases {
        let record = record_for(&auth, path).await;
        assert_eq!(record["status"], *status, "{path}: {record:#}");
        // A token that failed verification names nobody: its claims are unproven.
        assert!(record["principal"].is_null(), "{path}: {record:#}");
        assert_denied(&record, "jwt_authn", deny_kind, reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_path_without_the_admin_role_is_recorded_as_an_rbac_denial_naming_the_policy() {
    let auth = AuthStack::start().await;
    let admin = auth.token(&claims("alice", Some("admin"), HOUR));
    let reader = auth.token(&claims("carol", Some("reader"), HOUR));
    let client = Client::from("127.0.0.1");

    let allowed = client
        .get_with(
            &auth.url("/admin/with-role"),
            &[("authorization", &bearer(&admin))],
        )
        .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    let denied = client
        .get_with(
            &auth.url("/admin/without-role"),
            &[("authorization", &bearer(&reader))],
        )
        .await;
    assert_eq!(denied.status, 403, "{denied:?}");

    let allowed = record_for(&auth, "/admin/with-role").await;
    assert_eq!(allowed["principal"], "alice", "{allowed:#}");
    assert_eq!(allowed["decision"], "allow", "{allowed:#}");
    assert_eq!(allowed["mechanism"], "jwt_authn", "{allowed:#}");

    let denied = record_for(&auth, "/admin/without-role").await;
    assert_eq!(denied["status"], 403);
    // Authenticated, then refused: the principal is known.
    assert_eq!(denied["principal"], "carol", "{denied:#}");
    assert_eq!(denied["principal_source"], "jwt", "{denied:#}");
    assert_denied(
        &denied,
        "rbac",
        "authorization",
        "rbac_access_denied_matched_policy[admin-requires-admin-role]",
    );
    assert_eq!(denied["policy"], "admin-requires-admin-role", "{denied:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_client_certificate_is_recorded_as_the_mtls_principal() {
    let auth = AuthStack::start().await;
    let alice = &auth.materials.pki.alice;
    let response = auth
        .mtls_client(Some(alice))
        .get(auth.mtls_url("/mtls/hello"))
        .send()
        .await
        .expect("mTLS request with a trusted certificate");
    assert_eq!(response.status().as_u16(), 200);

    let record = record_for(&auth, "/mtls/hello").await;
    assert_eq!(record["principal"], ALICE_URI_SAN, "{record:#}");
    assert_eq!(record["principal_source"], "mtls", "{record:#}");
    assert_eq!(record["cert_uri_san"], ALICE_URI_SAN, "{record:#}");
    assert_eq!(record["cert_dns_san"], ALICE_DNS_SAN, "{record:#}");
    let subject = record["cert_subject"].as_str().unwrap_or_default();
    assert!(
        subject.contains(&format!("CN={ALICE_COMMON_NAME}")),
        "{record:#}"
    );
    assert_eq!(
        record["cert_fingerprint"],
        alice.fingerprint(),
        "{record:#}"
    );
    assert_ne!(record["decision"], "deny", "{record:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_missing_client_certificates_fail_the_handshake_and_leave_no_record() {
    let auth = AuthStack::start().await;
    let stranger = auth
        .mtls_client(Some(&auth.materials.pki.stranger))
        .get(auth.mtls_url("/mtls/stranger"))
        .send()
        .await;
    assert!(
        stranger.is_err(),
        "a certificate from an unknown CA was accepted: {stranger:?}"
    );
    let anonymous = auth
        .mtls_client(None)
        .get(auth.mtls_url("/mtls/anonymous"))
        .send()
        .await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate was accepted: {anonymous:?}"
    );

    let envoy = &auth.stack.envoy;
    warden_e2e::eventually("Envoy to count both failed handshakes", || async {
        let unknown = envoy
            .stat("ingress_mtls.ssl.fail_verify_error")
            .await
            .unwrap_or(0);
        let missing = envoy
            .stat("ingress_mtls.ssl.fail_verify_no_cert")
            .await
            .unwrap_or(0);
        if unknown >= 1 && missing >= 1 {
            Ok(())
        } else {
            Err(format!(
                "fail_verify_error={unknown} fail_verify_no_cert={missing}"
            ))
        }
    })
    .await;

    // A good request afterwards: once its record is in, nothing else is.
    let good = auth
        .mtls_client(Some(&auth.materials.pki.alice))
        .get(auth.mtls_url("/mtls/after"))
        .send()
        .await
        .expect("mTLS request with a trusted certificate");
    assert_eq!(good.status().as_u16(), 200);
    let records = auth.stack.wait_for_records("since=5m", 1).await;
    assert_eq!(records[0]["path"], "/mtls/after", "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_records_the_user_on_success_and_the_failure_without_the_password() {
    let auth = AuthStack::start().await;
    let right = basic_authorization(BASIC_USER, &auth.materials.basic_password);
    let wrong_password = format!("wrong-{}", random_hex(8));
    let wrong = basic_authorization(BASIC_USER, &wrong_password);
    let client = Client::from("127.0.0.1");

    assert_eq!(
        client
            .get_with(&auth.url("/basic/right"), &[("authorization", &right)])
            .await
            .status,
        200
    );
    assert_eq!(
        client
            .get_with(&auth.url("/basic/wrong"), &[("authorization", &wrong)])
            .await
            .status,
        401
    );
    assert_eq!(client.get(&auth.url("/basic/none")).await.status, 401);

    let right_record = record_for(&auth, "/basic/right").await;
    assert_eq!(right_record["principal"], BASIC_USER, "{right_record:#}");
    assert_eq!(
        right_record["principal_source"], "basic_auth",
        "{right_record:#}"
    );
    assert_eq!(right_record["decision"], "allow", "{right_record:#}");
    assert_eq!(right_record["mechanism"], "basic_auth", "{right_record:#}");

    let wrong_record = record_for(&auth, "/basic/wrong").await;
    // A user name with a wrong password is a claim, not a principal: kept apart, so failures
    // can be counted per attacked account.
    assert!(wrong_record["principal"].is_null(), "{wrong_record:#}");
    assert_eq!(wrong_record["claimed_user"], BASIC_USER, "{wrong_record:#}");
    assert_denied(
        &wrong_record,
        "basic_auth",
        "authentication",
        "invalid_credential_for_basic_auth",
    );

    let none_record = record_for(&auth, "/basic/none").await;
    assert_denied(
        &none_record,
        "basic_auth",
        "authentication",
        "no_credential_for_basic_auth",
    );

    let secrets = [
        auth.materials.basic_password.as_str(),
        wrong_password.as_str(),
        right.trim_start_matches("Basic "),
        wrong.trim_start_matches("Basic "),
    ];
    for record in [&right_record, &wrong_record] {
        assert_not_in_text("the record", &record.to_string(), &secrets);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basic_auth_user_nobody_checked_is_recorded_as_claimed_never_as_the_principal() {
    // The spoofing found in review: `Authorization: Basic demo:<anything>` on a route without
    // basic authentication was recorded as principal `demo`, mechanism basic_auth, allow.
    let auth = AuthStack::start().await;
    let spoofed = basic_authorization("demo", "anything");
    let client = Client::from("127.0.0.1");
    let response = client
        .get_with(
            &auth.url("/public/spoofed"),
            &[("authorization", &spoofed), ("x-warden-basic-user", "demo")],
        )
        .await;
    assert_eq!(response.status, 200);
    let record = record_for(&auth, "/public/spoofed").await;
    assert!(record["principal"].is_null(), "{record:#}");
    assert!(record["principal_source"].is_null(), "{record:#}");
    assert_eq!(record["claimed_user"], "demo", "{record:#}");
    assert_eq!(record["mechanism"], "none", "{record:#}");
    let cli = auth.stack.collector.cli();
    let table = cli.ok(&["query", "--since", "5m", "--path-prefix", "/public/spoofed"]);
    assert!(table.contains("(claimed) demo"), "{table}");
    let report = cli.ok(&["report", "access", "--since", "5m", "--format", "json"]);
    assert!(
        !report.contains("\"demo\""),
        "a claim is not a principal in the access report"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_password_cookie_or_api_key_reaches_the_database_files() {
    let auth = AuthStack::start().await;
    let valid = auth.token(&claims("alice", Some("admin"), HOUR));
    let mut expired_claims = claims("alice", Some("admin"), HOUR);
    expired_claims["exp"] = json!(now_secs() - 3600);
    let expired = auth.token(&expired_claims);
    let in_query = auth.token(&claims("dave", None, HOUR));
    let cookie = format!("cookie-{}", random_hex(12));
    let api_key = format!("ak-{}", random_hex(16));
    let wrong_password = format!("wrong-{}", random_hex(8));
    let right_basic = basic_authorization(BASIC_USER, &auth.materials.basic_password);
    let wrong_basic = basic_authorization(BASIC_USER, &wrong_password);
    let session = format!("session={cookie}");
    let valueless = format!("vl{}", random_hex(16));
    let path_token = random_hex(20);
    let referer_code = format!("rc{}", random_hex(16));
    let client = Client::from("127.0.0.1");

    let requests: Vec<Request> = vec![
        (
            "/api/valid".into(),
            vec![
                ("authorization", bearer(&valid)),
                ("cookie", session.clone()),
            ],
            200,
        ),
        (
            "/api/expired".into(),
            vec![("authorization", bearer(&expired))],
            401,
        ),
        // jwt_authn also reads `access_token` from the query string by default.
        (
            format!("/public/query?access_token={in_query}"),
            vec![],
            200,
        ),
        (
            "/basic/right".into(),
            vec![("authorization", right_basic.clone())],
            200,
        ),
        (
            "/basic/wrong".into(),
            vec![("authorization", wrong_basic.clone())],
            401,
        ),
        (
            "/public/api-key".into(),
            vec![(API_KEY_HEADER, api_key.clone())],
            200,
        ),
        (
            "/key/verified".into(),
            vec![(API_KEY_HEADER, BILLING_API_KEY.to_string())],
            200,
        ),
        (
            "/key/wrong".into(),
            vec![(API_KEY_HEADER, api_key.clone())],
            401,
        ),
        // Redaction gaps found in review: a parameter without `=`, a token in a path segment,
        // the query string of a captured Referer.
        (format!("/public/valueless?{valueless}"), vec![], 200),
        (format!("/public/reset/{path_token}"), vec![], 200),
        (
            "/public/from-referer".into(),
            vec![(
                "referer",
                format!("https://app.example/cb?code={referer_code}"),
            )],
            200,
        ),
    ];
    for (path, headers, status) in &requests {
        let headers = headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect::<Vec<_>>();
        let response = client.get_with(&auth.url(path), &headers).await;
        assert_eq!(response.status, *status, "{path}: {response:?}");
    }
    let records = auth
        .stack
        .wait_for_records("since=5m", requests.len())
        .await;

    // A key nothing checked is a claim named by its fingerprint, never a principal; the key
    // Envoy's api_key_auth checked names its client.
    let claimed = record_for(&auth, "/public/api-key").await;
    assert!(claimed["principal"].is_null(), "{claimed:#}");
    let claim = claimed["claimed_user"].as_str().unwrap_or_default();
    assert!(
        claim.starts_with("api-key:") && claim.len() > 20,
        "{claimed:#}"
    );
    let verified = record_for(&auth, "/key/verified").await;
    assert_eq!(
        (&verified["principal_source"], &verified["principal"]),
        (&json!("api_key"), &json!("billing")),
        "{verified:#}"
    );
    let wrong = record_for(&auth, "/key/wrong").await;
    assert!(wrong["principal"].is_null(), "{wrong:#}");
    assert_eq!(wrong["claimed_user"], claimed["claimed_user"], "{wrong:#}");

    let secrets = [
        valid.as_str(),
        jwt_signature(&valid),
        expired.as_str(),
        jwt_signature(&expired),
        in_query.as_str(),
        jwt_signature(&in_query),
        cookie.as_str(),
        api_key.as_str(),
        auth.api_key_secret.as_str(),
        auth.materials.basic_password.as_str(),
        wrong_password.as_str(),
        right_basic.trim_start_matches("Basic "),
        wrong_basic.trim_start_matches("Basic "),
        valueless.as_str(),
        path_token.as_str(),
        referer_code.as_str(),
    ];
    let text = serde_json::to_string(&records).expect("json");
    assert_not_in_text("a record", &text, &secrets);
    assert_not_in_files(&auth.stack.collector.data_dir(), &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_identities_are_recorded_and_a_client_cannot_forge_one() {
    let auth = AuthStack::start().await;
    let client = Client::from("127.0.0.1");
    let get = |path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let (client, url) = (&client, auth.url(path));
        async move { client.get_with(&url, &headers).await.status }
    };
    assert_eq!(
        get("/ext/allowed", vec![("x-demo-user", "dana")]).await,
        200
    );
    assert_eq!(
        get("/ext/refused", vec![("x-demo-user", "mallory")]).await,
        403
    );
    // The client claims to be "admin"; the authorizer says "erin": only Envoy's word counts.
    let overridden = vec![("x-demo-user", "erin"), ("x-auth-user", "admin")];
    assert_eq!(get("/ext/overridden", overridden).await, 200);
    // Outside ext_authz the header is the client's alone and names nobody.
    assert_eq!(
        get("/anything/forged", vec![("x-auth-user", "admin")]).await,
        200
    );

    let allowed = record_for(&auth, "/ext/allowed").await;
    assert_eq!(allowed["principal"], "dana", "{allowed:#}");
    assert_eq!(allowed["principal_source"], "ext_authz", "{allowed:#}");
    assert_eq!(allowed["decision"], "allow", "{allowed:#}");
    assert_eq!(allowed["mechanism"], "ext_authz", "{allowed:#}");

    let refused = record_for(&auth, "/ext/refused").await;
    assert_denied(&refused, "ext_authz", "authorization", "ext_authz_denied");

    let overridden = record_for(&auth, "/ext/overridden").await;
    assert_eq!(overridden["principal"], "erin", "{overridden:#}");

    let forged = record_for(&auth, "/anything/forged").await;
    assert!(
        forged["principal"].is_null(),
        "a client-sent identity header counted: {forged:#}"
    );
}
