//! The controllers against the real `tug server` binary (build it first:
//! `cargo build -p tug`), one module per controller. One test binary for all
//! of them: each binary links kube, k8s-openapi and the test kit, so one
//! per controller cost minutes of linking and gigabytes of disk.

mod support;
mod workloads;

mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod garbage_collector;
mod job;
mod leader_election;
mod namespace;
mod node_ipam;
mod node_lifecycle;
mod persistentvolume;
mod pod_gc;
mod replicaset;
mod resourcequota;
mod serviceaccount;
mod shared_informers;
mod statefulset;
