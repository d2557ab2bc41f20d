//! An untyped YAML tree. Rules files are parsed into it first, so that the
//! loader can check every key and type itself and report the reference
//! service's exact error messages (rather than a serde derive's).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;

/// The most YAML nodes (maps, lists and scalars, counted as written) one
/// rules file may hold: 1,000,000, about 100,000 descriptors (9 to 11 nodes
/// each). It bounds the memory one file takes to parse (its tree is built
/// whole before it is checked); a bigger rule set is split over several
/// files. Aliases are bounded apart from it
/// (serde-saphyr's defaults: 50,000 aliases, 1,000,000 replayed events), so
/// an alias bomb stays small whatever this limit.
pub(crate) const MAX_NODES: usize = 1_000_000;

/// Why a text is not a YAML tree.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ParseError {
    /// Over [`MAX_NODES`].
    TooLarge,
    /// Not YAML (the parser's message, with the line and column).
    Invalid(String),
}

/// One YAML node. Maps keep their key order and duplicates, so the loader can
/// report a duplicate key instead of silently keeping one.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Yaml {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<(Yaml, Yaml)>),
}

impl Yaml {
    /// Parses the first document of `text` (later documents are ignored, as
    /// the reference service does). An empty file is `Null`. A text over
    /// [`MAX_NODES`] is [`ParseError::TooLarge`].
    pub(crate) fn parse(text: &str) -> Result<Yaml, ParseError> {
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_nodes: MAX_NODES,
                // Every node is one event, plus one for each map or list
                // end: the node limit is the one that is reached.
                max_events: 2 * MAX_NODES + 16,
            },
        };
        let docs: Vec<Yaml> =
            serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
                match e.without_snippet() {
                    serde_saphyr::Error::Budget {
                        breach: BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. },
                        ..
                    } => ParseError::TooLarge,
                    _ => ParseError::Invalid(e.to_string()),
                }
            })?;
        Ok(docs.into_iter().next().unwrap_or(Yaml::Null))
    }

    /// How the node reads in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Yaml::Null => "null".to_owned(),
            Yaml::Bool(b) => b.to_string(),
            Yaml::Int(i) => i.to_string(),
            Yaml::Float(f) => f.to_string(),
            Yaml::Str(s) => s.clone(),
            Yaml::Seq(_) => "a list".to_owned(),
            Yaml::Map(_) => "a map".to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Yaml, E> {
        Ok(Yaml::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Yaml, E> {
        Ok(Yaml::Int(v))
    }
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Yaml, E> {
        i128::try_from(v)
            .map(Yaml::Int)
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Yaml, E> {
        Ok(Yaml::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Yaml, E> {
        Ok(Yaml::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_none<E>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Yaml::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Yaml::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scalars_maps_and_lists() {
        let y = Yaml::parse("a: 1\nb: [x, true, null, 0.5]\n").unwrap();
        assert_eq!(
            y,
            Yaml::Map(vec![
                (Yaml::Str("a".into()), Yaml::Int(1)),
                (
                    Yaml::Str("b".into()),
                    Yaml::Seq(vec![
                        Yaml::Str("x".into()),
                        Yaml::Bool(true),
                        Yaml::Null,
                        Yaml::Float(0.5)
                    ])
                ),
            ])
        );
    }

    #[test]
    fn reads_only_the_first_document() {
        let y = Yaml::parse("domain: a\n---\ndomain: b\n").unwrap();
        assert_eq!(
            y,
            Yaml::Map(vec![(Yaml::Str("domain".into()), Yaml::Str("a".into()))])
        );
    }

    #[test]
    fn an_alias_bomb_is_refused_whatever_the_node_limit() {
        // Nine levels of ten aliases each: 10^9 strings once expanded.
        let mut bomb = String::from("a0: &a0 [lol]\n");
        for level in 1..=9 {
            let prev = level - 1;
            let refs = vec![format!("*a{prev}"); 10].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        let err = Yaml::parse(&bomb).unwrap_err();
        assert!(
            matches!(&err, ParseError::Invalid(e) if e.contains("alias") || e.contains("budget")),
            "{err:?}"
        );
    }

    #[test]
    fn empty_text_is_null() {
        assert_eq!(Yaml::parse("").unwrap(), Yaml::Null);
    }

    #[test]
    fn non_string_keys_survive() {
        let y = Yaml::parse("0.25: x\n").unwrap();
        assert_eq!(
            y,
            Yaml::Map(vec![(Yaml::Float(0.25), Yaml::Str("x".into()))])
        );
    }
}
