//! Library half of `hybrid-runtime`: the pieces the subcommands share, reusable from tests and benches.

pub mod chat;
pub mod chunk;
pub mod device;
pub mod embed;
pub mod eval;
pub mod index;
pub mod lora;
pub mod model;
pub mod prune;
pub mod retrieve;
pub mod scan;
pub mod serve;
pub mod source;
pub mod store;
pub mod tokenizer;
pub mod train;
