//! The adversarial suite: attacks an outsider, a tenant user or a tenant admin with the
//! source in hand would try against the cloud, each asserting the refusal and that a
//! bystander (another tenant's owner, reading its own devices) is answered in time while
//! the attack runs. docs/threat-model.md points here, one test per threat.

#[path = "../common/mod.rs"]
mod common;

mod bystander;
mod enrollment;
mod keys;
mod people;
mod tenants;
