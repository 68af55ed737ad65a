//! Library half of `hybrid-runtime`: the pieces the subcommands share, reusable from tests and benches.

pub mod chat;
pub mod eval;
pub mod lora;
pub mod model;
pub mod tokenizer;
pub mod train;
