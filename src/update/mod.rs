//! The gateway's side of signed updates (docs/updates.md): the anti-rollback floor so
//! far; the update agent and its install backends build on it.

pub mod floor;
