//! `GET /dashboard`: one page over the admin API (it asks for the admin token
//! and keeps it for the tab). It holds no data itself, so serving it needs no
//! token.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../../assets/dashboard.html");

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
