//! The bench's errors. A cell that fails is recorded with its error and the run goes on; these
//! end a whole run.

/// What can stop a bench run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or process operation failed. Check the path or the binary and run again.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A sender or player misbehaved (did not start, said something unexpected). The message
    /// says what; the cell is recorded as failed.
    #[error("{0}")]
    Run(String),
    /// A plot could not be drawn; the results are still written.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The file.
        path: String,
        /// What plotters said.
        reason: String,
    },
}

/// The bench's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an I/O error with what was being done.
pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
