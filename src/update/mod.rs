//! The gateway's side of signed updates (docs/updates.md): the anti-rollback floor and
//! the resumable download so far; the update agent and its install backends build on
//! them.

pub mod download;
pub mod floor;
