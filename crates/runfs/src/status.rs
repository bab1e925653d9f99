//! The answer every stage gives about its outputs in a run folder before it runs again.

/// What a stage's outputs in a run folder say about a request to run it again: the answer each
/// stage gives for itself ("is my output up to date for these inputs?").
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Nothing there.
    Absent,
    /// Finished outputs of the same inputs and settings.
    Done,
    /// Begun and not finished (the reason): continue it.
    Partial(String),
    /// Outputs of other inputs or settings: `what: there vs asked`.
    Other(Vec<String>),
}
