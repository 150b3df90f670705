//! Apps (tenants): their certificate and per-app settings.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

use crate::Error;
use crate::ErrorCode;
use crate::ids::AppId;
use crate::limits::Limits;
use crate::token;

/// What happens when a uid that is already online logs in again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MultiLogin {
    /// The earlier session ends with REMOTE_LOGIN (Agora's behaviour).
    #[default]
    Replace,
    /// Both sessions stay; peer messages reach every device.
    AllowMany,
}

#[derive(Clone, Debug)]
pub struct AppConfig {
    pub app_id: AppId,
    /// `None`: logins need no token (development only).
    pub certificate: Option<String>,
    pub multi_login: MultiLogin,
    pub limits: Limits,
    /// Credentials of the app's backends for the server API (HTTP Basic), any of which works.
    pub customer_keys: Vec<CustomerKey>,
    /// Where the app's events are POSTed, if anywhere.
    pub webhook: Option<Webhook>,
}

/// An app's webhook: events are POSTed to `url`, signed with `secret` (HMAC-SHA256).
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Webhook({}, secret hidden)", self.url)
    }
}

impl Webhook {
    /// Reads `URL` and `SECRET`; only `http://` URLs are supported.
    pub fn new(url: &str, secret: &str) -> Result<Webhook, Error> {
        if !url.starts_with("http://") {
            return Err(Error::invalid_argument(
                "a webhook URL starts with http:// (put a TLS-terminating proxy in front for https)",
            ));
        }
        if secret.is_empty() {
            return Err(Error::invalid_argument("a webhook needs a signing secret"));
        }
        Ok(Webhook {
            url: url.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// A customer key and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerKey {
    pub key: String,
    pub secret: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomerKey({}, secret hidden)", self.key)
    }
}

impl CustomerKey {
    /// Reads `KEY:SECRET`.
    pub fn parse(raw: &str) -> Result<CustomerKey, Error> {
        match raw.split_once(':') {
            Some((key, secret)) if !key.is_empty() && !secret.is_empty() => Ok(CustomerKey {
                key: key.to_owned(),
                secret: secret.to_owned(),
            }),
            _ => Err(Error::invalid_argument("a customer key is KEY:SECRET")),
        }
    }
}

impl AppConfig {
    pub fn new(app_id: AppId, certificate: Option<String>) -> Self {
        AppConfig {
            app_id,
            certificate,
            multi_login: MultiLogin::default(),
            limits: Limits::default(),
            customer_keys: Vec::new(),
            webhook: None,
        }
    }

    /// Whether `key` and `secret` are one of the app's customer keys (compared in constant time).
    pub fn accepts_customer(&self, key: &str, secret: &str) -> bool {
        self.customer_keys.iter().fold(false, |found, known| {
            found
                | (same_bytes(known.key.as_bytes(), key.as_bytes())
                    & same_bytes(known.secret.as_bytes(), secret.as_bytes()))
        })
    }

    /// Checks a login token. Returns when the login privilege ends (Unix seconds), if ever.
    pub fn authenticate(
        &self,
        uid: &str,
        token: &str,
        now_secs: u64,
    ) -> Result<Option<u64>, Error> {
        let Some(certificate) = &self.certificate else {
            return Ok(None);
        };
        match token::verify(token, self.app_id.as_str(), certificate, uid, now_secs) {
            Ok(grant) => Ok(grant.expires_at),
            Err(token::TokenError::Expired) => {
                Err(Error::new(ErrorCode::TokenExpired, "token has expired"))
            }
            Err(token::TokenError::Invalid) => Err(Error::new(
                ErrorCode::InvalidToken,
                "token does not verify for this app and user",
            )),
        }
    }
}

/// Compares without stopping at the first difference.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The apps a node serves. In a cluster the set changes at run time (`replace`), as meta's
/// copy changes; lookups take a snapshot.
#[derive(Debug, Default)]
pub struct AppDirectory {
    // A std lock: read at every login and limit lookup, written when meta's apps change; never
    // held across an await.
    apps: RwLock<Arc<HashMap<AppId, Arc<AppConfig>>>>,
}

impl AppDirectory {
    pub fn new(apps: impl IntoIterator<Item = AppConfig>) -> Self {
        let directory = AppDirectory::default();
        directory.replace(apps);
        directory
    }

    /// Serves `apps` from now on, instead of what was served.
    pub fn replace(&self, apps: impl IntoIterator<Item = AppConfig>) {
        let apps = apps
            .into_iter()
            .map(|app| (app.app_id.clone(), Arc::new(app)))
            .collect();
        *self.apps.write() = Arc::new(apps);
    }

    /// The apps served now.
    pub fn all(&self) -> Vec<Arc<AppConfig>> {
        self.apps.read().values().cloned().collect()
    }

    pub fn get(&self, raw_app_id: &str) -> Result<Arc<AppConfig>, Error> {
        let app_id = AppId::parse(raw_app_id)?;
        self.apps
            .read()
            .get(&app_id)
            .cloned()
            .ok_or_else(|| Error::new(ErrorCode::InvalidAppId, "no app with this id"))
    }
}
