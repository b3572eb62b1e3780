/// Progress of a long stage, drawn by the caller (a progress bar, a log line, nothing).
pub trait Progress {
    /// A step of `total` units starts.
    fn begin(&self, step: &str, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The step is over.
    fn end(&self);
}

/// Progress that is not shown.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn end(&self) {}
}
