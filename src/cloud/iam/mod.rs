//! Identity and access for people and programs (the start of it): API keys after the
//! Secure Sharing model (scoped, delegable to narrower child keys, revoked with all their
//! descendants at once, secrets stored as hashes) and the hash-chained audit log every
//! decision goes to.

pub mod access;
pub mod anchor;
pub mod audit;
pub mod devices;
pub mod keys;
pub mod users;
