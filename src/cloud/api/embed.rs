//! Live values for other web pages: a script (`/v1/embed/live.js`) a site includes with a
//! read-only key bound to its origin, and a standalone page (`/v1/embed/live.html`)
//! configured by its URL fragment. The browser sends the page's origin with every
//! request the script makes, and the key is refused from any other (`key_origin_refused`).

use super::Api;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route(
            "/v1/embed/live.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "max-age=300"),
                    ],
                    include_str!("embed/live.js"),
                )
                    .into_response()
            }),
        )
        .route(
            "/v1/embed/live.html",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                        // Its own script and the API only; it may be framed anywhere
                        // (the key's origin list is what binds it to a site).
                        (
                            header::CONTENT_SECURITY_POLICY,
                            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
                        ),
                        (header::REFERRER_POLICY, "no-referrer"),
                    ],
                    include_str!("embed/live.html"),
                )
                    .into_response()
            }),
        )
}
