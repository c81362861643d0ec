//! Enrollment of new gateways and renewal of their certificates (see docs/identity.md).

use super::{blocking, parse, Api, Peer, Refusal};
use crate::cloud::code::Code;
use crate::enrollment::{ActivateRequest, CertResponse, EnrollAnswer, EnrollRequest, RenewRequest};
use axum::extract::{Extension, State};
use axum::routing::post;
use axum::{Json, Router};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/enroll", post(enroll))
        .route("/v1/enroll/activate", post(activate))
        .route("/v1/renew", post(renew))
}

async fn enroll(
    State(api): State<Arc<Api>>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> Result<Json<EnrollAnswer>, Refusal> {
    let req: EnrollRequest = parse(&body)?;
    blocking(move || {
        api.enrollment
            .enroll(&req, &peer.addr.to_string())
            .map_err(Refusal::from)
    })
    .await
    .map(Json)
}

async fn activate(
    State(api): State<Arc<Api>>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> Result<Json<CertResponse>, Refusal> {
    let req: ActivateRequest = parse(&body)?;
    blocking(move || {
        api.enrollment
            .activate(&req, &peer.addr.to_string())
            .map_err(Refusal::from)
    })
    .await
    .map(Json)
}

async fn renew(
    State(api): State<Arc<Api>>,
    Extension(peer): Extension<Peer>,
    body: axum::body::Bytes,
) -> Result<Json<EnrollAnswer>, Refusal> {
    let Some(device) = peer.device.clone() else {
        return Err(Refusal::new(
            Code::CertificateRequired,
            "renewal needs the current certificate as the TLS client certificate",
        ));
    };
    let req: RenewRequest = parse(&body)?;
    blocking(move || {
        api.enrollment
            .renew(&device, &req, &peer.addr.to_string())
            .map_err(Refusal::from)
    })
    .await
    .map(Json)
}
