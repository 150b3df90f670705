//! Apps (tenants): their certificate and per-app settings.

use std::collections::HashMap;

use crate::Error;
use crate::ErrorCode;
use crate::ids::AppId;
use crate::limits::Limits;
use crate::token;

/// What happens when a uid that is already online logs in again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
}

impl AppConfig {
    pub fn new(app_id: AppId, certificate: Option<String>) -> Self {
        AppConfig {
            app_id,
            certificate,
            multi_login: MultiLogin::default(),
            limits: Limits::default(),
        }
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

/// The apps a node serves.
#[derive(Clone, Debug, Default)]
pub struct AppDirectory {
    apps: HashMap<AppId, AppConfig>,
}

impl AppDirectory {
    pub fn new(apps: impl IntoIterator<Item = AppConfig>) -> Self {
        AppDirectory {
            apps: apps
                .into_iter()
                .map(|app| (app.app_id.clone(), app))
                .collect(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &AppConfig> {
        self.apps.values()
    }

    pub fn get(&self, raw_app_id: &str) -> Result<&AppConfig, Error> {
        let app_id = AppId::parse(raw_app_id)?;
        self.apps
            .get(&app_id)
            .ok_or_else(|| Error::new(ErrorCode::InvalidAppId, "no app with this id"))
    }
}
