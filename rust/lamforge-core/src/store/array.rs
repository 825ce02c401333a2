//! Metadata of one stored array (`NAME/zarr.json`) and the subset of Zarr v3 this reader accepts.
//!
//! lamforge stores (`lamforge.data.format`) write every array with one codec chain: the
//! `sharding_indexed` codec over a regular chunk grid whose chunks (shards) and inner chunks split
//! only the first dimension; inner chunks encoded `bytes` (little endian) then `zstd`; the shard
//! index encoded `bytes` (little endian) then `crc32c`, at the end of the shard file; chunk keys
//! `c/i/0/...` (default encoding, `/` separator). Anything else is refused with an error naming
//! the file and the unsupported field, instead of being misread.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{CoreError, Result};

/// Element types of lamforge arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// IEEE double, little endian.
    Float64,
    /// Signed 64-bit integer, little endian.
    Int64,
    /// Unsigned byte.
    UInt8,
    /// One byte, 0 or 1.
    Bool,
}

impl DataType {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "float64" => Some(Self::Float64),
            "int64" => Some(Self::Int64),
            "uint8" => Some(Self::UInt8),
            "bool" => Some(Self::Bool),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Float64 | Self::Int64 => 8,
            Self::UInt8 | Self::Bool => 1,
        }
    }
}

/// Layout of one array, read from its `zarr.json`.
#[derive(Debug, Clone)]
pub struct ArrayMeta {
    /// Array name (the directory name).
    pub name: String,
    /// Directory of the array.
    pub path: PathBuf,
    /// Full shape; the first dimension counts atoms or frames.
    pub shape: Vec<usize>,
    /// Element type.
    pub data_type: DataType,
    /// Rows (first-dimension entries) per shard file.
    pub shard_rows: usize,
    /// Rows per inner chunk, the unit of compression.
    pub chunk_rows: usize,
    /// Elements per row (product of the trailing dimensions).
    pub row_elements: usize,
    /// Encoded fill value of one element (little endian).
    pub fill: Vec<u8>,
}

fn unsupported(path: &Path, what: &str) -> CoreError {
    CoreError::Data(format!(
        "{}: {what} (lamforge reads the sharded zstd layout of lamforge.data.format only)",
        path.display()
    ))
}

fn usize_list(value: Option<&Value>) -> Option<Vec<usize>> {
    value?
        .as_array()?
        .iter()
        .map(|item| item.as_u64().map(|v| v as usize))
        .collect()
}

fn fill_bytes(value: &Value, data_type: DataType) -> Option<Vec<u8>> {
    Some(match data_type {
        DataType::Float64 => {
            let number = match value {
                Value::String(text) => match text.as_str() {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    _ => return None,
                },
                other => other.as_f64()?,
            };
            number.to_le_bytes().to_vec()
        }
        DataType::Int64 => value.as_i64()?.to_le_bytes().to_vec(),
        DataType::UInt8 => vec![u8::try_from(value.as_u64()?).ok()?],
        DataType::Bool => vec![u8::from(value.as_bool()?)],
    })
}

/// Checks a codec list against the expected names; `bytes` must be little endian when given.
fn check_codecs(path: &Path, codecs: Option<&Value>, expected: &[&str], what: &str) -> Result<()> {
    let codecs = codecs
        .and_then(Value::as_array)
        .ok_or_else(|| unsupported(path, &format!("no {what}")))?;
    let names: Vec<&str> = codecs
        .iter()
        .map(|codec| codec.get("name").and_then(Value::as_str).unwrap_or("?"))
        .collect();
    if names != expected {
        return Err(unsupported(
            path,
            &format!("{what} are {names:?}, expected {expected:?}"),
        ));
    }
    for codec in codecs {
        let endian = codec
            .pointer("/configuration/endian")
            .and_then(Value::as_str);
        if endian.is_some_and(|endian| endian != "little") {
            return Err(unsupported(path, &format!("{what} use endian {endian:?}")));
        }
    }
    Ok(())
}

impl ArrayMeta {
    /// Reads `directory/zarr.json`.
    ///
    /// # Errors
    /// [`CoreError::Data`] when the file is missing, is not JSON, or describes a layout other
    /// than the lamforge one.
    pub fn open(directory: &Path) -> Result<Self> {
        let path = directory.join("zarr.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|error| CoreError::Data(format!("cannot read {}: {error}", path.display())))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|error| CoreError::Data(format!("{} is not JSON: {error}", path.display())))?;
        if json.get("zarr_format").and_then(Value::as_u64) != Some(3)
            || json.get("node_type").and_then(Value::as_str) != Some("array")
        {
            return Err(unsupported(&path, "not a Zarr v3 array"));
        }
        let shape = usize_list(json.get("shape")).ok_or_else(|| unsupported(&path, "no shape"))?;
        let type_name = json.get("data_type").and_then(Value::as_str).unwrap_or("?");
        let data_type = DataType::parse(type_name)
            .ok_or_else(|| unsupported(&path, &format!("data type {type_name}")))?;
        let grid = &json["chunk_grid"];
        let shard_shape = usize_list(grid.pointer("/configuration/chunk_shape"))
            .filter(|_| grid.get("name").and_then(Value::as_str) == Some("regular"))
            .ok_or_else(|| unsupported(&path, "chunk grid is not regular"))?;
        let key_encoding = &json["chunk_key_encoding"];
        let separator = key_encoding
            .pointer("/configuration/separator")
            .and_then(Value::as_str)
            .unwrap_or("/");
        if key_encoding.get("name").and_then(Value::as_str) != Some("default") || separator != "/" {
            return Err(unsupported(&path, "chunk keys are not 'default' with '/'"));
        }
        let codecs = json.get("codecs").and_then(Value::as_array);
        let sharding = match codecs.map(Vec::as_slice) {
            Some([codec])
                if codec.get("name").and_then(Value::as_str) == Some("sharding_indexed") =>
            {
                &codec["configuration"]
            }
            _ => {
                return Err(unsupported(
                    &path,
                    "codecs are not one sharding_indexed codec",
                ))
            }
        };
        check_codecs(
            &path,
            sharding.get("codecs"),
            &["bytes", "zstd"],
            "inner codecs",
        )?;
        check_codecs(
            &path,
            sharding.get("index_codecs"),
            &["bytes", "crc32c"],
            "index codecs",
        )?;
        if sharding
            .get("index_location")
            .and_then(Value::as_str)
            .unwrap_or("end")
            != "end"
        {
            return Err(unsupported(&path, "shard index is not at the end"));
        }
        let chunk_shape = usize_list(sharding.get("chunk_shape"))
            .ok_or_else(|| unsupported(&path, "no inner chunk shape"))?;
        let rank = shape.len();
        let whole_rows = |other: &[usize]| other.len() == rank && other[1..] == shape[1..];
        if rank == 0
            || !whole_rows(&shard_shape)
            || !whole_rows(&chunk_shape)
            || chunk_shape[0] == 0
            || shard_shape[0] % chunk_shape[0] != 0
        {
            return Err(unsupported(
                &path,
                &format!("shards {shard_shape:?} / inner chunks {chunk_shape:?} of shape {shape:?} do not split rows only"),
            ));
        }
        let fill = json
            .get("fill_value")
            .and_then(|value| fill_bytes(value, data_type))
            .ok_or_else(|| unsupported(&path, "fill value does not match the data type"))?;
        Ok(Self {
            name: directory
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path: directory.to_path_buf(),
            row_elements: shape[1..].iter().product(),
            shape,
            data_type,
            shard_rows: shard_shape[0],
            chunk_rows: chunk_shape[0],
            fill,
        })
    }

    /// Number of rows (first dimension).
    pub fn num_rows(&self) -> usize {
        self.shape[0]
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.row_elements * self.data_type.size()
    }

    /// Inner chunks per shard.
    pub fn chunks_per_shard(&self) -> usize {
        self.shard_rows / self.chunk_rows
    }

    /// Path of shard file `shard`: `c/shard/0/0` for the array's rank.
    pub fn shard_path(&self, shard: usize) -> PathBuf {
        let mut path = self.path.join("c").join(shard.to_string());
        for _ in 1..self.shape.len() {
            path.push("0");
        }
        path
    }
}
