//! Controllers of hybrid-operator. Each kind has one reconciler module shaped as a pipeline:
//! resolve references → validate → build desired objects ([`build`], pure functions) → apply
//! with server-side apply → status ([`status`], written only when it changed).

pub mod adapter;
pub mod admin;
pub mod autoscaler;
pub mod build;
pub mod cache;
pub mod context;
pub mod corpus;
pub mod deleted;
pub mod digest;
pub mod error;
pub mod events;
pub mod hybridmodel;
pub mod jobs;
pub mod metrics;
pub mod prune;
pub mod servingpolicy;
pub mod slim;
pub mod sources;
pub mod status;
pub mod stuck;
