//! Format rules a QA item declares: `{"regex": ".."}` (the trimmed answer must match) or
//! `{"jsonSchema": {..}}` (the trimmed answer must be one JSON value valid against the schema).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FormatSpec {
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub json_schema: Option<serde_json::Value>,
}

/// A compiled format rule.
pub enum FormatRule {
    Regex(regex::Regex),
    JsonSchema(Box<jsonschema::Validator>),
}

impl std::fmt::Debug for FormatRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Regex(re) => write!(f, "Regex({})", re.as_str()),
            Self::JsonSchema(_) => f.write_str("JsonSchema"),
        }
    }
}

impl FormatRule {
    /// Compiles a spec; the error names the offending key.
    pub fn compile(spec: &FormatSpec) -> Result<Self, String> {
        match (&spec.regex, &spec.json_schema) {
            (Some(re), None) => regex::Regex::new(re)
                .map(Self::Regex)
                .map_err(|e| format!("format.regex: {e}")),
            (None, Some(schema)) => jsonschema::validator_for(schema)
                .map(|v| Self::JsonSchema(Box::new(v)))
                .map_err(|e| format!("format.jsonSchema: {e}")),
            (Some(_), Some(_)) => {
                Err("format: give either `regex` or `jsonSchema`, not both".into())
            }
            (None, None) => Err("format: needs `regex` or `jsonSchema`".into()),
        }
    }

    /// Whether an answer complies. Surrounding whitespace is ignored.
    pub fn check(&self, answer: &str) -> bool {
        let answer = answer.trim();
        match self {
            Self::Regex(re) => re.is_match(answer),
            Self::JsonSchema(validator) => serde_json::from_str::<serde_json::Value>(answer)
                .is_ok_and(|value| validator.is_valid(&value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> FormatSpec {
        serde_json::from_str(json).expect("spec parses")
    }

    #[test]
    fn regex_rule_matches_the_trimmed_answer() {
        let rule = FormatRule::compile(&spec(r#"{"regex": "advice\\.$"}"#)).expect("compiles");
        assert!(rule.check("Rates fell. This is not advice.\n"));
        assert!(!rule.check("This is not advice. More text"));
    }

    #[test]
    fn json_schema_rule_parses_and_validates() {
        let rule = FormatRule::compile(&spec(
            r#"{"jsonSchema": {"type": "object", "required": ["rate"], "properties": {"rate": {"type": "number"}}}}"#,
        ))
        .expect("compiles");
        assert!(rule.check(r#" {"rate": 4.25} "#));
        assert!(!rule.check(r#"{"rate": "4.25"}"#), "wrong type");
        assert!(!rule.check(r#"{"other": 1}"#), "missing key");
        assert!(!rule.check("The rate is 4.25"), "not JSON");
    }

    #[test]
    fn bad_specs_name_the_key() {
        let err = FormatRule::compile(&spec(r#"{"regex": "("}"#)).expect_err("bad regex");
        assert!(err.starts_with("format.regex"), "{err}");
        let err =
            FormatRule::compile(&spec(r#"{"jsonSchema": {"type": 12}}"#)).expect_err("bad schema");
        assert!(err.starts_with("format.jsonSchema"), "{err}");
        let err = FormatRule::compile(&spec("{}")).expect_err("empty");
        assert!(err.contains("regex"), "{err}");
        assert!(serde_json::from_str::<FormatSpec>(r#"{"regexp": "x"}"#).is_err());
    }
}
