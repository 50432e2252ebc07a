//! Hand-assembled legacy `torch.save` checkpoints for tests.
//!
//! The encoder writes the same opcodes that Python's pickle protocol 2 emits
//! for a state dict, so tests control every byte of the file.

#![allow(dead_code)]

use std::collections::HashMap;

/// First pickle of every legacy checkpoint.
pub const MAGIC_NUMBER: i128 = 119_547_037_146_038_801_333_356;

/// A pickle under construction, starting with `PROTO 2`.
pub struct Pickle {
    pub bytes: Vec<u8>,
    globals: HashMap<(String, String), u32>,
    next_memo: u32,
}

impl Pickle {
    pub fn new() -> Self {
        Self::with_memo_start(0)
    }

    /// Starts memo indices at `first`; from 256 on the encoder must use
    /// `LONG_BINPUT` and `LONG_BINGET`.
    pub fn with_memo_start(first: u32) -> Self {
        Pickle {
            bytes: vec![0x80, 2],
            globals: HashMap::new(),
            next_memo: first,
        }
    }

    pub fn op(&mut self, opcode: u8) -> &mut Self {
        self.bytes.push(opcode);
        self
    }

    /// Stores the top of the stack in the next memo slot.
    pub fn put(&mut self) -> u32 {
        let index = self.next_memo;
        self.next_memo += 1;
        if index < 256 {
            self.bytes.extend([b'q', index as u8]);
        } else {
            self.bytes.push(b'r');
            self.bytes.extend(index.to_le_bytes());
        }
        index
    }

    pub fn get(&mut self, index: u32) -> &mut Self {
        if index < 256 {
            self.bytes.extend([b'h', index as u8]);
        } else {
            self.bytes.push(b'j');
            self.bytes.extend(index.to_le_bytes());
        }
        self
    }

    /// Pushes `module.name`, through the memo after its first use.
    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        let key = (module.to_owned(), name.to_owned());
        if let Some(&index) = self.globals.get(&key) {
            return self.get(index);
        }
        self.bytes.push(b'c');
        self.bytes.extend(format!("{module}\n{name}\n").bytes());
        let index = self.put();
        self.globals.insert(key, index);
        self
    }

    pub fn int(&mut self, value: i64) -> &mut Self {
        if (0..256).contains(&value) {
            self.bytes.extend([b'K', value as u8]);
        } else if (0..65536).contains(&value) {
            self.bytes.push(b'M');
            self.bytes.extend((value as u16).to_le_bytes());
        } else if i32::try_from(value).is_ok() {
            self.bytes.push(b'J');
            self.bytes.extend((value as i32).to_le_bytes());
        } else {
            self.long(value.into());
        }
        self
    }

    /// Pushes an integer with `LONG1`, in the fewest bytes Python would use.
    pub fn long(&mut self, value: i128) -> &mut Self {
        let raw = value.to_le_bytes();
        let mut len = 16;
        while len > 1 {
            let sign_ok = (raw[len - 2] & 0x80 != 0) == (value < 0);
            let redundant = if value < 0 {
                raw[len - 1] == 0xff
            } else {
                raw[len - 1] == 0
            };
            if redundant && sign_ok {
                len -= 1;
            } else {
                break;
            }
        }
        self.bytes.extend([0x8a, len as u8]);
        self.bytes.extend(&raw[..len]);
        self
    }

    pub fn str(&mut self, text: &str) -> &mut Self {
        self.bytes.push(b'X');
        self.bytes.extend((text.len() as u32).to_le_bytes());
        self.bytes.extend(text.bytes());
        self
    }

    pub fn tuple_of_ints(&mut self, values: &[usize]) -> &mut Self {
        match values.len() {
            0 => self.op(b')'),
            1..=3 => {
                for &v in values {
                    self.int(v as i64);
                }
                self.op(0x84 + values.len() as u8)
            }
            _ => {
                self.op(b'(');
                for &v in values {
                    self.int(v as i64);
                }
                self.op(b't')
            }
        }
    }

    pub fn finish(&mut self) -> Vec<u8> {
        self.bytes.push(b'.');
        std::mem::take(&mut self.bytes)
    }
}

/// One tensor entry of a state dict.
#[derive(Clone)]
pub struct TensorEntry {
    pub name: String,
    pub storage_key: String,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
    /// `(view_key, offset, len)` of the storage view, if any.
    pub view: Option<(String, usize, usize)>,
}

impl TensorEntry {
    pub fn new(name: &str, key: &str, offset: usize, size: &[usize], stride: &[usize]) -> Self {
        TensorEntry {
            name: name.to_owned(),
            storage_key: key.to_owned(),
            offset,
            size: size.to_vec(),
            stride: stride.to_vec(),
            view: None,
        }
    }
}

/// One storage: its torch class name (`FloatStorage`, ...) and raw
/// little-endian elements.
#[derive(Clone)]
pub struct StorageEntry {
    pub key: String,
    pub class: String,
    pub elem_size: usize,
    pub data: Vec<u8>,
}

impl StorageEntry {
    pub fn f32(key: &str, values: &[f32]) -> Self {
        Self::raw(
            key,
            "FloatStorage",
            4,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn i64(key: &str, values: &[i64]) -> Self {
        Self::raw(
            key,
            "LongStorage",
            8,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn raw(key: &str, class: &str, elem_size: usize, data: Vec<u8>) -> Self {
        StorageEntry {
            key: key.to_owned(),
            class: class.to_owned(),
            elem_size,
            data,
        }
    }

    pub fn numel(&self) -> usize {
        self.data.len() / self.elem_size
    }
}

/// A whole legacy checkpoint, split into its parts so tests can alter one.
pub struct Checkpoint {
    pub magic: Vec<u8>,
    pub version: Vec<u8>,
    pub sys_info: Vec<u8>,
    pub state: Vec<u8>,
    pub keys: Vec<u8>,
    pub data: Vec<u8>,
}

impl Checkpoint {
    pub fn build(tensors: &[TensorEntry], storages: &[StorageEntry]) -> Self {
        Self::build_with(tensors, storages, 0, true)
    }

    /// Builds a checkpoint whose state dict memo starts at `memo_start` and
    /// whose system info has the given endianness.
    pub fn build_with(
        tensors: &[TensorEntry],
        storages: &[StorageEntry],
        memo_start: u32,
        little_endian: bool,
    ) -> Self {
        let magic = Pickle::new().long(MAGIC_NUMBER).finish();
        let version = Pickle::new().int(1001).finish();
        let sys_info = sys_info_pickle(little_endian);
        let state = state_dict_pickle(tensors, storages, memo_start);

        let mut keys = Pickle::new();
        keys.op(b']');
        keys.put();
        keys.op(b'(');
        for storage in storages {
            keys.str(&storage.key);
            keys.put();
        }
        let keys = keys.op(b'e').finish();

        let mut data = Vec::new();
        for storage in storages {
            data.extend((storage.numel() as i64).to_le_bytes());
            data.extend(&storage.data);
        }
        Checkpoint {
            magic,
            version,
            sys_info,
            state,
            keys,
            data,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        [
            &self.magic,
            &self.version,
            &self.sys_info,
            &self.state,
            &self.keys,
            &self.data,
        ]
        .into_iter()
        .flatten()
        .copied()
        .collect()
    }

    /// Byte offset of the state dict pickle in [`Checkpoint::bytes`].
    pub fn state_offset(&self) -> usize {
        self.magic.len() + self.version.len() + self.sys_info.len()
    }
}

fn sys_info_pickle(little_endian: bool) -> Vec<u8> {
    let mut p = Pickle::new();
    p.op(b'}');
    p.put();
    p.op(b'(');
    p.str("protocol_version").int(1001);
    p.str("little_endian")
        .op(if little_endian { 0x88 } else { 0x89 });
    p.str("type_sizes").op(b'}');
    p.put();
    p.op(b'(');
    p.str("short").int(2).str("int").int(4).str("long").int(4);
    p.op(b'u').op(b'u').finish()
}

fn state_dict_pickle(
    tensors: &[TensorEntry],
    storages: &[StorageEntry],
    memo_start: u32,
) -> Vec<u8> {
    let class_of = |key: &str| {
        storages
            .iter()
            .find(|s| s.key == key)
            .map(|s| (s.class.clone(), s.numel()))
            .unwrap_or_else(|| ("FloatStorage".to_owned(), 0))
    };
    let mut p = Pickle::with_memo_start(memo_start);
    p.global("collections", "OrderedDict").op(b')').op(b'R');
    p.put();
    p.op(b'(');
    for tensor in tensors {
        let (class, numel) = class_of(&tensor.storage_key);
        p.str(&tensor.name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        // Persistent id of the storage.
        p.op(b'(').str("storage").global("torch", &class);
        p.str(&tensor.storage_key).str("cpu").int(numel as i64);
        match &tensor.view {
            None => p.op(b'N'),
            Some((key, offset, len)) => p.str(key).int(*offset as i64).int(*len as i64).op(0x87),
        };
        p.op(b't').op(b'Q');
        p.int(tensor.offset as i64);
        p.tuple_of_ints(&tensor.size);
        p.tuple_of_ints(&tensor.stride);
        p.op(0x89);
        p.global("collections", "OrderedDict").op(b')').op(b'R');
        p.op(b't').op(b'R');
        p.put();
    }
    p.op(b'u');
    // The `_metadata` attribute that torch attaches to a state dict.
    p.op(b'}')
        .str("_metadata")
        .op(b'}')
        .str("")
        .op(b'}')
        .str("version")
        .int(1);
    p.op(b's').op(b's').op(b's').op(b'b');
    p.finish()
}
