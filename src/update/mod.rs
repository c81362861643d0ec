//! The gateway's side of signed updates (docs/updates.md): the anti-rollback floor, the
//! resumable download and the update agent's state machine; its shell and the install
//! backends build on them.

pub mod download;
pub mod floor;
pub mod machine;
pub mod slots;
pub mod updater;
