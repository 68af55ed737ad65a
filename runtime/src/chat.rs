//! ChatML formatting (`<|im_start|>role\ncontent<|im_end|>\n`), written out by hand because the
//! runtime has no Jinja engine. It reproduces SmolLM2's template, including the default system
//! message it inserts when a conversation does not start with one.

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// What a model's chat template adds around the messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatTemplate {
    /// System message inserted when the conversation has none.
    pub default_system: Option<String>,
}

impl ChatTemplate {
    /// Reads the default system message out of a ChatML Jinja template (the text the template
    /// writes between `<|im_start|>system\n` and `<|im_end|>`).
    pub fn from_jinja(template: &str) -> Self {
        let marker = format!("{IM_START}system\n");
        let default_system = template.find(&marker).and_then(|start| {
            let rest = &template[start + marker.len()..];
            rest.find(IM_END).map(|end| rest[..end].to_string())
        });
        Self { default_system }
    }

    fn with_system<'a>(&'a self, messages: &'a [Message]) -> Vec<(Role, &'a str)> {
        let mut out = Vec::with_capacity(messages.len() + 1);
        if let Some(system) = &self.default_system
            && messages.first().is_none_or(|m| m.role != Role::System)
        {
            out.push((Role::System, system.as_str()));
        }
        out.extend(messages.iter().map(|m| (m.role, m.content.as_str())));
        out
    }

    /// The prompt text for generation: every message, then an open assistant turn.
    pub fn render_prompt(&self, messages: &[Message]) -> String {
        let mut s = String::new();
        for (role, content) in self.with_system(messages) {
            s.push_str(&format!("{IM_START}{}\n{content}{IM_END}\n", role.as_str()));
        }
        s.push_str(&format!("{IM_START}assistant\n"));
        s
    }

    /// Token ids of a whole conversation and, per token, whether it is a training target: the
    /// assistant's content and its closing `<|im_end|>` (so the model learns to stop), nothing
    /// else.
    pub fn encode_for_training(
        &self,
        tokenizer: &Tokenizer,
        messages: &[Message],
    ) -> Result<(Vec<u32>, Vec<bool>), String> {
        let mut ids = Vec::new();
        let mut targets = Vec::new();
        let mut push = |text: &str, target: bool| -> Result<(), String> {
            let enc = tokenizer
                .encode(text, false)
                .map_err(|e| format!("tokenizer failed: {e}"))?;
            ids.extend_from_slice(enc.get_ids());
            targets.extend(std::iter::repeat_n(target, enc.get_ids().len()));
            Ok(())
        };
        for (role, content) in self.with_system(messages) {
            let is_answer = role == Role::Assistant;
            push(&format!("{IM_START}{}\n", role.as_str()), false)?;
            push(content, is_answer)?;
            push(IM_END, is_answer)?;
            push("\n", false)?;
        }
        Ok((ids, targets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";

    fn msg(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn default_system_prompt_is_read_from_the_template() {
        let t = ChatTemplate::from_jinja(SMOLLM2_TEMPLATE);
        assert_eq!(
            t.default_system.as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
    }

    #[test]
    fn prompt_inserts_default_system_only_when_absent() {
        let t = ChatTemplate {
            default_system: Some("S".into()),
        };
        let p = t.render_prompt(&[msg(Role::User, "hi")]);
        assert_eq!(
            p,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        let p = t.render_prompt(&[msg(Role::System, "mine"), msg(Role::User, "hi")]);
        assert!(p.starts_with("<|im_start|>system\nmine<|im_end|>"), "{p}");
        assert_eq!(p.matches("system").count(), 1);
    }

    #[test]
    fn messages_parse_from_dataset_json() {
        let m: Message =
            serde_json::from_str(r#"{"role":"assistant","content":"ok"}"#).expect("valid");
        assert_eq!(m, msg(Role::Assistant, "ok"));
        assert!(serde_json::from_str::<Message>(r#"{"role":"tool","content":"x"}"#).is_err());
    }
}
