//! Reader for PyTorch's legacy `torch.save` format, the one written before
//! PyTorch 1.6 switched to zip archives.
//!
//! A legacy file is five pickles followed by raw storage data:
//!
//! 1. the magic number 119547037146038801333356,
//! 2. the protocol version 1001,
//! 3. a dict describing the writer (`little_endian`, `type_sizes`),
//! 4. the saved object, here a state dict whose tensors are built by
//!    `torch._utils._rebuild_tensor_v2` from storages named by persistent ids
//!    `('storage', torch.FloatStorage, key, location, numel, view_metadata)`,
//! 5. the list of storage keys,
//!
//! then, for each key in that list, the storage's element count as a
//! little-endian i64 followed by its elements in little-endian byte order.
//! The layout follows `_legacy_save` and `_legacy_load` in
//! `torch/serialization.py` (PyTorch 1.5).

mod pickle;
mod tensor;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use self::pickle::{read_pickle, Hooks, Value};
use self::tensor::{StorageDtype, StorageRef, TensorRef};
use crate::backbone::Weights;

/// First pickle of every legacy checkpoint.
pub const MAGIC_NUMBER: i128 = 119_547_037_146_038_801_333_356;
/// Second pickle: the version of the legacy format.
pub const PROTOCOL_VERSION: i128 = 1001;

/// Reads the float tensors of a legacy checkpoint file. Errors name the file.
pub fn read_checkpoint_file(path: &Path) -> Result<Weights> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    read_checkpoint(&bytes).with_context(|| {
        format!(
            "failed to read {} as a legacy PyTorch checkpoint",
            path.display()
        )
    })
}

/// Reads the float tensors of a legacy `torch.save` state dict as dense
/// row-major float32 tensors. Half, bfloat16 and double tensors are converted
/// to f32. Integer and bool tensors such as `num_batches_tracked` are skipped.
pub fn read_checkpoint(bytes: &[u8]) -> Result<Weights> {
    if bytes.starts_with(b"PK\x03\x04") {
        bail!(
            "this is a zip archive, as written by torch.save since PyTorch 1.6, \
             but only the legacy format of earlier versions is supported"
        );
    }
    let mut hooks = TorchHooks::default();

    let (magic, pos) = read_pickle(bytes, 0, &mut hooks)
        .context("failed to read the magic number, so this is not a legacy PyTorch checkpoint")?;
    match magic {
        Value::Int(MAGIC_NUMBER) => {}
        Value::Int(other) => bail!(
            "invalid magic number {other}, expected {MAGIC_NUMBER}, so this is not a legacy PyTorch checkpoint"
        ),
        other => bail!(
            "invalid magic number: found a {}, so this is not a legacy PyTorch checkpoint",
            other.type_name()
        ),
    }

    let (version, pos) =
        read_pickle(bytes, pos, &mut hooks).context("failed to read the protocol version")?;
    match version {
        Value::Int(PROTOCOL_VERSION) => {}
        other => {
            bail!("unsupported legacy protocol version {other:?}, expected {PROTOCOL_VERSION}")
        }
    }

    let (sys_info, pos) =
        read_pickle(bytes, pos, &mut hooks).context("failed to read the system info")?;
    check_sys_info(&sys_info)?;

    let state_start = pos;
    let (state, pos) = read_pickle(bytes, pos, &mut hooks)
        .with_context(|| format!("failed to read the state dict at byte offset {state_start}"))?;
    let (keys, mut pos) =
        read_pickle(bytes, pos, &mut hooks).context("failed to read the list of storage keys")?;
    let keys = storage_keys(&keys)?;

    let mut storage_data: HashMap<&str, &[u8]> = HashMap::new();
    for key in &keys {
        let storage = hooks
            .storages
            .get(key.as_str())
            .with_context(|| format!("storage {key} is listed but no persistent id names it"))?;
        let header_end = pos + 8;
        ensure!(
            header_end <= bytes.len(),
            "the file is truncated: the element count of storage {key} at byte offset {pos} is missing"
        );
        let count = i64::from_le_bytes(bytes[pos..header_end].try_into().expect("8 bytes"));
        ensure!(
            count >= 0 && count as u64 == storage.numel as u64,
            "storage {key} at byte offset {pos} has {count} elements, but its persistent id says {}",
            storage.numel
        );
        let len = storage.numel.saturating_mul(storage.dtype.size());
        let end = header_end
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .with_context(|| {
                format!(
                    "the file is truncated: storage {key} needs {len} bytes from byte offset {header_end}, but the file is {} bytes long",
                    bytes.len()
                )
            })?;
        storage_data.insert(key.as_str(), &bytes[header_end..end]);
        pos = end;
    }
    ensure!(
        pos == bytes.len(),
        "{} unexpected bytes follow the last storage at byte offset {pos}",
        bytes.len() - pos
    );

    collect_float_tensors(&state, &storage_data)
}

/// Checks the writer's system info, because only little-endian files are
/// supported.
fn check_sys_info(info: &Value) -> Result<()> {
    let Value::Dict(entries) = info else {
        bail!("the system info is a {}, expected a dict", info.type_name());
    };
    let little_endian = entries
        .borrow()
        .iter()
        .find_map(|(key, value)| match (key, value) {
            (Value::Str(name), Value::Bool(flag)) if name == "little_endian" => Some(*flag),
            _ => None,
        });
    match little_endian {
        Some(true) => Ok(()),
        Some(false) => {
            bail!("the checkpoint was written on a big-endian machine, which is not supported")
        }
        None => bail!("the system info has no little_endian flag"),
    }
}

fn storage_keys(value: &Value) -> Result<Vec<String>> {
    let Value::List(items) = value else {
        bail!(
            "the storage keys are a {}, expected a list",
            value.type_name()
        );
    };
    items
        .borrow()
        .iter()
        .map(|item| match item {
            Value::Str(key) => Ok(key.clone()),
            other => bail!("a storage key is a {}, expected a str", other.type_name()),
        })
        .collect()
}

fn collect_float_tensors(state: &Value, storage_data: &HashMap<&str, &[u8]>) -> Result<Weights> {
    let Value::Dict(entries) = state else {
        bail!(
            "the saved object is a {}, expected a state dict",
            state.type_name()
        );
    };
    let mut weights = Weights::new();
    for (key, value) in entries.borrow().iter() {
        let Value::Str(name) = key else {
            bail!("a state dict key is a {}, expected a str", key.type_name());
        };
        let Value::Tensor(tensor) = value else {
            bail!(
                "state dict entry {name} is a {}, expected a tensor",
                value.type_name()
            );
        };
        if !tensor.storage.dtype.is_float() {
            continue;
        }
        let data = storage_data
            .get(tensor.storage.key.as_str())
            .with_context(|| {
                format!(
                    "tensor {name} uses storage {}, which is missing from the storage key list",
                    tensor.storage.key
                )
            })?;
        let dense = tensor
            .materialize(data)
            .with_context(|| format!("invalid tensor {name}"))?;
        weights.insert(name.clone(), dense);
    }
    Ok(weights)
}

/// Builds storages, tensors and ordered dicts for the unpickler and records
/// every storage that the state dict names.
#[derive(Default)]
struct TorchHooks {
    storages: HashMap<String, StorageRef>,
}

impl Hooks for TorchHooks {
    fn persistent_load(&mut self, pid: Value) -> Result<Value> {
        let Value::Tuple(fields) = &pid else {
            bail!("persistent id is a {}, expected a tuple", pid.type_name());
        };
        let [Value::Str(tag), Value::Global(class), Value::Str(key), Value::Str(_location), Value::Int(numel), view] =
            fields.as_slice()
        else {
            bail!("persistent id {pid:?} is not ('storage', class, key, location, numel, view_metadata)");
        };
        ensure!(tag == "storage", "unsupported persistent id type {tag:?}");
        let (module, class_name) = class.as_ref();
        let dtype = StorageDtype::from_class_name(class_name)
            .filter(|_| module == "torch")
            .with_context(|| format!("unsupported storage type {module}.{class_name}"))?;
        let numel = to_usize(*numel, "storage size")?;

        let previous = self.storages.get(key.as_str());
        if let Some(previous) = previous {
            ensure!(
                previous.dtype == dtype && previous.numel == numel,
                "storage {key} is named as {:?} of {} elements and as {dtype:?} of {numel} elements",
                previous.dtype,
                previous.numel
            );
        }
        let whole = StorageRef {
            key: key.clone(),
            dtype,
            numel,
            offset: 0,
            len: numel,
        };
        self.storages.insert(key.clone(), whole.clone());

        // view_metadata = (view_key, offset, view_size) marks a view into
        // storage `key`; tensors built on it index from the view's start.
        let storage = match view {
            Value::None => whole,
            Value::Tuple(view) => {
                let [Value::Str(_view_key), Value::Int(offset), Value::Int(len)] = view.as_slice()
                else {
                    bail!("storage view metadata {view:?} is not (key, offset, size)");
                };
                let offset = to_usize(*offset, "storage view offset")?;
                let len = to_usize(*len, "storage view size")?;
                ensure!(
                    offset.checked_add(len).is_some_and(|end| end <= numel),
                    "storage view of {len} elements at offset {offset} exceeds storage {key} of {numel} elements"
                );
                StorageRef {
                    offset,
                    len,
                    ..whole
                }
            }
            other => bail!(
                "storage view metadata is a {}, expected a tuple or None",
                other.type_name()
            ),
        };
        Ok(Value::Storage(storage.into()))
    }

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        let Value::Global(global) = &callable else {
            bail!("cannot call a {}", callable.type_name());
        };
        let Value::Tuple(args) = &args else {
            bail!(
                "the arguments of {}.{} are a {}, expected a tuple",
                global.0,
                global.1,
                args.type_name()
            );
        };
        match (global.0.as_str(), global.1.as_str(), args.as_slice()) {
            ("collections", "OrderedDict", []) => Ok(Value::new_dict()),
            // _rebuild_tensor_v2(storage, storage_offset, size, stride,
            // requires_grad, backward_hooks[, metadata]); the older
            // _rebuild_tensor takes only the first four.
            ("torch._utils", "_rebuild_tensor_v2", [storage, offset, size, stride, _, _])
            | ("torch._utils", "_rebuild_tensor_v2", [storage, offset, size, stride, _, _, _])
            | ("torch._utils", "_rebuild_tensor", [storage, offset, size, stride]) => {
                rebuild_tensor(storage, offset, size, stride)
            }
            // _rebuild_parameter(data, requires_grad, backward_hooks)
            ("torch._utils", "_rebuild_parameter", [Value::Tensor(tensor), _, _]) => {
                Ok(Value::Tensor(tensor.clone()))
            }
            (module, name, args) => bail!(
                "unsupported call {module}.{name} with {} arguments",
                args.len()
            ),
        }
    }
}

fn rebuild_tensor(storage: &Value, offset: &Value, size: &Value, stride: &Value) -> Result<Value> {
    let Value::Storage(storage) = storage else {
        bail!(
            "tensor storage is a {}, expected a storage",
            storage.type_name()
        );
    };
    let Value::Int(offset) = offset else {
        bail!(
            "tensor storage offset is a {}, expected an int",
            offset.type_name()
        );
    };
    let tensor = TensorRef {
        storage: storage.as_ref().clone(),
        storage_offset: to_usize(*offset, "tensor storage offset")?,
        size: usize_tuple(size, "tensor size")?,
        stride: usize_tuple(stride, "tensor stride")?,
    };
    Ok(Value::Tensor(tensor.into()))
}

fn usize_tuple(value: &Value, description: &str) -> Result<Vec<usize>> {
    let Value::Tuple(items) = value else {
        bail!("{description} is a {}, expected a tuple", value.type_name());
    };
    items
        .iter()
        .map(|item| match item {
            Value::Int(n) => to_usize(*n, description),
            other => bail!(
                "{description} contains a {}, expected ints",
                other.type_name()
            ),
        })
        .collect()
}

fn to_usize(value: i128, description: &str) -> Result<usize> {
    usize::try_from(value)
        .with_context(|| format!("{description} {value} is negative or too large"))
}
