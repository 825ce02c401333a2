//! One dataset group of a lamforge store, opened for random reads of frame rows.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::array::{ArrayMeta, DataType};
use super::cache::ClockCache;
use super::shard::Shard;
use crate::error::{CoreError, Result};

/// The arrays the loader reads. Charges and magnetic moments are not used by DPA-2 training and
/// are not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `[num_frames + 1]` int64.
    AtomOffsets,
    /// `[num_atoms, 3]` float64.
    Positions,
    /// `[num_atoms]` uint8.
    AtomicNumbers,
    /// `[num_atoms, 3]` float64, optional.
    Forces,
    /// `[num_frames, 3, 3]` float64.
    Cell,
    /// `[num_frames, 3]` bool.
    Pbc,
    /// `[num_frames]` float64.
    Energy,
    /// `[num_frames, 3, 3]` float64, optional.
    Virial,
    /// `[num_frames]` bool.
    HasEnergy,
    /// `[num_frames]` bool, optional.
    HasForces,
    /// `[num_frames]` bool, optional.
    HasVirial,
}

impl Field {
    /// Every field, in a fixed order (their index is `Field as usize`).
    pub const ALL: [Field; 11] = [
        Field::AtomOffsets,
        Field::Positions,
        Field::AtomicNumbers,
        Field::Forces,
        Field::Cell,
        Field::Pbc,
        Field::Energy,
        Field::Virial,
        Field::HasEnergy,
        Field::HasForces,
        Field::HasVirial,
    ];

    /// Name of the array in the dataset group.
    pub fn name(self) -> &'static str {
        match self {
            Field::AtomOffsets => "atom_offsets",
            Field::Positions => "positions",
            Field::AtomicNumbers => "atomic_numbers",
            Field::Forces => "forces",
            Field::Cell => "cell",
            Field::Pbc => "pbc",
            Field::Energy => "energy",
            Field::Virial => "virial",
            Field::HasEnergy => "has_energy",
            Field::HasForces => "has_forces",
            Field::HasVirial => "has_virial",
        }
    }

    fn optional(self) -> bool {
        matches!(
            self,
            Field::Forces | Field::Virial | Field::HasForces | Field::HasVirial
        )
    }

    /// Arrays whose fill value is never valid data: each of their shard files must exist
    /// (`DENSE_ARRAYS` of `lamforge.data.format`).
    fn dense(self) -> bool {
        matches!(
            self,
            Field::AtomOffsets | Field::Positions | Field::AtomicNumbers | Field::Cell
        )
    }

    fn data_type(self) -> DataType {
        match self {
            Field::AtomOffsets => DataType::Int64,
            Field::AtomicNumbers => DataType::UInt8,
            Field::Pbc | Field::HasEnergy | Field::HasForces | Field::HasVirial => DataType::Bool,
            _ => DataType::Float64,
        }
    }
}

/// A value type that can be read out of a decoded chunk.
pub trait Element: Copy {
    /// The stored type it decodes.
    const TYPE: DataType;
    /// Decodes one little-endian element.
    fn decode(bytes: &[u8]) -> Self;
}

impl Element for f64 {
    const TYPE: DataType = DataType::Float64;
    #[inline]
    fn decode(bytes: &[u8]) -> Self {
        f64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }
}

impl Element for i64 {
    const TYPE: DataType = DataType::Int64;
    #[inline]
    fn decode(bytes: &[u8]) -> Self {
        i64::from_le_bytes(bytes.try_into().expect("8 bytes"))
    }
}

impl Element for u8 {
    const TYPE: DataType = DataType::UInt8;
    #[inline]
    fn decode(bytes: &[u8]) -> Self {
        bytes[0]
    }
}

impl Element for bool {
    const TYPE: DataType = DataType::Bool;
    #[inline]
    fn decode(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

/// Key of a decoded inner chunk in the chunk cache shared by all datasets of a loader.
pub type ChunkKey = (u32, u8, usize);
/// Decoded inner chunks (`None`: an inner chunk the shard does not hold, all fill values).
pub type ChunkCache = ClockCache<ChunkKey, Option<Vec<u8>>>;
/// Key of an open shard file: (dataset id, field, shard number).
pub type ShardKey = (u32, u8, usize);
/// Open shard files with their indexes (`None`: the file does not exist).
pub type ShardCache = ClockCache<ShardKey, Option<Shard>>;

/// The caches the datasets of one loader share.
#[derive(Debug, Clone)]
pub struct Caches {
    /// Decoded inner chunks, bounded by bytes.
    pub chunks: Arc<ChunkCache>,
    /// Open shard files, bounded by count (each holds a file descriptor).
    pub shards: Arc<ShardCache>,
}

impl Caches {
    /// Caches of `chunk_bytes` decoded bytes and `open_shards` open files.
    pub fn new(chunk_bytes: usize, open_shards: usize) -> Self {
        Self {
            chunks: Arc::new(ChunkCache::new(chunk_bytes)),
            shards: Arc::new(ShardCache::new(open_shards)),
        }
    }
}

/// A dataset group opened for reading.
#[derive(Debug)]
pub struct Dataset {
    /// Dataset name (the group's directory name).
    pub name: String,
    /// Group directory.
    pub path: PathBuf,
    /// Number of the dataset in its loader (the task id of its frames).
    pub id: u32,
    /// `[num_frames + 1]` first atom of each frame, then the total.
    pub atom_offsets: Vec<i64>,
    arrays: Vec<Option<ArrayMeta>>,
    caches: Caches,
}

impl Dataset {
    /// Opens group `name` of the store at `store`, reading its frame offsets.
    ///
    /// # Errors
    /// [`CoreError::Data`] when the group is not a complete lamforge dataset, an array has an
    /// unsupported layout or the frame offsets are damaged.
    pub fn open(store: &Path, name: &str, id: u32, caches: Caches) -> Result<Self> {
        let path = store.join(name);
        let group_file = path.join("zarr.json");
        let text = std::fs::read_to_string(&group_file).map_err(|error| {
            CoreError::Data(format!(
                "no dataset '{name}' in store {}: cannot read {}: {error}",
                store.display(),
                group_file.display()
            ))
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|error| {
            CoreError::Data(format!("{} is not JSON: {error}", group_file.display()))
        })?;
        if json
            .pointer("/attributes/lamforge/complete")
            .and_then(Value::as_bool)
            != Some(true)
        {
            return Err(CoreError::Data(format!(
                "dataset '{name}' in store {} is not a complete lamforge dataset",
                store.display()
            )));
        }
        let mut arrays = Vec::with_capacity(Field::ALL.len());
        for field in Field::ALL {
            let directory = path.join(field.name());
            if !directory.join("zarr.json").is_file() {
                if !field.optional() {
                    return Err(CoreError::Data(format!(
                        "dataset '{name}': required array '{}' is missing ({})",
                        field.name(),
                        directory.display()
                    )));
                }
                arrays.push(None);
                continue;
            }
            let meta = ArrayMeta::open(&directory)?;
            if meta.data_type != field.data_type() {
                return Err(CoreError::Data(format!(
                    "dataset '{name}', array '{}': data type {:?}, expected {:?}",
                    field.name(),
                    meta.data_type,
                    field.data_type()
                )));
            }
            arrays.push(Some(meta));
        }
        let mut dataset = Self {
            name: name.to_string(),
            path,
            id,
            atom_offsets: Vec::new(),
            arrays,
            caches,
        };
        dataset.atom_offsets = dataset.read_offsets()?;
        Ok(dataset)
    }

    fn read_offsets(&self) -> Result<Vec<i64>> {
        let rows = self.meta(Field::AtomOffsets).map_or(0, ArrayMeta::num_rows);
        let mut offsets = vec![0i64; rows];
        self.read_rows(Field::AtomOffsets, 0..rows, &mut offsets, None)?;
        let num_atoms = self.meta(Field::Positions).map_or(0, ArrayMeta::num_rows) as i64;
        let bad = offsets.first() != Some(&0)
            || offsets.windows(2).any(|pair| pair[1] < pair[0])
            || offsets.last() != Some(&num_atoms);
        if bad {
            return Err(CoreError::Data(format!(
                "dataset '{}', array 'atom_offsets': not an increasing list from 0 to the {num_atoms} stored atoms",
                self.name
            )));
        }
        Ok(offsets)
    }

    /// Number of frames.
    pub fn num_frames(&self) -> usize {
        self.atom_offsets.len() - 1
    }

    /// Atom range of frame `frame` in the per-atom arrays.
    pub fn atoms(&self, frame: usize) -> Range<usize> {
        self.atom_offsets[frame] as usize..self.atom_offsets[frame + 1] as usize
    }

    /// Layout of `field`'s array, `None` for an optional array this dataset does not store.
    pub fn meta(&self, field: Field) -> Option<&ArrayMeta> {
        self.arrays[field as usize].as_ref()
    }

    /// Rows per inner chunk of `field` (the locality unit of the shuffle), if stored.
    pub fn chunk_rows(&self, field: Field) -> Option<usize> {
        self.meta(field).map(|meta| meta.chunk_rows)
    }

    fn context(&self, field: Field, frame: Option<usize>) -> String {
        match frame {
            Some(frame) => format!(
                "dataset '{}', array '{}', frame {frame}",
                self.name,
                field.name()
            ),
            None => format!("dataset '{}', array '{}'", self.name, field.name()),
        }
    }

    /// Decoded inner chunk `chunk` of `field` (`None`: fill values), through the caches.
    fn chunk(&self, field: Field, meta: &ArrayMeta, chunk: usize) -> Result<Arc<Option<Vec<u8>>>> {
        let key = (self.id, field as u8, chunk);
        self.caches.chunks.get_or_load(&key, || {
            let shard_id = chunk / meta.chunks_per_shard();
            let shard_key = (self.id, field as u8, shard_id);
            let shard = self.caches.shards.get_or_load(&shard_key, || {
                Shard::open(&meta.shard_path(shard_id), meta.chunks_per_shard()).map(|s| (s, 1))
            })?;
            let Some(shard) = shard.as_ref() else {
                if field.dense() {
                    return Err(CoreError::Data(format!(
                        "shard file {} is missing",
                        meta.shard_path(shard_id).display()
                    )));
                }
                // format.py: a missing shard of a label or mask array reads as fill values.
                return Ok((None, 0));
            };
            let decoded = shard.read_chunk(
                chunk % meta.chunks_per_shard(),
                meta.chunk_rows * meta.row_bytes(),
            )?;
            let cost = decoded.as_ref().map_or(0, Vec::len);
            Ok((decoded, cost))
        })
    }

    /// Reads rows `rows` of `field` into `out` (`rows.len() * row_elements` values). `frame`
    /// names the frame being read in error messages.
    ///
    /// # Errors
    /// [`CoreError::Data`] naming the dataset, array and frame when the array is not stored, a
    /// required shard file is missing or a chunk cannot be decoded; [`CoreError::InvalidInput`]
    /// when `T` is not the stored type or the rows are out of range.
    pub fn read_rows<T: Element>(
        &self,
        field: Field,
        rows: Range<usize>,
        out: &mut [T],
        frame: Option<usize>,
    ) -> Result<()> {
        let meta = self.meta(field).ok_or_else(|| {
            CoreError::Data(format!(
                "{}: the dataset does not store this array",
                self.context(field, frame)
            ))
        })?;
        let row_elements = meta.row_elements;
        if T::TYPE != meta.data_type
            || rows.end > meta.num_rows()
            || out.len() != rows.len() * row_elements
        {
            return Err(CoreError::InvalidInput(format!(
                "{}: cannot read rows {rows:?} of {} as {:?} into {} values",
                self.context(field, frame),
                meta.num_rows(),
                T::TYPE,
                out.len()
            )));
        }
        let size = meta.data_type.size();
        let fill = T::decode(&meta.fill);
        let mut row = rows.start;
        let mut written = 0;
        while row < rows.end {
            let chunk = row / meta.chunk_rows;
            let chunk_end = ((chunk + 1) * meta.chunk_rows).min(rows.end);
            let count = (chunk_end - row) * row_elements;
            let target = &mut out[written..written + count];
            let decoded = self.chunk(field, meta, chunk).map_err(|error| {
                CoreError::Data(format!("{}: {error}", self.context(field, frame)))
            })?;
            match decoded.as_ref() {
                Some(bytes) => {
                    let start = (row - chunk * meta.chunk_rows) * row_elements * size;
                    let source = &bytes[start..start + count * size];
                    for (value, raw) in target.iter_mut().zip(source.chunks_exact(size)) {
                        *value = T::decode(raw);
                    }
                }
                None => target.fill(fill),
            }
            written += count;
            row = chunk_end;
        }
        Ok(())
    }
}
