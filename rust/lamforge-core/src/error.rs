//! Errors of the core crate. The binding crate maps each variant to one Python exception type.

use thiserror::Error;

/// Every error the core can report. Messages name the argument at fault so that the Python user
/// sees what to fix.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    /// An argument has a value the computation cannot accept (NaN, flat cell, bad cutoff, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// A request would allocate more than the caller's memory budget.
    #[error("{0}")]
    TooLarge(String),
    /// Stored data is missing, damaged or in a layout this reader does not accept; the message
    /// names the dataset, array, frame and file.
    #[error("{0}")]
    Data(String),
}

/// Result type of the core crate.
pub type Result<T> = std::result::Result<T, CoreError>;
