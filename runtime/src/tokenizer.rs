//! Tokenizers built from the metadata embedded in a GGUF file.

use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::Tokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

/// Builds the tokenizer stored in a GGUF file's metadata.
///
/// candle maps unknown `tokenizer.ggml.pre` values (SmolLM2 says `smollm`) to GPT-2's
/// pre-tokenizer, which adds a prefix space and keeps digit runs together; SmolLM2 was trained
/// with single digits and no prefix space, so that pre-tokenizer is replaced here.
pub fn from_gguf(path: &Path) -> Result<Tokenizer, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| format!("{} is not a GGUF file: {e}", path.display()))?;
    from_gguf_content(&content).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn from_gguf_content(content: &gguf_file::Content) -> Result<Tokenizer, String> {
    let mut tokenizer =
        Tokenizer::from_gguf(content).map_err(|e| format!("cannot build tokenizer: {e}"))?;
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str);
    if pre == Some("smollm") {
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
    }
    Ok(tokenizer)
}
