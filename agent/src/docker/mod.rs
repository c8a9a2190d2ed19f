//! Docker source: list + watch the engine, reconnect, snapshots.
pub mod view;
