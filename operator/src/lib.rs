//! Controllers of hybrid-operator, a folder per kind: [`corpus`], [`adapter`], [`hybridmodel`],
//! [`servingpolicy`]. Corpus and Adapter are revisioned kinds: both plug into the one driver in
//! [`revisioned`] (inputs → revision → Job → active revision) and bring only what differs.
//! [`objects`] holds what every kind's pure builders share; [`cluster`] is the edge that talks
//! to the API server (caches, Job API calls); [`status`] writes conditions only when they changed.

pub mod adapter;
pub mod admin;
pub mod autoscaler;
pub mod cluster;
pub mod context;
pub mod corpus;
pub mod digest;
pub mod error;
pub mod events;
pub mod hybridmodel;
pub mod metrics;
pub mod objects;
pub mod revisioned;
pub mod servingpolicy;
pub mod status;
pub mod stuck;
