//! The library half of the `tug` binaries: what `tug` and `tug-agent`
//! share, and what their tests call directly.
//!
//! - [`agent`]: the node agent's flags and its run loop (`tug agent`,
//!   `tug-agent`, and the agent inside `tug server`).
//! - [`join`]: `tug agent --server URL --token T`, joining a cluster with
//!   the node token (k3s's agent bootstrap).

pub mod agent;
pub mod join;
