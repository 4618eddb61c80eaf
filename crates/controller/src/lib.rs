//! Apogee controller: the Raft-replicated registry of broker replica groups that decides who is
//! master (upstream's `controller` module, DLedger replaced by `openraft`).
//!
//! [`replicas::ReplicasInfo`] is the state machine and its rules.

pub mod replicas;
