//! One shard file of the `sharding_indexed` codec: its index and the decoding of an inner chunk.
//!
//! A shard file is the inner chunks' zstd frames followed by the index: one little-endian
//! `(offset, nbytes)` pair of `u64` per inner chunk, then the crc32c of those bytes (4 bytes,
//! little endian). An inner chunk absent from the shard has `offset = nbytes = u64::MAX` and reads
//! as the fill value. The zstd frames carry a content checksum, so flipped bytes are caught either
//! by the decoder or by the index's crc32c.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{CoreError, Result};

/// Index entry of an inner chunk that the shard does not hold.
const EMPTY: u64 = u64::MAX;

/// An open shard file with its verified index.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    file: File,
    /// `(offset, nbytes)` per inner chunk.
    index: Vec<(u64, u64)>,
}

impl Shard {
    /// Opens `path` and reads the index of `num_chunks` inner chunks; `Ok(None)` when the file
    /// does not exist (the caller decides whether that is damage or fill values).
    ///
    /// # Errors
    /// [`CoreError::Data`] when the file is shorter than its index, the index checksum fails or
    /// an entry points outside the file.
    pub fn open(path: &Path, num_chunks: usize) -> Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(CoreError::Data(format!(
                    "cannot open shard file {}: {error}",
                    path.display()
                )))
            }
        };
        let damaged =
            |what: String| CoreError::Data(format!("shard file {}: {what}", path.display()));
        let length = file
            .metadata()
            .map_err(|error| damaged(format!("cannot stat: {error}")))?
            .len();
        let index_bytes = num_chunks * 16 + 4;
        if length < index_bytes as u64 {
            return Err(damaged(format!(
                "{length} bytes, shorter than its {index_bytes}-byte index (truncated)"
            )));
        }
        let mut raw = vec![0u8; index_bytes];
        file.read_exact_at(&mut raw, length - index_bytes as u64)
            .map_err(|error| damaged(format!("cannot read the index: {error}")))?;
        let (entries, checksum) = raw.split_at(num_chunks * 16);
        let stored = u32::from_le_bytes(checksum.try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(entries);
        if stored != computed {
            return Err(damaged(format!(
                "index checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            )));
        }
        let data_end = length - index_bytes as u64;
        let index: Vec<(u64, u64)> = entries
            .chunks_exact(16)
            .map(|entry| {
                let offset = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
                let nbytes = u64::from_le_bytes(entry[8..].try_into().expect("8 bytes"));
                (offset, nbytes)
            })
            .collect();
        for (chunk, &(offset, nbytes)) in index.iter().enumerate() {
            let inside = offset
                .checked_add(nbytes)
                .is_some_and(|end| end <= data_end);
            if !(offset == EMPTY && nbytes == EMPTY) && !inside {
                return Err(damaged(format!(
                    "index entry {chunk} points at bytes {offset}+{nbytes} outside the file"
                )));
            }
        }
        Ok(Some(Self {
            path: path.to_path_buf(),
            file,
            index,
        }))
    }

    /// Decodes inner chunk `chunk` into `decoded_bytes` bytes; `Ok(None)` when the shard holds no
    /// such chunk (fill values).
    ///
    /// # Errors
    /// [`CoreError::Data`] when the bytes cannot be read or decompressed, or decompress to the
    /// wrong size.
    pub fn read_chunk(&self, chunk: usize, decoded_bytes: usize) -> Result<Option<Vec<u8>>> {
        let (offset, nbytes) = self.index[chunk];
        if offset == EMPTY && nbytes == EMPTY {
            return Ok(None);
        }
        let damaged = |what: String| {
            CoreError::Data(format!(
                "inner chunk {chunk} of shard file {}: {what}",
                self.path.display()
            ))
        };
        let mut compressed = vec![0u8; nbytes as usize];
        self.file
            .read_exact_at(&mut compressed, offset)
            .map_err(|error| damaged(format!("cannot read: {error}")))?;
        let decoded = zstd::bulk::decompress(&compressed, decoded_bytes)
            .map_err(|error| damaged(format!("zstd cannot decode it: {error}")))?;
        if decoded.len() != decoded_bytes {
            return Err(damaged(format!(
                "decodes to {} bytes, expected {decoded_bytes}",
                decoded.len()
            )));
        }
        Ok(Some(decoded))
    }
}
