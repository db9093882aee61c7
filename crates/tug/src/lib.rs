//! The library half of the `tug` binary: what its tests call directly.
//!
//! - [`join`]: `tug agent --server URL --token T`, joining a cluster with
//!   the node token (k3s's agent bootstrap).

pub mod join;
