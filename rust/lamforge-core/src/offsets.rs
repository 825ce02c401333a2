//! CSR offsets of ragged layouts: item `i` owns rows `offsets[i]..offsets[i + 1]`.

use crate::error::{CoreError, Result};

/// Checks that `offsets` (`[n + 1]`) starts at 0, never decreases and ends at `num_rows`;
/// errors start with `what` (the kernel family).
pub(crate) fn validate(offsets: &[i64], num_rows: usize, what: &str) -> Result<()> {
    let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
        return Err(CoreError::InvalidInput(format!(
            "{what}: offsets need n + 1 entries, got none"
        )));
    };
    if first != 0 || last != num_rows as i64 {
        return Err(CoreError::InvalidInput(format!(
            "{what}: offsets run from {first} to {last}, expected 0 to {num_rows} (the number of \
             rows)"
        )));
    }
    if let Some(position) = offsets.windows(2).position(|pair| pair[1] < pair[0]) {
        return Err(CoreError::InvalidInput(format!(
            "{what}: offsets decrease at item {position} ({} then {})",
            offsets[position],
            offsets[position + 1]
        )));
    }
    Ok(())
}
