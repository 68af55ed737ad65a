//! Support library for the cluster e2e tests (written with the local control plane issue).
