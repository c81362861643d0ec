//! People, tenants, devices and keys: registration, sessions, password resets, roles,
//! the device lifecycle (register, claim, transfer, revoke) and API keys (mint, delegate,
//! list, revoke). Every tenant route goes through `grant`, which audits its answer.

use super::{blocking, parse, Api, Ctx, Refusal};
use crate::cloud::code::Code;
use crate::cloud::iam::access::{Caller, Grant, Iam, Op, Target};
use crate::cloud::iam::keys::{Action, KeyInfo, Scope};
use crate::cloud::iam::users::{check_password, Role};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/users", post(register))
        .route("/v1/sessions", post(login).delete(logout))
        .route("/v1/me", get(me))
        .route("/v1/password-resets", post(reset_request))
        .route("/v1/password-resets/confirm", post(reset_confirm))
        .route("/v1/system/users", post(system_register))
        .route("/v1/system/devices", post(system_device))
        .route("/v1/keys", post(delegate))
        .route("/v1/tenants/{tenant}", get(tenant))
        .route("/v1/tenants/{tenant}/users", get(members).post(add_member))
        .route("/v1/tenants/{tenant}/devices", get(devices).post(claim))
        .route("/v1/tenants/{tenant}/devices/{device}", get(device))
        .route(
            "/v1/tenants/{tenant}/devices/{device}/transfer",
            post(transfer),
        )
        .route("/v1/tenants/{tenant}/devices/{device}/revoke", post(revoke))
        .route("/v1/tenants/{tenant}/keys", get(keys).post(mint))
        .route("/v1/tenants/{tenant}/keys/{id}", delete(revoke_key))
        .route("/v1/tenants/{tenant}/audit", get(audit))
        .route("/v1/tenants/{tenant}/security-events", get(security_events))
}

/// Authenticates the caller and decides `op` on `target` (audited either way).
pub(super) fn grant(iam: &mut Iam, ctx: &Ctx, op: Op, target: Target) -> Result<Grant, Refusal> {
    let caller = ctx.caller(iam)?;
    Ok(iam.authorize(&caller, op, target, ctx.from())?)
}

/// A signed-in person (not a key, not a device), or `unauthenticated`.
fn person(iam: &mut Iam, ctx: &Ctx) -> Result<(String, bool), Refusal> {
    match ctx.caller(iam)? {
        Caller::User { email, system } => Ok((email, system)),
        _ => Err(Refusal::new(
            Code::Unauthenticated,
            "this needs a person's session (POST /v1/sessions)",
        )),
    }
}

/// A system account's session (audited either way), or `forbidden`.
fn system(iam: &mut Iam, ctx: &Ctx, action: &str, resource: &str) -> Result<String, Refusal> {
    let (email, system) = person(iam, ctx)?;
    let outcome = if system {
        Ok(())
    } else {
        Err(crate::cloud::code::Refused::new(
            Code::Forbidden,
            "only system accounts may do this",
        ))
    };
    iam.audit(
        "",
        &format!("user:{email}"),
        action,
        resource,
        ctx.from(),
        outcome.as_ref().map(|_| ()),
    )?;
    outcome?;
    Ok(email)
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    email: String,
    password: String,
    tenant: String,
}

#[derive(Serialize)]
struct Membership {
    email: String,
    tenant: String,
    role: Role,
}

/// Registrations from one address within a minute, before further ones wait.
const REGISTER_LIMIT: i64 = 20;

/// Self-registration: checked and throttled first (cheap, under the IAM lock), the
/// password hashed after (off it, in turn), then stored.
async fn register(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Membership>), Refusal> {
    let r: Registration = parse(&body)?;
    let actor = format!("user:{}", r.email.to_lowercase());
    let (api2, ctx2, r2, actor2) = (api.clone(), ctx.clone(), r.clone(), actor.clone());
    blocking(move || {
        let mut iam = api2.iam();
        let checked = iam
            .throttle("register", &actor2, false, REGISTER_LIMIT, &ctx2.from())
            .and_then(|()| {
                check_password(&r2.password)?;
                Ok(iam.users().check_registration(&r2.email, &r2.tenant)?)
            });
        iam.audit(
            "",
            &actor2,
            "register",
            &r2.tenant,
            ctx2.from(),
            checked.as_ref().map(|_| ()),
        )?;
        Ok(checked?)
    })
    .await?;
    let hash = api.passwords.hash(&r.password).await?;
    blocking(move || {
        api.iam()
            .users()
            .register_hashed(&r.email, &hash, &r.tenant)
            .map_err(into)?;
        Ok((
            StatusCode::CREATED,
            Json(Membership {
                email: r.email.to_lowercase(),
                tenant: r.tenant,
                role: Role::Owner,
            }),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    email: String,
    password: String,
}

#[derive(Serialize)]
struct Session {
    token: String,
    expires_ns: i64,
}

/// The stored hash is read under the IAM lock, the password checked off it, in turn.
async fn login(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Session>), Refusal> {
    let l: Login = parse(&body)?;
    let (api2, ctx2, email) = (api.clone(), ctx.clone(), l.email.clone());
    let stored = blocking(move || {
        let stored = api2.iam().login_begin(&email, ctx2.from())?;
        Ok(stored)
    })
    .await?;
    // One check at a time per account: guesses sent at once would all pass the
    // throttle before the first refusal is recorded.
    let held = api.clone();
    let _one = held.passwords.one_per_account(&l.email)?;
    let checked = api.passwords.verify(&l.password, &stored).await?;
    blocking(move || {
        let token = api
            .iam()
            .login_end(&l.email, &stored, checked, ctx.from())?;
        Ok((
            StatusCode::CREATED,
            Json(Session {
                token,
                expires_ns: crate::sample::now_ns() + crate::cloud::iam::users::SESSION_NS,
            }),
        ))
    })
    .await
}

fn into(e: crate::cloud::iam::users::UserError) -> Refusal {
    crate::cloud::iam::access::Denied::from(e).into()
}

async fn logout(State(api): State<Arc<Api>>, ctx: Ctx) -> Result<StatusCode, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        person(&mut iam, &ctx)?;
        let token = ctx.bearer.clone().unwrap_or_default();
        iam.users().end_session(&token).map_err(into)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Serialize)]
struct Me {
    email: String,
    system: bool,
    tenants: Vec<TenantRole>,
}

#[derive(Serialize)]
struct TenantRole {
    tenant: String,
    role: Role,
}

async fn me(State(api): State<Arc<Api>>, ctx: Ctx) -> Result<Json<Me>, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        let (email, system) = person(&mut iam, &ctx)?;
        let tenants = iam
            .users()
            .memberships(&email)
            .map_err(into)?
            .into_iter()
            .map(|(tenant, role)| TenantRole { tenant, role })
            .collect();
        Ok(Json(Me {
            email,
            system,
            tenants,
        }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    email: String,
}

#[derive(Serialize)]
struct ResetToken {
    /// To be delivered to the user out of band; `null` for an unknown email.
    token: Option<String>,
}

/// A system account (the mailer) asks for a user's one-time reset token.
async fn reset_request(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    body: axum::body::Bytes,
) -> Result<Json<ResetToken>, Refusal> {
    let r: ResetRequest = parse(&body)?;
    blocking(move || {
        let mut iam = api.iam();
        system(&mut iam, &ctx, "password-reset", &r.email)?;
        let token = iam.users().reset_token(&r.email).map_err(into)?;
        Ok(Json(ResetToken { token }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetConfirm {
    token: String,
    password: String,
}

/// Refused reset confirmations from one address within a minute, before further ones
/// are refused unchecked.
const RESET_LIMIT: i64 = 10;

/// The token is checked and spent before any hashing (an unknown token costs nothing),
/// the password hashed in turn off the IAM lock, then set: every session of the
/// account and every other reset token outstanding end with it.
async fn reset_confirm(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    body: axum::body::Bytes,
) -> Result<StatusCode, Refusal> {
    let r: ResetConfirm = parse(&body)?;
    check_password(&r.password).map_err(into)?;
    let (api2, ctx2, token) = (api.clone(), ctx.clone(), r.token.clone());
    // The token is spent before a hashing turn is taken: bogus tokens cost no turn. (A
    // reset that then finds the server busy needs a new token.)
    let email = blocking(move || {
        let mut iam = api2.iam();
        // Refusals are counted per address (an unknown token names no account).
        let anonymous = format!("address:{}", ctx2.peer.addr.ip());
        let spent = iam
            .throttle(
                "password-reset-confirm",
                &anonymous,
                true,
                RESET_LIMIT,
                &ctx2.from(),
            )
            .and_then(|()| Ok(iam.users().spend_reset_token(&token)?));
        let actor = spent.as_ref().map_or(anonymous, |e| format!("user:{e}"));
        iam.audit(
            "",
            &actor,
            "password-reset-confirm",
            "",
            ctx2.from(),
            spent.as_ref().map(|_| ()),
        )?;
        Ok(spent?)
    })
    .await?;
    let hash = api.passwords.hash(&r.password).await?;
    blocking(move || {
        api.iam()
            .users()
            .set_password(&email, &hash)
            .map_err(into)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemRegistration {
    email: String,
    password: String,
    tenant: String,
    role: Role,
}

async fn system_register(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Membership>), Refusal> {
    let r: SystemRegistration = parse(&body)?;
    let (api2, ctx2, tenant) = (api.clone(), ctx.clone(), r.tenant.clone());
    let sys = blocking(move || system(&mut api2.iam(), &ctx2, "register-user", &tenant)).await?;
    let hash = api.passwords.hash(&r.password).await?;
    blocking(move || {
        api.iam()
            .users()
            .register_by_system_hashed(&sys, &r.email, &hash, &r.tenant, r.role)
            .map_err(into)?;
        Ok((
            StatusCode::CREATED,
            Json(Membership {
                email: r.email.to_lowercase(),
                tenant: r.tenant,
                role: r.role,
            }),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceRegistration {
    device: String,
    claim_code: String,
}

#[derive(Serialize)]
struct DeviceInfo {
    device: String,
    state: String,
}

/// Registration at manufacture, by a system account.
async fn system_device(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<DeviceInfo>), Refusal> {
    let r: DeviceRegistration = parse(&body)?;
    blocking(move || {
        let mut iam = api.iam();
        system(&mut iam, &ctx, "register-device", &r.device)?;
        iam.devices()
            .register(&r.device, &r.claim_code)
            .map_err(into)?;
        Ok((
            StatusCode::CREATED,
            Json(DeviceInfo {
                device: r.device,
                state: "registered".into(),
            }),
        ))
    })
    .await
}

#[derive(Serialize)]
struct TenantInfo {
    tenant: String,
    /// The caller's role (a person), or `null` (a key).
    role: Option<Role>,
    devices: usize,
}

async fn tenant(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
) -> Result<Json<TenantInfo>, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::Read, Target::tenant(&tenant))?;
        let devices = iam.devices().list(g.tenant()).map_err(into)?;
        Ok(Json(TenantInfo {
            tenant: g.tenant().into(),
            role: g.role(),
            devices: devices.iter().filter(|(d, _)| g.sees_device(d)).count(),
        }))
    })
    .await
}

async fn members(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<Membership>>, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::ManageUsers, Target::tenant(&tenant))?;
        let list = iam.users().members(g.tenant()).map_err(into)?;
        Ok(Json(
            list.into_iter()
                .map(|(email, role)| Membership {
                    email,
                    tenant: g.tenant().into(),
                    role,
                })
                .collect(),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    email: String,
    role: Role,
}

async fn add_member(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Membership>, Refusal> {
    let r: AddMember = parse(&body)?;
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::ManageUsers, Target::tenant(&tenant))?;
        let (email, _) = person(&mut iam, &ctx)?;
        iam.users()
            .grant(&email, &r.email, g.tenant(), r.role)
            .map_err(into)?;
        Ok(Json(Membership {
            email: r.email.to_lowercase(),
            tenant: g.tenant().into(),
            role: r.role,
        }))
    })
    .await
}

async fn devices(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<DeviceInfo>>, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::Read, Target::tenant(&tenant))?;
        let list = iam.devices().list(g.tenant()).map_err(into)?;
        Ok(Json(
            list.into_iter()
                .filter(|(d, _)| g.sees_device(d))
                .map(|(device, state)| DeviceInfo { device, state })
                .collect(),
        ))
    })
    .await
}

/// Refused claims within a minute (by a caller, from an address, or of a device)
/// before further ones are refused unchecked.
const CLAIM_LIMIT: i64 = 10;

async fn claim(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<DeviceInfo>), Refusal> {
    let r: DeviceRegistration = parse(&body)?;
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::ClaimDevice, Target::tenant(&tenant))?;
        if !g.sees_device(&r.device) {
            return Err(Refusal::new(
                Code::ActionNotGranted,
                "the key does not reach this device",
            ));
        }
        // Claim codes are short enough to guess: refused attempts are counted per
        // caller, per address and per device, and audited.
        let claimed = iam
            .throttle_on(
                "claim-code",
                g.actor(),
                Some(&r.device),
                true,
                CLAIM_LIMIT,
                &ctx.from(),
            )
            .and_then(|()| {
                Ok(iam
                    .devices()
                    .claim_for(g.tenant(), &r.device, &r.claim_code)?)
            });
        let tenant = g.tenant().to_string();
        iam.audit(
            &tenant,
            g.actor(),
            "claim-code",
            &r.device,
            ctx.from(),
            claimed.as_ref().map(|_| ()),
        )?;
        claimed?;
        Ok((
            StatusCode::CREATED,
            Json(DeviceInfo {
                device: r.device,
                state: "claimed".into(),
            }),
        ))
    })
    .await
}

#[derive(Serialize)]
struct DeviceDetail {
    device: String,
    state: String,
    /// The device's certificates: serial, key fingerprint, expiry.
    certificates: Vec<crate::cloud::registry::Certificate>,
}

async fn device(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, device)): Path<(String, String)>,
) -> Result<Json<DeviceDetail>, Refusal> {
    blocking(move || {
        let g = {
            let mut iam = api.iam();
            grant(&mut iam, &ctx, Op::Read, Target::device(&tenant, &device))?
        };
        let device = g.device().unwrap_or_default().to_string();
        let state = api
            .iam()
            .devices()
            .state(&device)
            .map_err(into)?
            .unwrap_or_default();
        let certificates = api
            .enrollment
            .registry
            .certificates(&device)
            .map_err(|e| Refusal::internal(&e.to_string()))?;
        Ok(Json(DeviceDetail {
            device,
            state,
            certificates,
        }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    to: String,
}

async fn transfer(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, device)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<DeviceInfo>, Refusal> {
    let r: Transfer = parse(&body)?;
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(
            &mut iam,
            &ctx,
            Op::TransferDevice,
            Target::device(&tenant, &device),
        )?;
        let device = g.device().unwrap_or_default();
        iam.devices().move_to(device, &r.to).map_err(into)?;
        let state = iam
            .devices()
            .state(device)
            .map_err(into)?
            .unwrap_or_default();
        Ok(Json(DeviceInfo {
            device: device.into(),
            state,
        }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    reason: String,
}

/// Revokes the device: no tenant reaches it, and its certificate is refused at the next
/// connect.
async fn revoke(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, device)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<DeviceInfo>, Refusal> {
    let r: Revoke = parse(&body)?;
    blocking(move || {
        let g = {
            let mut iam = api.iam();
            let g = grant(
                &mut iam,
                &ctx,
                Op::RevokeDevice,
                Target::device(&tenant, &device),
            )?;
            iam.devices()
                .set_revoked(g.device().unwrap_or_default())
                .map_err(into)?;
            g
        };
        let device = g.device().unwrap_or_default().to_string();
        api.enrollment
            .registry
            .revoke(&device, &format!("{} by {}", r.reason, g.actor()))
            .map_err(|e| Refusal::internal(&e.to_string()))?;
        Ok(Json(DeviceInfo {
            device,
            state: "revoked".into(),
        }))
    })
    .await
}

/// A key's scope as asked for; the tenant comes from the path (or the parent key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeRequest {
    #[serde(default = "any")]
    devices: Vec<String>,
    #[serde(default = "any")]
    streams: Vec<String>,
    actions: Vec<Action>,
    #[serde(default)]
    cidrs: Vec<ipnet::IpNet>,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default)]
    not_before_ns: Option<i64>,
    not_after_ns: i64,
    #[serde(default)]
    min_resolution_s: u64,
    #[serde(default)]
    may_delegate: bool,
}

fn any() -> Vec<String> {
    vec!["*".into()]
}

impl ScopeRequest {
    fn scope(self, tenant: &str) -> Scope {
        Scope {
            tenant: tenant.into(),
            devices: self.devices,
            streams: self.streams,
            actions: self.actions,
            cidrs: self.cidrs,
            origins: self.origins,
            not_before_ns: self.not_before_ns.unwrap_or_else(crate::sample::now_ns),
            not_after_ns: self.not_after_ns,
            min_resolution_s: self.min_resolution_s,
            may_delegate: self.may_delegate,
        }
    }
}

#[derive(Serialize)]
struct NewKey {
    id: String,
    /// The key itself: shown this once, kept by the cloud only as a hash.
    token: String,
    scope: Scope,
}

async fn mint(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<NewKey>), Refusal> {
    let r: ScopeRequest = parse(&body)?;
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::MintKey, Target::tenant(&tenant))?;
        let scope = r.scope(g.tenant());
        let (id, token) = iam.mint_key(&g, &scope)?;
        Ok((StatusCode::CREATED, Json(NewKey { id, token, scope })))
    })
    .await
}

/// A child key, minted with the parent key as the bearer.
async fn delegate(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<NewKey>), Refusal> {
    let r: ScopeRequest = parse(&body)?;
    blocking(move || {
        let mut iam = api.iam();
        let caller = ctx.caller(&mut iam)?;
        let tenant = match &caller {
            Caller::Key { scope, .. } => Some(scope.tenant.clone()),
            _ => None,
        }
        .unwrap_or_default();
        let scope = r.scope(&tenant);
        let (id, token) = iam.delegate(&caller, &scope, ctx.from())?;
        Ok((StatusCode::CREATED, Json(NewKey { id, token, scope })))
    })
    .await
}

async fn keys(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<KeyInfo>>, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::MintKey, Target::tenant(&tenant))?;
        Ok(Json(iam.keys().list(g.tenant()).map_err(|e| {
            Refusal::from(crate::cloud::iam::access::Denied::from(e))
        })?))
    })
    .await
}

#[derive(Serialize)]
struct Revoked {
    /// The key and its descendants newly revoked.
    revoked: usize,
}

async fn revoke_key(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<Revoked>, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::RevokeKey, Target::tenant(&tenant))?;
        let of_tenant = iam
            .keys()
            .scope_of(&id)
            .ok()
            .flatten()
            .is_some_and(|s| s.tenant == g.tenant());
        if !of_tenant {
            return Err(Refusal::new(Code::NotFound, "no such key in this tenant"));
        }
        let revoked = iam
            .keys()
            .revoke(&id)
            .map_err(|e| Refusal::from(crate::cloud::iam::access::Denied::from(e)))?;
        Ok(Json(Revoked { revoked }))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    #[serde(default = "hundred")]
    limit: u32,
}

fn hundred() -> u32 {
    100
}

#[derive(Serialize)]
struct AuditEntry {
    id: i64,
    ts_ns: i64,
    actor: String,
    action: String,
    resource: String,
    source: String,
    outcome: String,
    reason: String,
}

async fn audit(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
    Query(q): Query<Limit>,
) -> Result<Json<Vec<AuditEntry>>, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::ReadAudit, Target::tenant(&tenant))?;
        let rows = crate::cloud::iam::audit::entries(iam.db(), g.tenant(), q.limit.min(10_000))
            .map_err(|e| Refusal::internal(&e.to_string()))?;
        Ok(Json(
            rows.into_iter()
                .map(|(id, e)| AuditEntry {
                    id,
                    ts_ns: e.ts_ns,
                    actor: e.actor,
                    action: e.action,
                    resource: e.resource,
                    source: e.source,
                    outcome: e.outcome,
                    reason: e.reason,
                })
                .collect(),
        ))
    })
    .await
}

async fn security_events(
    State(api): State<Arc<Api>>,
    ctx: Ctx,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<crate::cloud::iam::audit::SecurityEvent>>, Refusal> {
    blocking(move || {
        let mut iam = api.iam();
        let g = grant(&mut iam, &ctx, Op::ReadAudit, Target::tenant(&tenant))?;
        Ok(Json(
            crate::cloud::iam::audit::security_events(iam.db(), Some(g.tenant()))
                .map_err(|e| Refusal::internal(&e.to_string()))?,
        ))
    })
    .await
}
