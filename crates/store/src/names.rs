//! The closed sets of names the store keeps in text columns (a model's status,
//! a job, who started a run): one enum each, so a caller matches on variants
//! instead of comparing strings, and a misspelt name is a compile error. Each
//! is stored, serialised and printed as its lowercase name.

use crate::sql::{FromValue, ToParam, Value};

/// Declares a stored name enum: its variants with their text, `as_str`,
/// `Display`, `FromStr`, serde as the text, and the store's column traits.
macro_rules! stored_names {
    ($(#[$meta:meta])* $name:ident, $what:literal {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored (and printed) name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // `pad`, so widths and alignment in format strings apply.
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?} (one of: {})",
                        $what,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl ToParam for $name {
            fn param(&self) -> Value<'_> {
                Value::Text(self.as_str())
            }
        }

        impl FromValue for $name {
            fn from_value(v: Value<'_>) -> std::result::Result<Self, String> {
                match v {
                    Value::Text(s) => s.parse(),
                    _ => Err(format!("expected a {} name", $what)),
                }
            }
        }
    };
}

stored_names! {
    /// Where a model version is in its life.
    ModelStatus, "model status" {
        /// Reserved; its artifact is being written (or its trainer died).
        Training = "training",
        /// Trained and published; serves only in an experiment.
        Candidate = "candidate",
        /// What recommendations come from (one at a time).
        Active = "active",
        /// Was active or a candidate; kept for rollback and comparison.
        Retired = "retired",
    }
}

stored_names! {
    /// Where a dataset version is in its life.
    DatasetStatus, "dataset status" {
        /// Reserved; its files are being written (or its builder died).
        Building = "building",
        /// Published with its manifest.
        Ready = "ready",
    }
}

stored_names! {
    /// How a dataset version was built.
    DatasetKind, "dataset kind" {
        /// From every interaction in the store (a new major version).
        Full = "full",
        /// The parent's rows plus what arrived since (a new minor version).
        Increment = "increment",
    }
}

stored_names! {
    /// Whether an A/B test still splits traffic.
    ExperimentStatus, "experiment status" {
        /// Splitting traffic and counting.
        Running = "running",
        /// Ended, with an [`crate::Outcome`].
        Stopped = "stopped",
    }
}

stored_names! {
    /// How an experiment ends.
    Outcome, "experiment outcome" {
        /// The treatment becomes the active model.
        Promoted = "promoted",
        /// The treatment is retired; the control keeps serving.
        RolledBack = "rolled_back",
        /// Ended without a decision; nothing changes in the registry.
        Stopped = "stopped",
    }
}

stored_names! {
    /// The journaled jobs (one lease each).
    Job, "job" {
        /// The weekly loop: train when triggered, A/B test, promote or roll back.
        Retrain = "retrain",
        /// The data-quality report.
        Quality = "quality",
        /// Deleting what is older than the retention period.
        Retention = "retention",
    }
}

stored_names! {
    /// Where a job run is.
    JobStatus, "job status" {
        /// Holding the job's lease.
        Running = "running",
        /// Finished and did its work.
        Ok = "ok",
        /// Finished with nothing to do.
        Skipped = "skipped",
        /// Finished with an error (or its process died).
        Failed = "failed",
    }
}

stored_names! {
    /// Who started a job run or an experiment.
    Actor, "starter" {
        /// `serve`'s scheduler.
        Schedule = "schedule",
        /// A `manirec` command.
        Cli = "cli",
        /// The admin HTTP API.
        Admin = "admin",
        /// The weekly loop (an experiment it started).
        Retrain = "retrain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_itself_and_a_stranger_says_what_is_allowed() {
        for s in ModelStatus::ALL {
            assert_eq!(s.as_str().parse::<ModelStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let e = "promotd".parse::<Outcome>().unwrap_err();
        assert!(e.contains("promoted, rolled_back, stopped"), "{e}");
        let j: JobStatus = serde_json::from_str("\"skipped\"").unwrap();
        assert_eq!(j, JobStatus::Skipped);
    }
}
