//! fieldgate: an edge gateway for industrial field buses and the cloud service it talks to.
//!
//! The gateway half (feature `gateway`) polls field devices, writes every sample to a
//! durable SQLite outbox and forwards it over MQTT with mutual TLS. The cloud half
//! (feature `cloud`) terminates those streams and stores each sample exactly once.
#![deny(unsafe_code)]
// No `.unwrap()` on a path that handles outside input: tests may.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod backoff;
pub mod bytesize;
pub mod der;
pub mod downlink;
pub mod enrollment;
pub mod hex;
pub mod https;
pub mod ids;
#[cfg(any(feature = "gateway", feature = "cloud"))]
pub mod logging;
pub mod pattern;
pub mod protocol;
pub mod release;
pub mod sample;
pub mod schema;
pub mod tls;

#[cfg(feature = "gateway")]
pub mod agent;
#[cfg(feature = "gateway")]
pub mod buffer;
#[cfg(feature = "gateway")]
pub mod clock;
#[cfg(feature = "gateway")]
pub mod config;
#[cfg(feature = "gateway")]
pub mod daemon;
#[cfg(feature = "gateway")]
pub mod dbc;
#[cfg(feature = "gateway")]
pub mod doctor;
#[cfg(feature = "gateway")]
pub mod field;
#[cfg(feature = "gateway")]
pub mod identity;
#[cfg(feature = "gateway")]
pub mod model;
#[cfg(feature = "gateway")]
pub mod update;
#[cfg(feature = "gateway")]
pub mod uplink;

#[cfg(feature = "cloud")]
pub mod cloud;

/// Installs the one rustls crypto provider of the process (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
