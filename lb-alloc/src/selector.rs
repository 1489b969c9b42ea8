//! Label selectors (`matchLabels` + `matchExpressions`), evaluated the way
//! Kubernetes evaluates them.

use std::collections::BTreeMap;
use std::fmt;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A Kubernetes label selector. The empty selector matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    match_labels: Labels,
    match_expressions: Vec<Requirement>,
}

/// The operator of a `matchExpressions` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl std::str::FromStr for Operator {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => return Err(SelectorError::UnknownOperator(other.to_owned())),
        })
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// A requirement; `In`/`NotIn` need values, `Exists`/`DoesNotExist` take none.
    pub fn new(key: impl Into<String>, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        let key = key.into();
        if key.is_empty() {
            return Err(SelectorError::EmptyKey);
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError::MissingValues { key, operator });
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError::UnexpectedValues { key, operator });
            }
            _ => {}
        }
        Ok(Self { key, operator, values })
    }

    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl LabelSelector {
    /// A selector from `matchLabels` and `matchExpressions`.
    pub fn new(match_labels: Labels, match_expressions: Vec<Requirement>) -> Self {
        Self {
            match_labels,
            match_expressions,
        }
    }

    /// A selector that requires exactly these labels.
    pub fn from_labels<K: Into<String>, V: Into<String>>(labels: impl IntoIterator<Item = (K, V)>) -> Self {
        Self::new(
            labels.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            Vec::new(),
        )
    }

    /// Whether the labels satisfy every term (the empty selector matches all).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let s = if first { "" } else { "," };
            first = false;
            f.write_str(s)
        };
        for (k, v) in &self.match_labels {
            sep(f)?;
            write!(f, "{k}={v}")?;
        }
        for r in &self.match_expressions {
            sep(f)?;
            match r.operator {
                Operator::In => write!(f, "{} in ({})", r.key, r.values.join(","))?,
                Operator::NotIn => write!(f, "{} notin ({})", r.key, r.values.join(","))?,
                Operator::Exists => write!(f, "{}", r.key)?,
                Operator::DoesNotExist => write!(f, "!{}", r.key)?,
            }
        }
        Ok(())
    }
}

/// Why a selector is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// An operator other than In, NotIn, Exists, DoesNotExist.
    #[error("unknown operator {0:?}; expected In, NotIn, Exists or DoesNotExist")]
    UnknownOperator(String),
    /// A requirement without a key.
    #[error("a matchExpressions entry has an empty key")]
    EmptyKey,
    /// In/NotIn without values.
    #[error("operator {operator:?} on key {key:?} needs at least one value")]
    MissingValues {
        /// The label key.
        key: String,
        /// The operator.
        operator: Operator,
    },
    /// Exists/DoesNotExist with values.
    #[error("operator {operator:?} on key {key:?} takes no values")]
    UnexpectedValues {
        /// The label key.
        key: String,
        /// The operator.
        operator: Operator,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn empty_selector_matches_all() {
        assert!(LabelSelector::default().matches(&Labels::new()));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = LabelSelector::new(
            labels(&[("team", "a")]),
            vec![
                Requirement::new("env", Operator::In, vec!["prod".into(), "stage".into()]).unwrap(),
                Requirement::new("legacy", Operator::DoesNotExist, vec![]).unwrap(),
            ],
        );
        assert!(s.matches(&labels(&[("team", "a"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("team", "a"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("team", "b"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("team", "a"), ("env", "prod"), ("legacy", "")])));
        assert_eq!(s.to_string(), "team=a,env in (prod,stage),!legacy");
    }

    #[test]
    fn not_in_matches_absent_label() {
        let s = LabelSelector::new(
            Labels::new(),
            vec![Requirement::new("env", Operator::NotIn, vec!["prod".into()]).unwrap()],
        );
        assert!(s.matches(&Labels::new()));
        assert!(!s.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn invalid_requirements() {
        assert!(Requirement::new("k", Operator::In, vec![]).is_err());
        assert!(Requirement::new("k", Operator::Exists, vec!["x".into()]).is_err());
        assert!(Requirement::new("", Operator::Exists, vec![]).is_err());
        assert!("Maybe".parse::<Operator>().is_err());
    }
}
