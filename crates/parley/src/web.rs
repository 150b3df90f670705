//! The demo page `parley dev` serves at `/`: the Web SDK and a small app built from `sdk/js` into
//! `crates/parley/web` (committed, so the binary builds without npm; `scripts/test` checks the
//! committed build is current). Also, for the page only and only in `parley dev`: the dev app's
//! id, and a token for a uid when the app has a certificate.

use axum::Json;
use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use parley_core::app::AppConfig;
use parley_core::ids::UserId;
use serde::Deserialize;
use serde_json::json;

/// The page's files: path, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../web/index.html"),
    ),
    ("/style.css", "text/css", include_str!("../web/style.css")),
    (
        "/demo/app.js",
        "text/javascript",
        include_str!("../web/demo/app.js"),
    ),
    (
        "/src/index.js",
        "text/javascript",
        include_str!("../web/src/index.js"),
    ),
    (
        "/src/client.js",
        "text/javascript",
        include_str!("../web/src/client.js"),
    ),
    (
        "/src/channel.js",
        "text/javascript",
        include_str!("../web/src/channel.js"),
    ),
    (
        "/src/emitter.js",
        "text/javascript",
        include_str!("../web/src/emitter.js"),
    ),
    (
        "/src/invitation.js",
        "text/javascript",
        include_str!("../web/src/invitation.js"),
    ),
    (
        "/src/messages.js",
        "text/javascript",
        include_str!("../web/src/messages.js"),
    ),
    (
        "/src/transport.js",
        "text/javascript",
        include_str!("../web/src/transport.js"),
    ),
    (
        "/src/types.js",
        "text/javascript",
        include_str!("../web/src/types.js"),
    ),
];

/// Seconds a token made for the page lasts.
const TOKEN_LIFETIME: u32 = 24 * 3600;

pub fn routes(app: AppConfig) -> Router {
    let mut router = Router::new();
    for (path, content_type, body) in FILES {
        router = router.route(
            path,
            get(move || async move { ([(header::CONTENT_TYPE, *content_type)], *body) }),
        );
    }
    let app_id = app.app_id.to_string();
    router
        .route(
            "/demo/config.json",
            get(move || async move { Json(json!({ "appId": app_id })) }),
        )
        .route(
            "/demo/token",
            get(move |query: Query<TokenQuery>| {
                let app = app.clone();
                async move { token(&app, &query.uid) }
            }),
        )
}

#[derive(Deserialize)]
struct TokenQuery {
    uid: String,
}

fn token(app: &AppConfig, uid: &str) -> Response {
    if let Err(error) = UserId::parse(uid) {
        let body = json!({ "code": error.code.as_str_name(), "message": error.message });
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let token = match &app.certificate {
        Some(certificate) => {
            let now = parley_core::time::unix_secs() as u32;
            parley_core::token::build_007(
                app.app_id.as_str(),
                certificate,
                uid,
                TOKEN_LIFETIME,
                now,
                rand::random_range(1..99_999_999),
            )
        }
        None => String::new(),
    };
    Json(json!({ "token": token })).into_response()
}
