//! A client of the cloud's HTTPS API for the tests, and the accounts they start from.

use super::Cloud;
use serde_json::{json, Value as Json};
use std::path::PathBuf;

/// A client of the API.
pub struct Client {
    pub url: String,
    pub ca: PathBuf,
}

/// How a request authenticates.
#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(String),
    /// A device's client certificate (chain file and key file).
    Device(PathBuf, PathBuf),
}

impl Client {
    pub fn new(cloud: &Cloud) -> Client {
        Client {
            url: cloud.api_url(),
            ca: cloud.data.join("pki/ca.crt"),
        }
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        auth: &Auth,
        headers: &[(&str, &str)],
        body: Option<Json>,
    ) -> (u16, Json) {
        let bearer;
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        let mut client = None;
        match auth {
            Auth::None => {}
            Auth::Bearer(t) => {
                bearer = format!("Bearer {t}");
                h.push(("authorization", bearer.as_str()));
            }
            Auth::Device(cert, key) => {
                let chain = fieldgate::tls::load_certs(cert).unwrap();
                let key = fieldgate::identity::file::FileKey::load(key).unwrap();
                client = Some((
                    chain,
                    std::sync::Arc::new(key) as std::sync::Arc<dyn fieldgate::identity::Key>,
                ));
            }
        }
        let (status, bytes) = fieldgate::identity::enroll::https_request(
            method.parse().unwrap(),
            &self.url,
            path,
            &self.ca,
            client,
            &h,
            body.map(|b| serde_json::to_vec(&b).unwrap()),
        )
        .await
        .unwrap();
        let json = if bytes.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{method} {path}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, json)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: &Auth,
        body: Option<Json>,
    ) -> (u16, Json) {
        self.call_with(method, path, auth, &[], body).await
    }

    /// A call that must succeed (2xx); returns the body.
    pub async fn ok(&self, method: &str, path: &str, auth: &Auth, body: Option<Json>) -> Json {
        let (status, json) = self.call(method, path, auth, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {json}"
        );
        json
    }

    /// Self-registration: `email` (with `PASSWORD`) owns the new tenant `tenant`.
    pub async fn register(&self, email: &str, tenant: &str) {
        self.ok(
            "POST",
            "/v1/users",
            &Auth::None,
            Some(json!({"email": email, "password": PASSWORD, "tenant": tenant})),
        )
        .await;
    }

    pub async fn login(&self, email: &str) -> Auth {
        let s = self
            .ok(
                "POST",
                "/v1/sessions",
                &Auth::None,
                Some(json!({"email": email, "password": PASSWORD})),
            )
            .await;
        Auth::Bearer(s["token"].as_str().unwrap().to_string())
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

pub fn system_account(cloud: &Cloud, email: &str) {
    system_account_by(cloud.cli(), email)
}

/// A system account with `PASSWORD`, made by `cli` (`fieldgate-cloud` with its data
/// directory and database).
pub fn system_account_by(mut cli: std::process::Command, email: &str) {
    use std::io::Write;
    let mut child = cli
        .args(["system-account", "--email", email])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
}

/// A cloud's API with a system account, tenant `acme` owned by owner@acme.example, and
/// device `pump-1` registered and claimed by it: (client, owner's session).
pub async fn acme_with_pump(cloud: &Cloud) -> (Client, Auth) {
    let api = Client::new(cloud);
    system_account(cloud, "factory@fieldgate.example");
    let sys = api.login("factory@fieldgate.example").await;
    api.register("owner@acme.example", "acme").await;
    let owner = api.login("owner@acme.example").await;
    let device = json!({"device": "pump-1", "claim_code": "PUMP-1-CODE"});
    api.ok("POST", "/v1/system/devices", &sys, Some(device.clone()))
        .await;
    api.ok("POST", "/v1/tenants/acme/devices", &owner, Some(device))
        .await;
    (api, owner)
}
