use std::collections::BTreeMap;

use serde::Serialize;

/// How many examples of problems a summary keeps.
const EXAMPLES: usize = 10;

/// Rows a stage could not use (or used with a caveat), counted by reason, with the
/// first few named so that a person can find them.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Problems {
    /// Rows concerned.
    pub count: u64,
    /// Count per reason.
    pub reasons: BTreeMap<String, u64>,
    /// The first few rows, named.
    pub examples: Vec<RowProblem>,
}

/// One row a stage had a problem with.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RowProblem {
    /// Where: `orders row 17 (id "o-9")`, `line 42`.
    pub row: String,
    /// What is wrong.
    pub reason: String,
    /// The offending value or parser message, where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Problems {
    /// Records a problem with `row`.
    pub fn add(&mut self, row: impl Into<String>, reason: impl Into<String>) {
        self.add_detailed(row, reason, None);
    }

    /// Records a problem with `row`; `detail` (the bad value) is kept in the
    /// example only, so that reasons stay countable.
    pub fn add_detailed(
        &mut self,
        row: impl Into<String>,
        reason: impl Into<String>,
        detail: Option<String>,
    ) {
        let reason = reason.into();
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(RowProblem {
                row: row.into(),
                reason: reason.clone(),
                detail,
            });
        }
        *self.reasons.entry(reason).or_default() += 1;
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Why a row was rejected: a countable reason and the particular value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reason, without row-specific values.
    pub reason: String,
    /// The offending value or parser message.
    pub detail: Option<String>,
}

impl Rejection {
    /// A reason with the value that caused it.
    pub fn new(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
            detail: Some(detail.into()),
        }
    }
}

impl From<String> for Rejection {
    fn from(reason: String) -> Self {
        Rejection {
            reason,
            detail: None,
        }
    }
}

impl From<&str> for Rejection {
    fn from(reason: &str) -> Self {
        reason.to_owned().into()
    }
}
