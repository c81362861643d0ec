//! Update images for gateways: `GET /v1/device/images/{sha256}`, authenticated by the
//! gateway's client certificate, for images its tenant published. A `Range: bytes=N-`
//! request resumes a download where it stopped (206), as often as it takes.

use super::{Api, Peer, Refusal};
use crate::cloud::code::Code;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Api>> {
    Router::new().route("/v1/device/images/{sha256}", get(image))
}

/// The first byte a `Range` header asks for: `bytes=N-` or `bytes=N-M` (one range).
fn range_start(headers: &HeaderMap) -> Result<Option<u64>, Refusal> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let bad = || Refusal::new(Code::BadRequest, "Range must be one range, `bytes=N-`");
    let v = v.to_str().map_err(|_| bad())?;
    let spec = v.strip_prefix("bytes=").ok_or_else(bad)?;
    let (start, _) = spec.split_once('-').ok_or_else(bad)?;
    start.trim().parse().map(Some).map_err(|_| bad())
}

async fn image(
    State(api): State<Arc<Api>>,
    Extension(peer): Extension<Peer>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let Some(device) = peer.device.clone() else {
        return Err(Refusal::new(
            Code::CertificateRequired,
            "update images are for gateways: present the device's client certificate",
        ));
    };
    let start = range_start(&headers)?;
    let a = api.clone();
    let path = super::blocking(move || {
        if let Some(reason) = a
            .enrollment
            .registry
            .revoked(&device)
            .map_err(|e| Refusal::new(Code::Internal, e.to_string()))?
        {
            return Err(Refusal::new(
                Code::Revoked,
                format!("{device} is revoked: {reason}"),
            ));
        }
        let tenant = a
            .iam()
            .devices()
            .owner(&device)
            .map_err(|e| Refusal::new(Code::Internal, e.message()))?
            .ok_or_else(|| {
                Refusal::new(
                    Code::DeviceUnclaimed,
                    format!("{device} belongs to no tenant"),
                )
            })?;
        let not_found = || Refusal::new(Code::NotFound, format!("no image {sha256} for {device}"));
        let path = a.releases.image_path(&sha256).ok_or_else(not_found)?;
        let published = a
            .releases
            .has_image(&tenant, &sha256)
            .map_err(|e| Refusal::new(Code::Internal, e.to_string()))?;
        if !published || !path.exists() {
            return Err(not_found());
        }
        Ok(path)
    })
    .await?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Refusal::new(Code::Internal, format!("{}: {e}", path.display())))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| Refusal::new(Code::Internal, e.to_string()))?
        .len();
    let from = start.unwrap_or(0);
    if from >= len && start.is_some() {
        return Err(Refusal::new(
            Code::RangeNotSatisfiable,
            format!("the image has {len} bytes; nothing from byte {from}"),
        ));
    }
    use tokio::io::AsyncSeekExt;
    file.seek(std::io::SeekFrom::Start(from))
        .await
        .map_err(|e| Refusal::new(Code::Internal, e.to_string()))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut res = (
        if start.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        },
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, (len - from).to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        body,
    )
        .into_response();
    if start.is_some() {
        res.headers_mut().insert(
            header::CONTENT_RANGE,
            format!("bytes {from}-{}/{len}", len.saturating_sub(1))
                .parse()
                .map_err(|_| Refusal::new(Code::Internal, "content-range"))?,
        );
    }
    Ok(res)
}
