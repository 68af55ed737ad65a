//! The cluster edge: watches and the caches they fill, the slim kinds those caches hold, the Job
//! API calls the controllers make, and forgetting the metrics of deleted objects. Reconcile logic
//! stays out of here; it lives in pure functions beside each kind.

pub mod cached_objects;
pub mod caches;
pub mod deletions;
pub mod job_api;
