//! Label and field selectors with the semantics of upstream
//! `k8s.io/apimachinery/pkg/labels` and `k8s.io/apimachinery/pkg/fields`, plus the
//! per-kind selectable fields of `pkg/registry/*/strategy.go` and the field label
//! conversion functions of `pkg/apis/*/v1/conversion.go`.
//!
//! Objects are plain `serde_json::Value`s in their Kubernetes JSON form.

use serde_json::{Map, Value};
use std::fmt;

// ---------------------------------------------------------------------------
// Validation (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_MAX_LEN: usize = 63;
const LABEL_VALUE_MAX_LEN: usize = 63;
const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, ex) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{ex}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
fn is_dns1123_subdomain_fmt(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    alnum(f) && alnum(l) && b.iter().all(|c| alnum(c) || *c == b'-')
                }
                _ => false,
            }
        })
}

fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LEN));
    }
    if !is_dns1123_subdomain_fmt(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Upstream `validation.IsQualifiedName`: the error strings, empty when valid.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LEN {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LEN)
        ));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Upstream `validation.IsValidLabelValue`: the error strings, empty when valid.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LEN {
        errs.push(max_len_error(LABEL_VALUE_MAX_LEN));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Go's `%q` for the strings that can show up here.
fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

/// Go's `%#v` for a `[]string`.
fn go_string_slice(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// A `field.Invalid(path, value, detail)` error message.
fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {value}: {detail}")
}

/// `utilerrors.NewAggregate(errs).Error()`.
fn aggregate(errs: Vec<String>) -> Result<(), String> {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    match seen.len() {
        0 => Ok(()),
        1 => Err(seen.remove(0)),
        _ => Err(format!("[{}]", seen.join(", "))),
    }
}

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// A label selector operator (`k8s.io/apimachinery/pkg/selection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One requirement of a label selector, e.g. `tier in (web,api)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Upstream `labels.NewRequirement`: validates the key, the number of values for the
    /// operator, and every value.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Requirement, String> {
        let mut errs = Vec::new();
        let key_errs = is_qualified_name(key);
        if !key_errs.is_empty() {
            errs.push(invalid("key", &go_quote(key), &key_errs.join("; ")));
        }
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errs.push(invalid(
                        "values",
                        &go_string_slice(&values),
                        "for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errs.push(invalid(
                        "values",
                        &go_string_slice(&values),
                        "exact-match compatibility requires one single value",
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errs.push(invalid(
                        "values",
                        &go_string_slice(&values),
                        "values set must be empty for exists and does not exist",
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(invalid(
                        "values",
                        &go_string_slice(&values),
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(invalid(
                            &format!("values[{i}]"),
                            &go_quote(v),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            let v_errs = is_valid_label_value(v);
            if !v_errs.is_empty() {
                errs.push(invalid(
                    &format!("values[{i}][{key}]"),
                    &go_quote(v),
                    &v_errs.join("; "),
                ));
            }
        }
        aggregate(errs)?;
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn has_value(&self, v: &str) -> bool {
        self.values.iter().any(|x| x == v)
    }

    /// Upstream `Requirement.Matches`.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels.and_then(|l| l.get(&self.key)).map(label_value_str);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.has_value(&v))
            }
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !self.has_value(&v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(have)) = value.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

fn label_value_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl fmt::Display for Requirement {
    /// Upstream `Requirement.String`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        if self.values.len() == 1 {
            f.write_str(&self.values[0])?;
        } else {
            let mut sorted = self.values.clone();
            sorted.sort();
            f.write_str(&sorted.join(","))?;
        }
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector (upstream `labels.Selector`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// `labels.Nothing()`: what a null metav1.LabelSelector converts to.
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every object (`labels.Everything()`).
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// The selector that matches no object (`labels.Nothing()`).
    pub fn nothing() -> LabelSelector {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Parses the label selector syntax of `labels.Parse`.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut parser = Parser {
            tokens: lex(s),
            pos: 0,
        };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a metav1.LabelSelector (`{"matchLabels":{..},"matchExpressions":[..]}`) like
    /// upstream `metav1.LabelSelectorAsSelector`. An empty selector matches everything, a JSON
    /// `null` matches nothing.
    pub fn from_label_selector_json(sel: &Value) -> Result<LabelSelector, String> {
        let obj = match sel {
            Value::Null => return Ok(LabelSelector::nothing()),
            Value::Object(o) => o,
            other => return Err(format!("invalid label selector: {other}")),
        };
        let match_labels = match obj.get("matchLabels") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => return Err(format!("invalid matchLabels: {other}")),
        };
        let match_expressions = match obj.get("matchExpressions") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(other) => return Err(format!("invalid matchExpressions: {other}")),
        };
        if match_labels.map_or(0, Map::len) + match_expressions.len() == 0 {
            return Ok(LabelSelector::everything());
        }
        let mut requirements = Vec::new();
        for (k, v) in match_labels.into_iter().flatten() {
            requirements.push(Requirement::new(
                k,
                Operator::Equals,
                vec![label_value_str(v)],
            )?);
        }
        for expr in match_expressions {
            let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
            let op_name = expr.get("operator").and_then(Value::as_str).unwrap_or("");
            let op = match op_name {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(format!(
                        "{} is not a valid label selector operator",
                        go_quote(other)
                    ));
                }
            };
            let values = expr
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(label_value_str).collect())
                .unwrap_or_default();
            requirements.push(Requirement::new(key, op, values)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// True for the selector that matches everything (no requirements).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for `labels.Nothing()`.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether an object with these labels (its `metadata.labels`) is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Convenience: matches against the `metadata.labels` of an object.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

// --- lexer (upstream labels.Lexer) ---

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn string_to_token(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special_symbol(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(s: &str) -> Vec<(Token, String)> {
    let chars: Vec<char> = s.chars().collect();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < chars.len() && is_whitespace(chars[pos]) {
            pos += 1;
        }
        if pos >= chars.len() || chars[pos] == '\0' {
            out.push((Token::EndOfString, String::new()));
            return out;
        }
        if is_special_symbol(chars[pos]) {
            // Greedily take the longest run of special symbols that is a token.
            let mut buffer = String::new();
            let mut last: Option<(Token, String)> = None;
            while pos < chars.len() && is_special_symbol(chars[pos]) {
                buffer.push(chars[pos]);
                if let Some(tok) = string_to_token(&buffer) {
                    last = Some((tok, buffer.clone()));
                    pos += 1;
                } else if last.is_some() {
                    break;
                } else {
                    pos += 1;
                }
            }
            out.push(last.unwrap_or_else(|| {
                (
                    Token::Error,
                    format!("error expected: keyword found '{buffer}'"),
                )
            }));
        } else {
            let start = pos;
            while pos < chars.len()
                && chars[pos] != '\0'
                && !is_special_symbol(chars[pos])
                && !is_whitespace(chars[pos])
            {
                pos += 1;
            }
            let word: String = chars[start..pos].iter().collect();
            let tok = string_to_token(&word).unwrap_or(Token::Identifier);
            out.push((tok, word));
        }
    }
}

// --- parser (upstream labels.Parser) ---

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    tokens: Vec<(Token, String)>,
    pos: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    fn item(&self, idx: usize, ctx: Context) -> (Token, String) {
        let (tok, lit) = self.tokens[idx.min(self.tokens.len() - 1)].clone();
        let tok = match (ctx, tok) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            (_, t) => t,
        };
        (tok, lit)
    }

    fn lookahead(&self, ctx: Context) -> (Token, String) {
        self.item(self.pos, ctx)
    }

    fn consume(&mut self, ctx: Context) -> (Token, String) {
        let item = self.item(self.pos, ctx);
        self.pos += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op) = inferred {
            return Requirement::new(&key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let mut values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        // sets.String.List(): sorted and de-duplicated.
        values.sort();
        values.dedup();
        Requirement::new(&key, op, values)
    }

    /// Returns the key and, for `key` / `!key`, the inferred unary operator.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let errs = is_qualified_name(&lit);
        if !errs.is_empty() {
            return Err(invalid("<nil>", &go_quote(&lit), &errs.join("; ")));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((lit, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let s = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut s: Vec<String> = Vec::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    s.push(lit);
                    let (tok2, lit2) = self.lookahead(Context::Values);
                    match tok2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if s.is_empty() {
                        s.push(String::new()); // "(,"
                    }
                    let (tok2, _) = self.lookahead(Context::Values);
                    if tok2 == Token::ClosedPar {
                        s.push(String::new()); // ",)"
                        return Ok(s);
                    }
                    if tok2 == Token::Comma {
                        self.consume(Context::Values);
                        s.push(String::new()); // ",,"
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if tok == Token::EndOfString || tok == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            return Ok(vec![lit]);
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

/// Field selector operator. `==` parses to `Equals`, like upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldOp {
    Equals,
    NotEquals,
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub op: FieldOp,
    /// The unescaped value.
    pub value: String,
}

impl FieldRequirement {
    pub fn matches(&self, actual: &str) -> bool {
        match self.op {
            FieldOp::Equals => self.value == actual,
            FieldOp::NotEquals => self.value != actual,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            FieldOp::Equals => "=",
            FieldOp::NotEquals => "!=",
        };
        write!(f, "{}{}{}", self.field, op, escape_field_value(&self.value))
    }
}

/// A parsed field selector (upstream `fields.Selector`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses like upstream `fields.ParseSelector`: comma separated `field=value`,
    /// `field==value`, `field!=value` terms; `\,`, `\=` and `\\` escape values.
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut requirements = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let value = unescape_field_value(rhs)?;
            let op = if op == "!=" {
                FieldOp::NotEquals
            } else {
                FieldOp::Equals
            };
            requirements.push(FieldRequirement {
                field: lhs.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Upstream `RequiresExactMatch`: the value if the selector pins `field` with `=`.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op == FieldOp::Equals)
            .map(|r| r.value.as_str())
    }

    /// Whether the selector matches, `get` giving each field's value; a field it doesn't
    /// know (`None`) compares as the empty string, as upstream `fields.Set.Get` does.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(&get(&r.field).unwrap_or_default()))
    }

    /// Upstream's field label conversion: `Err` with the message the API server answers
    /// (400 BadRequest) for the first field the kind doesn't support.
    pub fn check_supported(&self, kind: &str) -> Result<(), String> {
        for r in &self.requirements {
            if !is_supported_field(kind, &r.field) {
                return Err(supported_field_error(kind, &r.field));
            }
        }
        Ok(())
    }

    /// Matches an object of `kind` using [`field_value`].
    pub fn matches_object(&self, kind: &str, obj: &Value) -> bool {
        self.matches(|f| field_value(kind, obj, f))
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Splits on commas that are not escaped; escapes stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits at the first operator (`!=`, `==`, `=`, tried in that order at each position).
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], op, rhs));
            }
        }
    }
    None
}

/// Upstream `fields.EscapeValue`.
pub fn escape_field_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Upstream `fields.UnescapeValue`.
pub fn unescape_field_value(s: &str) -> Result<String, String> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            // Go prints the rune with %v, i.e. as its number.
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Selectable fields per kind
// ---------------------------------------------------------------------------

/// How upstream's field label conversion for a kind words its rejection.
#[derive(Clone, Copy)]
enum Rejection {
    /// `field label not supported: <field>`
    NotSupported,
    /// `field label "<field>" not supported for "<Kind>"` (core kinds with only metadata fields)
    NotSupportedFor,
    /// `runtime.DefaultMetaV1FieldSelectorConversion`
    Default,
}

const META: &[&str] = &["metadata.name", "metadata.namespace"];

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
    // backwards compatibility alias for spec.nodeName
    "spec.host",
];

const EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    // core/v1 names
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    // events.k8s.io/v1 names (mapped onto the core ones upstream)
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
];

/// The fields a field selector may name for `kind` (upstream's field label
/// conversion), e.g. for indexing them ahead of time.
pub fn selectable_field_names(kind: &str) -> &'static [&'static str] {
    selectable_fields(kind).0
}

fn selectable_fields(kind: &str) -> (&'static [&'static str], Rejection) {
    use Rejection::*;
    match kind {
        "Pod" => (POD_FIELDS, NotSupported),
        "Event" => (EVENT_FIELDS, NotSupported),
        "Node" => (&["metadata.name", "spec.unschedulable"], NotSupported),
        "Namespace" => (&["metadata.name", "status.phase"], NotSupported),
        "Secret" => (
            &["metadata.name", "metadata.namespace", "type"],
            NotSupported,
        ),
        "ReplicationController" | "ReplicaSet" => (
            &["metadata.name", "metadata.namespace", "status.replicas"],
            NotSupported,
        ),
        "Job" => (
            &["metadata.name", "metadata.namespace", "status.successful"],
            NotSupported,
        ),
        "Service" => (
            &[
                "metadata.name",
                "metadata.namespace",
                "spec.clusterIP",
                "spec.type",
            ],
            NotSupported,
        ),
        "CertificateSigningRequest" | "ClusterTrustBundle" => {
            (&["metadata.name", "spec.signerName"], NotSupported)
        }
        "ResourceSlice" => (
            &["metadata.name", "spec.nodeName", "spec.driver"],
            NotSupported,
        ),
        "Endpoints"
        | "ResourceQuota"
        | "PersistentVolumeClaim"
        | "ServiceAccount"
        | "ConfigMap" => (META, NotSupportedFor),
        _ => (META, Default),
    }
}

/// Whether `field` may be used in a field selector for `kind`.
pub fn is_supported_field(kind: &str, field: &str) -> bool {
    selectable_fields(kind).0.contains(&field)
}

/// The message upstream's API server gives (as a 400 BadRequest) when a field selector
/// uses a field the kind doesn't support.
pub fn supported_field_error(kind: &str, field: &str) -> String {
    match selectable_fields(kind).1 {
        Rejection::NotSupported => format!("field label not supported: {field}"),
        Rejection::NotSupportedFor => {
            format!(
                "field label {} not supported for {}",
                go_quote(field),
                go_quote(kind)
            )
        }
        Rejection::Default => format!(
            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            go_quote(field)
        ),
    }
}

/// `obj.pointer(pointer)` for this file's constant pointers, which hold no
/// `~` escapes: without `Value::pointer`'s two string copies per segment
/// (this runs for every selectable field of every write the cache sees).
fn lookup<'a>(obj: &'a Value, pointer: &str) -> Option<&'a Value> {
    debug_assert!(!pointer.contains('~'), "escaped pointer {pointer}");
    pointer.split('/').skip(1).try_fold(obj, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn str_at(obj: &Value, pointer: &str) -> Option<String> {
    lookup(obj, pointer).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    })
}

fn string_at(obj: &Value, pointer: &str) -> String {
    str_at(obj, pointer).unwrap_or_default()
}

fn first_non_empty(obj: &Value, pointers: &[&str]) -> String {
    pointers
        .iter()
        .filter_map(|p| str_at(obj, p))
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

fn bool_at(obj: &Value, pointer: &str) -> String {
    lookup(obj, pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

fn int_at(obj: &Value, pointer: &str) -> String {
    lookup(obj, pointer)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

/// The value of a selectable field of an object of `kind`, as upstream's
/// `ToSelectableFields`/`GetAttrs` computes it; `None` when the kind doesn't support the field.
/// Missing string fields give `""`, booleans `"true"`/`"false"`, integers their decimal form.
///
/// Events may be in core/v1 or events.k8s.io/v1 form; both field name sets are accepted and
/// read from either representation.
pub fn field_value(kind: &str, obj: &Value, field: &str) -> Option<String> {
    if !is_supported_field(kind, field) {
        return None;
    }
    let v = match field {
        "metadata.name" => string_at(obj, "/metadata/name"),
        "metadata.namespace" => string_at(obj, "/metadata/namespace"),
        _ => match kind {
            "Pod" => pod_field(obj, field),
            "Event" => event_field(obj, field),
            "Node" => bool_at(obj, "/spec/unschedulable"),
            "Namespace" => string_at(obj, "/status/phase"),
            "Secret" => string_at(obj, "/type"),
            "ReplicationController" | "ReplicaSet" => int_at(obj, "/status/replicas"),
            "Job" => int_at(obj, "/status/succeeded"),
            "Service" => match field {
                "spec.clusterIP" => string_at(obj, "/spec/clusterIP"),
                _ => string_at(obj, "/spec/type"),
            },
            "CertificateSigningRequest" | "ClusterTrustBundle" => {
                string_at(obj, "/spec/signerName")
            }
            "ResourceSlice" => match field {
                "spec.nodeName" => string_at(obj, "/spec/nodeName"),
                _ => string_at(obj, "/spec/driver"),
            },
            _ => String::new(),
        },
    };
    Some(v)
}

fn pod_field(obj: &Value, field: &str) -> String {
    match field {
        "spec.nodeName" | "spec.host" => string_at(obj, "/spec/nodeName"),
        "spec.restartPolicy" => string_at(obj, "/spec/restartPolicy"),
        "spec.schedulerName" => string_at(obj, "/spec/schedulerName"),
        // v1 → internal conversion falls back to the deprecated serviceAccount field.
        "spec.serviceAccountName" => {
            first_non_empty(obj, &["/spec/serviceAccountName", "/spec/serviceAccount"])
        }
        "spec.hostNetwork" => bool_at(obj, "/spec/hostNetwork"),
        "status.phase" => string_at(obj, "/status/phase"),
        "status.podIP" => first_non_empty(obj, &["/status/podIPs/0/ip", "/status/podIP"]),
        "status.nominatedNodeName" => string_at(obj, "/status/nominatedNodeName"),
        // Accepted by the conversion but absent from the field set: always "".
        _ => String::new(),
    }
}

fn event_field(obj: &Value, field: &str) -> String {
    if let Some(sub) = field
        .strip_prefix("involvedObject.")
        .or_else(|| field.strip_prefix("regarding."))
    {
        return first_non_empty(
            obj,
            &[
                &format!("/involvedObject/{sub}"),
                &format!("/regarding/{sub}"),
            ],
        );
    }
    let reporting = || first_non_empty(obj, &["/reportingComponent", "/reportingController"]);
    match field {
        "reason" => string_at(obj, "/reason"),
        "type" => string_at(obj, "/type"),
        "reportingComponent" | "reportingController" => reporting(),
        "source" => {
            let source =
                first_non_empty(obj, &["/source/component", "/deprecatedSource/component"]);
            if source.is_empty() {
                reporting()
            } else {
                source
            }
        }
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("parse {s:?}: {e}"))
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = sel("");
        assert!(s.is_empty());
        assert!(s.matches(None));
        assert!(s.matches(Some(&labels(json!({"a": "b"})))));
        assert_eq!(s.to_string(), "");
        assert!(sel("   ").is_empty());
    }

    #[test]
    fn equality_operators() {
        let l = labels(json!({"app": "web", "tier": "front"}));
        assert!(sel("app=web").matches(Some(&l)));
        assert!(sel("app==web").matches(Some(&l)));
        assert!(!sel("app=db").matches(Some(&l)));
        assert!(sel("app!=db").matches(Some(&l)));
        assert!(!sel("app!=web").matches(Some(&l)));
        // != matches objects lacking the key
        assert!(sel("missing!=x").matches(Some(&l)));
        assert!(sel("missing!=x").matches(None));
        assert!(!sel("app=web").matches(None));
        assert!(sel("app=web,tier=front").matches(Some(&l)));
        assert!(!sel("app=web,tier=back").matches(Some(&l)));
        // empty value
        assert!(sel("empty=").matches(Some(&labels(json!({"empty": ""})))));
        assert!(!sel("empty=").matches(Some(&l)));
    }

    #[test]
    fn set_based_with_parentheses_and_commas() {
        let s = sel("env in (prod, staging),tier notin (db),app");
        assert_eq!(s.requirements().len(), 3);
        assert_eq!(s.requirements()[1].values(), &["prod", "staging"]);
        assert!(s.matches(Some(&labels(
            json!({"env": "prod", "tier": "web", "app": "x"})
        ))));
        assert!(s.matches(Some(&labels(json!({"env": "staging", "app": "x"})))));
        assert!(!s.matches(Some(&labels(json!({"env": "dev", "app": "x"})))));
        assert!(!s.matches(Some(&labels(
            json!({"env": "prod", "tier": "db", "app": "x"})
        ))));
        assert!(!s.matches(Some(&labels(json!({"env": "prod"})))));
        // sorted by key, values sorted, canonical spacing
        assert_eq!(s.to_string(), "app,env in (prod,staging),tier notin (db)");
        assert_eq!(sel("x in (b,a,b)").to_string(), "x in (a,b)");
        // notin matches objects lacking the key
        assert!(sel("x notin (a)").matches(None));
        // keywords as values and keys
        assert!(sel("in in (in,notin)").matches(Some(&labels(json!({"in": "notin"})))));
        // empty set elements
        assert_eq!(sel("x in ()").requirements()[0].values(), &[""]);
        assert_eq!(sel("x in (,a)").requirements()[0].values(), &["", "a"]);
    }

    #[test]
    fn exists_and_does_not_exist() {
        let l = labels(json!({"a": "1"}));
        assert!(sel("a").matches(Some(&l)));
        assert!(!sel("b").matches(Some(&l)));
        assert!(sel("!b").matches(Some(&l)));
        assert!(!sel("!a").matches(Some(&l)));
        assert!(sel("!a").matches(None));
        assert!(sel(" ! b , a ").matches(Some(&l)));
        assert_eq!(sel("!b,a").to_string(), "a,!b");
        assert_eq!(
            sel("!b").requirements()[0].operator(),
            Operator::DoesNotExist
        );
    }

    #[test]
    fn numeric_operators() {
        let l = labels(json!({"n": "5", "s": "x"}));
        assert!(sel("n>3").matches(Some(&l)));
        assert!(!sel("n>5").matches(Some(&l)));
        assert!(sel("n<6").matches(Some(&l)));
        assert!(!sel("s<6").matches(Some(&l)));
        assert!(!sel("m<6").matches(Some(&l)));
        assert!(LabelSelector::parse("n>x").is_err());
        assert_eq!(sel("n > 3").to_string(), "n>3");
    }

    #[test]
    fn qualified_keys() {
        let l = labels(json!({"app.kubernetes.io/name": "web"}));
        assert!(sel("app.kubernetes.io/name=web").matches(Some(&l)));
        assert!(LabelSelector::parse("Example.com/a=b").is_err());
        assert!(LabelSelector::parse("a/b/c=d").is_err());
        assert!(LabelSelector::parse("/a=b").is_err());
    }

    #[test]
    fn invalid_selectors_rejected() {
        for bad in [
            "a=b=c",
            "a in b",
            "a in (b",
            "a notin",
            "a=(b)",
            ",a",
            "a,",
            "a b",
            "=a",
            "-a=b",
            "a=-b",
            "a in (b c)",
            "!a=b",
            "!",
            "a!b",
            &format!("{}=b", "k".repeat(64)),
            &format!("a={}", "v".repeat(64)),
        ] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn error_messages_follow_upstream() {
        let e = LabelSelector::parse("a=b=c").unwrap_err();
        assert_eq!(e, "found '=', expected: ',' or 'end of string'");
        let e = LabelSelector::parse("a,").unwrap_err();
        assert_eq!(e, "found '', expected: identifier after ','");
        let e = LabelSelector::parse("a x").unwrap_err();
        assert_eq!(
            e,
            "unable to parse requirement: found 'x', expected: in, notin, =, ==, !=, gt, lt"
        );
        let e = LabelSelector::parse("a=b c").unwrap_err();
        assert_eq!(e, "found 'c', expected: ',' or 'end of string'");
        let e = LabelSelector::parse("a=x y!").unwrap_err();
        assert!(e.starts_with("found 'y'"), "{e}");
        let e = LabelSelector::parse("a=-b").unwrap_err();
        assert!(e.starts_with("unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be an empty string"), "{e}");
        let e = LabelSelector::parse("-a").unwrap_err();
        assert!(e.starts_with("unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of alphanumeric characters"), "{e}");
        let e = LabelSelector::parse("!a=b").unwrap_err();
        assert_eq!(e, "found '=', expected: ',' or 'end of string'");
        let e = LabelSelector::parse("a in b").unwrap_err();
        assert_eq!(e, "unable to parse requirement: found 'b' expected: '('");
    }

    #[test]
    fn metav1_label_selector() {
        let s = LabelSelector::from_label_selector_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "tier", "operator": "Exists"},
                {"key": "zone", "operator": "NotIn", "values": ["a"]}
            ]
        }))
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,env in (dev,prod),!legacy,tier,zone notin (a)"
        );
        assert!(s.matches(Some(&labels(
            json!({"app": "web", "env": "dev", "tier": "t"})
        ))));
        assert!(!s.matches(Some(&labels(json!({"app": "web", "env": "dev"})))));

        let all = LabelSelector::from_label_selector_json(&json!({})).unwrap();
        assert!(all.is_empty() && all.matches(None));
        let none = LabelSelector::from_label_selector_json(&Value::Null).unwrap();
        assert!(!none.is_empty() && !none.matches(Some(&labels(json!({"a": "b"})))));

        let e = LabelSelector::from_label_selector_json(&json!({
            "matchExpressions": [{"key": "a", "operator": "Bogus"}]
        }))
        .unwrap_err();
        assert_eq!(e, "\"Bogus\" is not a valid label selector operator");
        let e = LabelSelector::from_label_selector_json(&json!({
            "matchExpressions": [{"key": "a", "operator": "In", "values": []}]
        }))
        .unwrap_err();
        assert_eq!(
            e,
            "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        assert!(
            LabelSelector::from_label_selector_json(&json!({
                "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
            }))
            .is_err()
        );
        assert!(
            LabelSelector::from_label_selector_json(&json!({"matchLabels": {"a": "b c"}})).is_err()
        );
    }

    #[test]
    fn field_selector_parsing_and_escaping() {
        let f = FieldSelector::parse("metadata.name=a\\,b\\=c\\\\d,status.phase!=Running").unwrap();
        let r = f.requirements();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            FieldRequirement {
                field: "metadata.name".into(),
                op: FieldOp::Equals,
                value: "a,b=c\\d".into()
            }
        );
        assert_eq!(r[1].op, FieldOp::NotEquals);
        assert_eq!(r[1].value, "Running");
        assert_eq!(
            f.to_string(),
            "metadata.name=a\\,b\\=c\\\\d,status.phase!=Running"
        );

        let f = FieldSelector::parse("spec.nodeName==n1").unwrap();
        assert_eq!(f.requirements()[0].op, FieldOp::Equals);
        assert_eq!(f.requires_exact_match("spec.nodeName"), Some("n1"));
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse("a=b,,").unwrap().requirements().len() == 1);
        // an empty value is fine
        assert_eq!(
            FieldSelector::parse("spec.nodeName=")
                .unwrap()
                .requirements()[0]
                .value,
            ""
        );

        assert_eq!(
            FieldSelector::parse("abc").unwrap_err(),
            "invalid selector: 'abc'; can't understand 'abc'"
        );
        assert_eq!(
            FieldSelector::parse("a=b\\x").unwrap_err(),
            "invalid field selector: invalid escape sequence: \\x"
        );
        assert_eq!(
            FieldSelector::parse("a=b=c").unwrap_err(),
            "invalid field selector: unescaped character in value: 61"
        );
        assert!(FieldSelector::parse("a=b\\").is_err());
        assert_eq!(escape_field_value("a,b=c\\"), "a\\,b\\=c\\\\");
    }

    #[test]
    fn field_selector_matches() {
        let f = FieldSelector::parse("a=1,b!=2").unwrap();
        let get = |m: &'static [(&'static str, &'static str)]| {
            move |k: &str| m.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert!(f.matches(get(&[("a", "1"), ("b", "3")])));
        assert!(f.matches(get(&[("a", "1")])));
        assert!(!f.matches(get(&[("a", "1"), ("b", "2")])));
        assert!(!f.matches(get(&[("b", "3")])));
        // missing compares as ""
        assert!(FieldSelector::parse("x=").unwrap().matches(get(&[])));
    }

    #[test]
    fn pods_by_node_name() {
        let p1 = json!({"metadata": {"name": "p1", "namespace": "default"},
            "spec": {"nodeName": "node-1", "hostNetwork": true},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}], "podIP": "10.0.0.5"}});
        let p2 = json!({"metadata": {"name": "p2", "namespace": "kube-system"},
            "spec": {}, "status": {"phase": "Pending"}});
        let on_node = FieldSelector::parse("spec.nodeName=node-1").unwrap();
        assert!(on_node.matches_object("Pod", &p1));
        assert!(!on_node.matches_object("Pod", &p2));
        let unscheduled = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(!unscheduled.matches_object("Pod", &p1));
        assert!(unscheduled.matches_object("Pod", &p2));
        let not_running = FieldSelector::parse("status.phase!=Running").unwrap();
        assert!(!not_running.matches_object("Pod", &p1));
        assert!(not_running.matches_object("Pod", &p2));

        assert_eq!(
            field_value("Pod", &p1, "spec.hostNetwork").as_deref(),
            Some("true")
        );
        assert_eq!(
            field_value("Pod", &p2, "spec.hostNetwork").as_deref(),
            Some("false")
        );
        assert_eq!(
            field_value("Pod", &p1, "status.podIP").as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            field_value("Pod", &p1, "spec.host").as_deref(),
            Some("node-1")
        );
        assert_eq!(
            field_value("Pod", &p2, "metadata.namespace").as_deref(),
            Some("kube-system")
        );
        assert_eq!(field_value("Pod", &p1, "spec.containers"), None);
        assert!(
            FieldSelector::parse("spec.nodeName=n,metadata.name=x")
                .unwrap()
                .check_supported("Pod")
                .is_ok()
        );
        assert_eq!(
            FieldSelector::parse("spec.bogus=x")
                .unwrap()
                .check_supported("Pod")
                .unwrap_err(),
            "field label not supported: spec.bogus"
        );
    }

    #[test]
    fn events_by_involved_object() {
        let ev = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "p1.123", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default", "uid": "u-1",
                "apiVersion": "v1", "fieldPath": "spec.containers{c}"},
            "reason": "Pulled", "type": "Normal", "source": {"component": "kubelet"}});
        let s = FieldSelector::parse(
            "involvedObject.kind=Pod,involvedObject.name=p1,involvedObject.namespace=default",
        )
        .unwrap();
        assert!(s.check_supported("Event").is_ok());
        assert!(s.matches_object("Event", &ev));
        assert!(
            !FieldSelector::parse("involvedObject.name=p2")
                .unwrap()
                .matches_object("Event", &ev)
        );
        assert!(
            FieldSelector::parse("involvedObject.uid=u-1,type=Normal,reason=Pulled,source=kubelet")
                .unwrap()
                .matches_object("Event", &ev)
        );
        assert_eq!(
            field_value("Event", &ev, "involvedObject.fieldPath").as_deref(),
            Some("spec.containers{c}")
        );
        assert_eq!(
            field_value("Event", &ev, "involvedObject.resourceVersion").as_deref(),
            Some("")
        );
        assert_eq!(
            field_value("Event", &ev, "reportingComponent").as_deref(),
            Some("")
        );
        assert_eq!(field_value("Event", &ev, "message"), None);

        // events.k8s.io/v1 shape and field names
        let ev2 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "x", "namespace": "ns"},
            "regarding": {"kind": "Node", "name": "n1"},
            "reportingController": "kubelet", "reason": "Ready", "type": "Normal"});
        assert!(
            FieldSelector::parse("regarding.kind=Node,reportingController=kubelet")
                .unwrap()
                .matches_object("Event", &ev2)
        );
        assert_eq!(
            field_value("Event", &ev2, "involvedObject.name").as_deref(),
            Some("n1")
        );
        assert_eq!(
            field_value("Event", &ev2, "source").as_deref(),
            Some("kubelet")
        );
    }

    #[test]
    fn other_kinds_fields() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        assert_eq!(
            field_value("Node", &node, "spec.unschedulable").as_deref(),
            Some("true")
        );
        assert_eq!(
            field_value("Node", &json!({}), "spec.unschedulable").as_deref(),
            Some("false")
        );
        let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls"});
        assert_eq!(
            field_value("Secret", &secret, "type").as_deref(),
            Some("kubernetes.io/tls")
        );
        let ns = json!({"metadata": {"name": "a"}, "status": {"phase": "Active"}});
        assert_eq!(
            field_value("Namespace", &ns, "status.phase").as_deref(),
            Some("Active")
        );
        let rs = json!({"status": {"replicas": 3}});
        assert_eq!(
            field_value("ReplicaSet", &rs, "status.replicas").as_deref(),
            Some("3")
        );
        assert_eq!(
            field_value("ReplicationController", &json!({}), "status.replicas").as_deref(),
            Some("0")
        );
        let job = json!({"status": {"succeeded": 1}});
        assert_eq!(
            field_value("Job", &job, "status.successful").as_deref(),
            Some("1")
        );
        let svc = json!({"spec": {"clusterIP": "None", "type": "ClusterIP"}});
        assert_eq!(
            field_value("Service", &svc, "spec.clusterIP").as_deref(),
            Some("None")
        );
        assert_eq!(
            field_value("Service", &svc, "spec.type").as_deref(),
            Some("ClusterIP")
        );
        // cluster-scoped: empty namespace
        let cr = json!({"metadata": {"name": "admin"}});
        assert_eq!(
            field_value("ClusterRole", &cr, "metadata.namespace").as_deref(),
            Some("")
        );
        assert_eq!(field_value("ConfigMap", &cr, "data"), None);
        assert_eq!(
            supported_field_error("ConfigMap", "data"),
            "field label \"data\" not supported for \"ConfigMap\""
        );
        assert_eq!(
            supported_field_error("Deployment", "spec.replicas"),
            "\"spec.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert_eq!(
            supported_field_error("Node", "status.phase"),
            "field label not supported: status.phase"
        );
    }
}
