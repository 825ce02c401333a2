//! One shard file of the `sharding_indexed` codec: its index and the decoding of an inner chunk.
//!
//! A shard file is the inner chunks' zstd frames followed by the index: one little-endian
//! `(offset, nbytes)` pair of `u64` per inner chunk, then the crc32c of those bytes (4 bytes,
//! little endian). An inner chunk absent from the shard has `offset = nbytes = u64::MAX` and reads
//! as the fill value. The zstd frames carry a content checksum, so flipped bytes are caught either
//! by the decoder or by the index's crc32c.

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{CoreError, Result};

/// Index entry of an inner chunk that the shard does not hold.
const EMPTY: u64 = u64::MAX;

thread_local! {
    /// One zstd decompression context and one buffer of compressed bytes per thread, reused for
    /// every inner chunk. Creating a context per chunk cost about half of a cold read: zstd
    /// probes the CPU with `cpuid` in `ZSTD_createDCtx`, which traps to the hypervisor on a
    /// virtual machine, and the context (96 KB) is allocated and freed each time.
    static SCRATCH: RefCell<Option<(zstd::bulk::Decompressor<'static>, Vec<u8>)>> =
        const { RefCell::new(None) };
}

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
            let empty = offset == EMPTY && nbytes == EMPTY;
            if !inside && !empty {
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
        let decoded = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let (decompressor, compressed) = match scratch.as_mut() {
                Some(scratch) => scratch,
                None => {
                    let decompressor = zstd::bulk::Decompressor::new().map_err(|error| {
                        damaged(format!("cannot create a zstd context: {error}"))
                    })?;
                    scratch.insert((decompressor, Vec::new()))
                }
            };
            compressed.resize(nbytes as usize, 0);
            self.file
                .read_exact_at(compressed, offset)
                .map_err(|error| damaged(format!("cannot read: {error}")))?;
            decompressor
                .decompress(compressed, decoded_bytes)
                .map_err(|error| damaged(format!("zstd cannot decode it: {error}")))
        })?;
        if decoded.len() != decoded_bytes {
            return Err(damaged(format!(
                "decodes to {} bytes, expected {decoded_bytes}",
                decoded.len()
            )));
        }
        Ok(Some(decoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard of three inner chunks: `chunks[k]` encoded, `None` left out of the shard.
    fn write_shard(path: &Path, chunks: &[Option<Vec<u8>>]) {
        let mut data = Vec::new();
        let mut index = Vec::new();
        for chunk in chunks {
            match chunk {
                Some(raw) => {
                    let encoded = zstd::bulk::compress(raw, 3).unwrap();
                    index.extend_from_slice(&(data.len() as u64).to_le_bytes());
                    index.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
                    data.extend_from_slice(&encoded);
                }
                None => {
                    index.extend_from_slice(&EMPTY.to_le_bytes());
                    index.extend_from_slice(&EMPTY.to_le_bytes());
                }
            }
        }
        let checksum = crc32c::crc32c(&index);
        data.extend_from_slice(&index);
        data.extend_from_slice(&checksum.to_le_bytes());
        std::fs::write(path, data).unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!("lamforge-shard-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        directory.join(name)
    }

    #[test]
    fn reads_chunks_and_reports_empty_ones() {
        let path = scratch("good");
        let first: Vec<u8> = (0..64).collect();
        let third: Vec<u8> = (100..164).collect();
        write_shard(&path, &[Some(first.clone()), None, Some(third.clone())]);
        let shard = Shard::open(&path, 3).unwrap().unwrap();
        assert_eq!(shard.read_chunk(0, 64).unwrap(), Some(first));
        assert_eq!(shard.read_chunk(1, 64).unwrap(), None);
        assert_eq!(shard.read_chunk(2, 64).unwrap(), Some(third));
        assert!(matches!(shard.read_chunk(2, 32), Err(CoreError::Data(_))));
        assert!(Shard::open(&scratch("absent"), 3).unwrap().is_none());
    }

    #[test]
    fn damage_is_detected_and_named() {
        let path = scratch("damaged");
        write_shard(&path, &[Some(vec![7u8; 64]), Some((0..64).collect())]);
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte of the index: the crc32c no longer matches.
        let at = bytes.len() - 10;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = Shard::open(&path, 2).unwrap_err().to_string();
        assert!(
            error.contains("index checksum mismatch") && error.contains("damaged"),
            "{error}"
        );
        // A file shorter than its index is truncated.
        std::fs::write(&path, [0u8; 10]).unwrap();
        let error = Shard::open(&path, 2).unwrap_err().to_string();
        assert!(error.contains("truncated"), "{error}");
        // Flipped bytes inside a compressed chunk fail zstd's content checksum.
        write_shard(&path, &[Some((0..200).map(|v| (v % 7) as u8).collect())]);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[6] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let shard = Shard::open(&path, 1).unwrap().unwrap();
        let error = shard.read_chunk(0, 200).unwrap_err().to_string();
        assert!(error.contains("inner chunk 0"), "{error}");
    }

    #[test]
    fn the_reused_context_decodes_after_a_failure() {
        // One zstd context per thread serves every chunk: a failed decode must not leak into
        // the next one.
        let good = scratch("reuse-good");
        let chunk: Vec<u8> = (0..300).map(|v| (v % 11) as u8).collect();
        write_shard(&good, &[Some(chunk.clone()), Some(vec![1u8; 40])]);
        let bad = scratch("reuse-bad");
        write_shard(&bad, &[Some(chunk.clone())]);
        let mut bytes = std::fs::read(&bad).unwrap();
        bytes[8] ^= 0x33;
        std::fs::write(&bad, &bytes).unwrap();
        let good = Shard::open(&good, 2).unwrap().unwrap();
        let bad = Shard::open(&bad, 1).unwrap().unwrap();
        for _ in 0..3 {
            assert!(bad.read_chunk(0, 300).is_err());
            assert_eq!(good.read_chunk(0, 300).unwrap(), Some(chunk.clone()));
            assert!(
                good.read_chunk(1, 300).is_err(),
                "wrong size must still be caught"
            );
            assert_eq!(good.read_chunk(1, 40).unwrap(), Some(vec![1u8; 40]));
        }
    }
}
