//! Checkpoint loading: `model.safetensors` or a sharded `model.safetensors.index.json`, in
//! f32, f16 or bf16, looked up by the checkpoint's own key names. Integer tensors (such as
//! `embeddings.position_ids`) are not weights and are skipped.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where model loaders read weights from: a checkpoint folder, or random weights for
/// benchmarks of shapes nobody needs to download.
pub trait WeightSource {
    fn contains(&self, name: &str) -> bool;
    /// The tensor as f32, checked against `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<HostTensor>;
}

/// A float tensor on the host, converted to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        HostTensor { shape, data }
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One safetensors file, read whole, with its header parsed once: `get` slices a tensor's
/// bytes by the offsets the header gave (parsing the header again for every tensor made a
/// load quadratic in the tensors of a shard).
struct Shard {
    path: PathBuf,
    bytes: Vec<u8>,
    /// where the tensors' data starts in `bytes`: the 8-byte length and the header
    data_start: usize,
    /// the header, checked by the crate against `bytes` when the shard was read
    header: Metadata,
}

/// The float tensors of a checkpoint folder, by name, with the dtype each was stored in.
pub struct WeightStore {
    shards: Vec<Shard>,
    /// name -> (shard index, stored dtype, shape)
    index: BTreeMap<String, (usize, Dtype, Vec<usize>)>,
    /// the tensors of other dtypes (integers such as `position_ids`, or quantized weights):
    /// name -> (shard index, stored dtype), so that asking for one as a weight names its
    /// dtype (it was "missing")
    others: BTreeMap<String, (usize, Dtype)>,
    /// config.json's `quantization_config.quant_method` ("gptq", "awq", "bitsandbytes"...):
    /// a missing float weight is then named as a quantized one, which is not read
    quantized: Option<String>,
}

fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
}

/// The dtypes a weight, a prompt or an expected output may be stored in, for messages.
pub const FLOAT_DTYPES: &str = "F32, F16, BF16 or F64";

impl WeightStore {
    /// Opens `dir/model.safetensors`, or the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<WeightStore> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files = if single.exists() {
            vec![single]
        } else if index.exists() {
            shard_files(&index)?
        } else {
            return Err(Error::file(
                dir,
                "no model.safetensors or model.safetensors.index.json in this folder \
                 (a Hugging Face model folder is expected)",
            ));
        };
        // read whole into memory: within what this process may allocate
        let bytes: u128 = (files.iter())
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| u128::from(m.len()))
            .sum();
        crate::memory::check_host_room(dir, "its weight files", bytes)?;
        let mut store = WeightStore::from_files(&files)?;
        store.quantized = quant_method(&dir.join("config.json"));
        Ok(store)
    }

    pub fn from_files(files: &[PathBuf]) -> Result<WeightStore> {
        let mut store = WeightStore {
            shards: Vec::new(),
            index: BTreeMap::new(),
            others: BTreeMap::new(),
            quantized: None,
        };
        for path in files {
            let read = Shard::read(path)?;
            let shard = store.shards.len();
            for (name, info) in read.header.tensors() {
                store.refuse_twice_stored(&name, path)?;
                if is_float(info.dtype) {
                    store
                        .index
                        .insert(name, (shard, info.dtype, info.shape.clone()));
                } else {
                    store.others.insert(name, (shard, info.dtype));
                }
            }
            store.shards.push(read);
        }
        Ok(store)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(|s| s.as_str())
    }

    /// The elements of every float tensor, summed.
    pub fn float_elements(&self) -> u128 {
        self.elements().sum()
    }

    /// The elements of the largest float tensor.
    pub fn largest_elements(&self) -> u128 {
        self.elements().max().unwrap_or(0)
    }

    fn elements(&self) -> impl Iterator<Item = u128> + '_ {
        (self.index.values()).map(|(_, _, shape)| shape.iter().map(|&n| n as u128).product())
    }

    /// (stored dtype, shape) of a tensor.
    pub fn info(&self, name: &str) -> Option<(Dtype, &[usize])> {
        self.index.get(name).map(|(_, d, s)| (*d, s.as_slice()))
    }

    /// A tensor stored in two shards: which copy the index's `weight_map` meant is not known
    /// once the shards are merged (the later one silently won), so the folder is refused
    /// naming both files.
    fn refuse_twice_stored(&self, name: &str, path: &Path) -> Result<()> {
        let earlier = (self.index.get(name).map(|(s, ..)| *s))
            .or_else(|| self.others.get(name).map(|(s, _)| *s));
        match earlier {
            None => Ok(()),
            Some(shard) => Err(Error::tensor(
                name,
                format!(
                    "stored in two shards, {} and {}: expected each tensor in one shard (the one \
                     model.safetensors.index.json's weight_map names)",
                    self.shard_path(shard),
                    path.display()
                ),
            )),
        }
    }

    /// What a missing or non-float weight is, where config.json says the checkpoint is
    /// quantized: otherwise the user hunts for a tensor stored under other names (GPTQ's
    /// `qweight`, `scales`) or dtypes.
    fn quantized_note(&self) -> String {
        match &self.quantized {
            Some(method) => format!(
                "; config.json's quantization_config says quant_method {method:?}: quantized \
                 checkpoints are not read (softprompt reads float weights, {FLOAT_DTYPES}): use \
                 the model's unquantized release"
            ),
            None => String::new(),
        }
    }

    fn shard_path(&self, shard: usize) -> String {
        (self.shards.get(shard)).map_or_else(String::new, |s| s.path.display().to_string())
    }
}

impl WeightSource for WeightStore {
    /// A tensor of another dtype is there too: a quantized `lm_head.weight` read as absent
    /// would tie the head to the embeddings without a word; `get` names its dtype instead.
    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name) || self.others.contains_key(name)
    }

    /// Reads a tensor as f32, checking its shape.
    fn get(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        if let Some((shard, dtype)) = self.others.get(name) {
            return Err(Error::tensor(
                name,
                format!(
                    "is there in {} with dtype {dtype:?}: expected a float tensor ({FLOAT_DTYPES}) \
                     of shape {shape:?}{}",
                    self.shard_path(*shard),
                    self.quantized_note()
                ),
            ));
        }
        let (shard, _, stored_shape) = self.index.get(name).ok_or_else(|| {
            let files: Vec<String> = self
                .shards
                .iter()
                .map(|s| s.path.display().to_string())
                .collect();
            Error::tensor(
                name,
                format!(
                    "missing from {} (expected shape {shape:?} from config.json){}",
                    files.join(", "),
                    self.quantized_note()
                ),
            )
        })?;
        if stored_shape.as_slice() != shape {
            return Err(Error::tensor(
                name,
                format!(
                    "has shape {stored_shape:?} in {}, expected {shape:?} from config.json",
                    self.shard_path(*shard)
                ),
            ));
        }
        let shard = self
            .shards
            .get(*shard)
            .ok_or_else(|| Error::tensor(name, "indexed in a shard that was not read"))?;
        let (dtype, bytes) = shard.tensor(name)?;
        let data = to_f32(dtype, bytes).ok_or_else(|| {
            Error::tensor(
                name,
                format!(
                    "has dtype {dtype:?} in {}: expected {FLOAT_DTYPES}",
                    shard.path.display()
                ),
            )
        })?;
        check_finite(name, &data, &shard.path)?;
        Ok(HostTensor::new(shape.to_vec(), data))
    }
}

impl Shard {
    /// Reads `path` whole and parses its header, or an error naming the file (and the tensor
    /// at fault, where one is).
    fn read(path: &Path) -> Result<Shard> {
        let bytes =
            crate::fsutil::read_tensor_file(path, |file, size| read_head(path, file, size))?;
        let (n, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| bad_file(path, &bytes, e))?;
        Ok(Shard {
            path: path.to_path_buf(),
            bytes,
            data_start: n.saturating_add(8),
            header,
        })
    }

    /// The stored dtype and bytes of the tensor `name`, by the offsets of the header parsed
    /// when the shard was read (the crate checked them against the file then).
    fn tensor(&self, name: &str) -> Result<(Dtype, &[u8])> {
        let at = |msg: &str| Error::tensor(name, format!("in {}: {msg}", self.path.display()));
        let info = (self.header.info(name)).ok_or_else(|| at("not in the file's header"))?;
        let (start, end) = info.data_offsets;
        let bytes = (self.data_start.checked_add(start))
            .zip(self.data_start.checked_add(end))
            .and_then(|(a, b)| self.bytes.get(a..b))
            .ok_or_else(|| at("its data_offsets lie past the end of the file"))?;
        Ok((info.dtype, bytes))
    }
}

/// A weight that holds NaN or ±inf would train into a NaN prompt without a word: refuse it
/// at load, naming the tensor, the first bad element and the file.
fn check_finite(name: &str, data: &[f32], path: &Path) -> Result<()> {
    let bad = data.iter().filter(|x| !x.is_finite()).count();
    match data.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::tensor(
            name,
            format!(
                "holds {bad} non-finite value(s) ({} at flat index {i}) in {}: the file is \
                 corrupt or was saved after a diverged run",
                data.get(i).copied().unwrap_or(f32::NAN),
                path.display()
            ),
        )),
    }
}

/// Deterministic random weights for every name `present` accepts: N(0, std) for matrices,
/// ones for norm scales, zeros for biases. Each tensor draws from its own stream, keyed by its
/// name, so the values do not depend on load order.
pub struct RandomWeights {
    pub seed: u64,
    pub std: f32,
    pub present: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// round every value to bf16, so that a float reference and a bf16 device hold the same
    /// weights
    pub bf16: bool,
}

impl WeightSource for RandomWeights {
    fn contains(&self, name: &str) -> bool {
        (self.present)(name)
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        use rayon::prelude::*;
        if !self.contains(name) {
            return Err(Error::tensor(name, "not part of this random model"));
        }
        let n: usize = shape.iter().product();
        // BERT's `LayerNorm`, T5's `layer_norm`, BLOOM's `*layernorm` and `ln_f`, Llama's `*norm`
        let is_norm = name.ends_with("LayerNorm.weight")
            || name.ends_with("norm.weight")
            || name.ends_with("ln_f.weight");
        let data = if is_norm {
            vec![1.0; n]
        } else if name.ends_with("bias") {
            vec![0.0; n]
        } else {
            let key = name
                .bytes()
                .fold(self.seed ^ 0xcbf2_9ce4_8422_2325, |h, b| {
                    (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
                });
            let mut data = vec![0.0f32; n];
            data.par_chunks_mut(1 << 16)
                .enumerate()
                .for_each(|(i, chunk)| {
                    let mut rng = crate::rng::Rng::new(key.wrapping_add(i as u64));
                    chunk
                        .iter_mut()
                        .for_each(|x| *x = rng.normal() as f32 * self.std);
                });
            data
        };
        let data = if self.bf16 {
            data.into_iter()
                .map(|x| half::bf16::from_f32(x).to_f32())
                .collect()
        } else {
            data
        };
        Ok(HostTensor::new(shape.to_vec(), data))
    }
}

/// config.json's `quantization_config.quant_method`, "unnamed" for a quantization_config
/// without one (older bitsandbytes configs); None without a quantization_config, or when the
/// file cannot be read (the config's own loader reports that).
fn quant_method(config: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let q = v.get("quantization_config").filter(|q| !q.is_null())?;
    let method = q.get("quant_method").and_then(|m| m.as_str());
    Some(method.unwrap_or("unnamed").to_string())
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = crate::fsutil::read_json_text(index)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(index, format!("not valid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::file(index, "missing the `weight_map` object"))?;
    // no shard at all: every weight was then "missing from" a list of no files
    if map.is_empty() {
        return Err(Error::file(
            index,
            "`weight_map` is empty: expected each tensor's name mapped to the shard file of \
             this folder that holds it (such as \"model-00001-of-00002.safetensors\")",
        ));
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| Error::file(index, format!("weight_map[{name}] is not a file name")))?;
        // a shard is a file of this folder: no other folder, no device, no `..`
        let mut parts = Path::new(file).components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(std::path::Component::Normal(_)), None)
        ) {
            return Err(Error::file(
                index,
                format!(
                    "weight_map[{name}] is {file:?}: expected the name of a file in this folder"
                ),
            ));
        }
        let path = dir.join(file);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The crate's refusal of `path` in words: for most faults it names no tensor ("incomplete
/// metadata, file not fully covered"), so the header is read again here to find the one at
/// fault; its own words when nothing more is found.
fn bad_file(path: &Path, bytes: &[u8], e: safetensors::SafeTensorError) -> Error {
    let why = header_fault(bytes.len() as u64, bytes).unwrap_or_else(|| e.to_string());
    not_safetensors(path, why)
}

fn not_safetensors(path: &Path, why: String) -> Error {
    Error::file(
        path,
        format!("not a valid safetensors file (truncated or corrupt?): {why}"),
    )
}

/// The longest header the safetensors crate reads (its MAX_HEADER_SIZE).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The head of the safetensors file `file` of `size` bytes, its 8-byte header length and
/// the header, refused where the crate would refuse them or they do not account for the
/// file's length: a 1 TB sparse adapter was read whole before its header was, and aborted
/// the server (hostile pass 34, F0); one whose header did not parse was still read whole
/// (verification 33, N1).
fn read_head(path: &Path, file: &mut std::fs::File, size: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |e| Error::io(path, e);
    let mut head = Vec::new();
    file.by_ref().take(8).read_to_end(&mut head).map_err(io)?;
    let n = <[u8; 8]>::try_from(head.as_slice()).map(u64::from_le_bytes);
    if let Some(n) = n.ok().filter(|&n| n <= MAX_HEADER_BYTES) {
        file.by_ref().take(n).read_to_end(&mut head).map_err(io)?;
    }
    match head_fault(size, &head) {
        Some(why) => Err(not_safetensors(path, why)),
        None => Ok(head),
    }
}

/// Why the head `head` of a safetensors file of `total` bytes is refused, if it is: a fault
/// `header_fault` names, else the crate's own words for a header it cannot parse, or a
/// length the header's tensors do not span.
fn head_fault(total: u64, head: &[u8]) -> Option<String> {
    if let Some(why) = header_fault(total, head) {
        return Some(why);
    }
    let n = u64::from_le_bytes(<[u8; 8]>::try_from(head.get(..8)?).ok()?);
    if n > MAX_HEADER_BYTES {
        return Some(format!(
            "its header length is {n} bytes, past the {MAX_HEADER_BYTES} a safetensors header \
             may take"
        ));
    }
    let header = std::str::from_utf8(head.get(8..)?);
    let header = match header {
        Err(e) => return Some(format!("invalid UTF-8 in header: {e}")),
        Ok(h) => serde_json::from_str::<safetensors::tensor::Metadata>(h),
    };
    let data = total.saturating_sub(8 + n);
    match header {
        Err(e) => Some(format!("invalid JSON in header: {e}")),
        Ok(m) if m.data_len() as u64 != data => Some(format!(
            "the tensors' data ends at byte {}, but the file holds {data} bytes of data",
            m.data_len()
        )),
        Ok(_) => None,
    }
}

/// The first fault of a safetensors header (an 8-byte little-endian length, that many bytes
/// of JSON, then the tensors' data back to back) that names a length or a tensor, in a file
/// of `total` bytes that begins with `bytes` (its head at least); None when the JSON itself
/// is bad (the crate says where) or no such fault is found.
fn header_fault(total: u64, bytes: &[u8]) -> Option<String> {
    let Some(len) = bytes.get(..8) else {
        return Some(format!(
            "it holds {total} bytes: a safetensors file starts with an 8-byte header length"
        ));
    };
    let n = u64::from_le_bytes(<[u8; 8]>::try_from(len).ok()?);
    let rest = total.saturating_sub(8);
    if n > rest {
        return Some(format!(
            "its header length is {n} bytes, but only {rest} bytes follow it"
        ));
    }
    let header = bytes.get(8..8 + usize::try_from(n).ok()?)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    let data = rest - n;
    let mut spans = Vec::new();
    for (name, info) in header.iter().filter(|(k, _)| *k != "__metadata__") {
        let offsets: [u64; 2] = serde_json::from_value(info.get("data_offsets")?.clone()).ok()?;
        let dtype: Dtype = serde_json::from_value(info.get("dtype")?.clone()).ok()?;
        let shape: Vec<u64> = serde_json::from_value(info.get("shape")?.clone()).ok()?;
        let [start, end] = offsets;
        let at = format!("tensor `{name}` (data_offsets [{start}, {end}])");
        if end < start {
            return Some(format!("{at}: ends before it starts"));
        }
        if end > data {
            return Some(format!(
                "{at} runs past the end of the file's data ({data} bytes after the header)"
            ));
        }
        let bits = (shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d)))
            .and_then(|numel| numel.checked_mul(dtype.bitsize() as u64));
        match bits {
            None => return Some(format!("{at}: shape {shape:?} overflows")),
            Some(bits) if bits != (end - start) * 8 => {
                return Some(format!(
                    "{at}: dtype {dtype:?} and shape {shape:?} take {} bytes, its offsets span {}",
                    bits.div_ceil(8),
                    end - start
                ))
            }
            Some(_) => spans.push((start, end, name)),
        }
    }
    spans.sort_unstable();
    let mut at = 0;
    for (start, end, name) in spans {
        if start != at {
            return Some(format!(
                "tensor `{name}` starts at byte {start} of the data, but the tensor before it \
                 ends at {at}: the tensors must lie back to back"
            ));
        }
        at = end;
    }
    (at != data).then(|| {
        format!("the tensors' data ends at byte {at}, but the file holds {data} bytes of data")
    })
}

/// Converts little-endian f32/f16/bf16/f64 bytes to f32; None for non-float types.
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => le_chunks(bytes).map(f32::from_le_bytes).collect(),
        Dtype::F16 => le_chunks(bytes)
            .map(|b| half::f16::from_le_bytes(b).to_f32())
            .collect(),
        Dtype::BF16 => le_chunks(bytes)
            .map(|b| half::bf16::from_le_bytes(b).to_f32())
            .collect(),
        Dtype::F64 => le_chunks(bytes)
            .map(|b| f64::from_le_bytes(b) as f32)
            .collect(),
        _ => return None,
    };
    Some(out)
}

/// The little-endian N-byte values of `bytes` (safetensors has checked that the length is a
/// multiple of N).
fn le_chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes
        .chunks_exact(N)
        .map(|b| <[u8; N]>::try_from(b).unwrap_or([0; N]))
}

/// Reads every tensor of one safetensors file, floats as f32 and integers as i64, with the
/// file's `__metadata__`. Used for reference files and adapters, which are small.
pub struct TensorFile {
    pub path: PathBuf,
    pub metadata: HashMap<String, String>,
    pub floats: HashMap<String, HostTensor>,
    pub ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
    /// every tensor's stored dtype, those of neither kind included (U32, F8...)
    pub dtypes: HashMap<String, Dtype>,
}

impl TensorFile {
    pub fn read(path: &Path) -> Result<TensorFile> {
        let shard = Shard::read(path)?;
        let mut file = TensorFile {
            path: path.to_path_buf(),
            metadata: shard.header.metadata().clone().unwrap_or_default(),
            floats: HashMap::new(),
            ints: HashMap::new(),
            dtypes: HashMap::new(),
        };
        for (name, info) in shard.header.tensors() {
            let (dtype, bytes) = shard.tensor(&name)?;
            file.dtypes.insert(name.clone(), dtype);
            let shape = info.shape.clone();
            if let Some(data) = to_f32(dtype, bytes) {
                // a saved prompt, head, optimizer state or reference holding NaN would score or
                // train silently wrong
                check_finite(&name, &data, path)?;
                file.floats.insert(name, HostTensor::new(shape, data));
            } else if let Some(data) = to_i64(dtype, bytes) {
                file.ints.insert(name, (shape, data));
            }
        }
        Ok(file)
    }

    pub fn float(&self, name: &str) -> Result<&HostTensor> {
        self.floats
            .get(name)
            .ok_or_else(|| self.missing(name, "float"))
    }

    pub fn int(&self, name: &str) -> Result<&(Vec<usize>, Vec<i64>)> {
        self.ints
            .get(name)
            .ok_or_else(|| self.missing(name, "integer"))
    }

    /// A tensor of another dtype is named as such, with its dtype: "missing" would send the
    /// user looking for a tensor that is there.
    fn missing(&self, name: &str, kind: &str) -> Error {
        let msg = match self.dtypes.get(name) {
            Some(dtype) => {
                let want = match kind {
                    "float" => FLOAT_DTYPES,
                    _ => INT_DTYPES,
                };
                format!(
                    "tensor `{name}` is there, but not of {kind} dtype: it has dtype {dtype:?}, \
                     expected {want}"
                )
            }
            None => format!("missing {kind} tensor `{name}`"),
        };
        Error::file(&self.path, msg)
    }
}

/// The dtypes `TensorFile` reads as integers, for messages.
const INT_DTYPES: &str = "I64, I32, I8, U8 or BOOL";

fn to_i64(dtype: Dtype, bytes: &[u8]) -> Option<Vec<i64>> {
    let out = match dtype {
        Dtype::I64 => le_chunks(bytes).map(i64::from_le_bytes).collect(),
        Dtype::I32 => le_chunks(bytes)
            .map(|b| i32::from_le_bytes(b) as i64)
            .collect(),
        Dtype::U8 | Dtype::BOOL => bytes.iter().map(|&b| b as i64).collect(),
        Dtype::I8 => bytes.iter().map(|&b| b as i8 as i64).collect(),
        _ => return None,
    };
    Some(out)
}

/// Writes tensors to `path` atomically: a temporary file in the same folder, then a rename,
/// so a killed process never leaves a half-written file under the final name.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(
                Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(data),
            )
            .map(|v| (name.to_string(), v))
            .map_err(|e| Error::tensor(*name, format!("cannot serialize: {e}")))
        })
        .collect::<Result<_>>()?;
    let mut bytes = safetensors::serialize(views, metadata)
        .map_err(|e| Error::file(path, format!("cannot serialize: {e}")))?;
    sort_header(&mut bytes);
    crate::fsutil::write_atomic(path, &bytes)
}

/// safetensors writes the metadata map in its HashMap's order, which differs from run to run:
/// with two keys (a checkpoint's state and checksum) equal checkpoints differed byte for byte.
/// The header is written again with every key sorted: the same JSON of the same length, in
/// one order (serde_json's map is sorted).
fn sort_header(bytes: &mut [u8]) {
    let Some(n) = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
        return;
    };
    let end = usize::try_from(u64::from_le_bytes(n)).map_or(0, |n| n.saturating_add(8));
    let Some(header) = bytes.get_mut(8..end) else {
        return;
    };
    // safetensors pads the header with spaces to a multiple of 8 bytes
    let json_len = header.len() - header.iter().rev().take_while(|&&b| b == b' ').count();
    let Some(json) = header.get_mut(..json_len) else {
        return;
    };
    let sorted =
        serde_json::from_slice::<serde_json::Value>(json).and_then(|v| serde_json::to_string(&v));
    if let Some(sorted) = sorted.ok().filter(|s| s.len() == json_len) {
        json.copy_from_slice(sorted.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    /// A file of two metadata keys, written twenty times from fresh maps (each HashMap draws
    /// its own hash keys), is the same bytes every time, and reads back.
    #[test]
    fn files_with_several_metadata_keys_are_written_byte_for_byte_alike() {
        let dir = std::env::temp_dir().join(format!("sp_sorted_header_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("two_keys.safetensors");
        let data = [1.0f32, 2.0, 3.0];
        let mut first: Option<Vec<u8>> = None;
        for _ in 0..20 {
            let meta = (0..6).map(|i| (format!("key{i}"), format!("value {i}")));
            let tensors = [("b", vec![3], &data[..]), ("a", vec![1, 3], &data[..])];
            super::write_safetensors(&path, &tensors, Some(meta.collect())).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(first.get_or_insert_with(|| bytes.clone()), &bytes);
        }
        let bytes = first.unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("a").unwrap().shape(), &[1, 3]);
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["key4"], "value 4");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
