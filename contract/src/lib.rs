//! Everything hybrid-operator and hybrid-runtime exchange, defined once for both:
//!
//! - [`serve_config`]: `config.yaml` of `hybrid-runtime serve`, which the operator renders into
//!   the serving ConfigMap;
//! - [`loaded`]: the loaded-revisions report a serving pod writes on itself, and its annotation;
//! - [`device`]: where the runtime computes (`device` in the config, `--device` on Jobs);
//! - [`metrics`]: the runtime's metric names that the autoscaler, alerts and dashboard query;
//! - [`limits`]: bounds both sides enforce.
//!
//! docs/runtime-contract.md describes the same contract for people; `tests/round_trip.rs` checks
//! that each document written by one side is read back by the other.

pub mod device;
pub mod limits;
pub mod loaded;
pub mod metrics;
pub mod serve_config;
