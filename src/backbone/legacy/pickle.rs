//! A pickle reader for the opcodes that legacy `torch.save` files contain.
//!
//! It covers protocol 2 as written by `pickle.Pickler` for dicts, lists,
//! tuples, strings, numbers, globals and persistent ids. Calls (`REDUCE`) and
//! persistent ids (`BINPERSID`) are handed to a [`Hooks`] implementation, so
//! the pickle stream can never run arbitrary code: the hooks build only the
//! few objects they recognise and reject everything else.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};

use super::tensor::{StorageRef, TensorRef};

/// A value on the pickle stack.
#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i128),
    // Read only through `Debug`, when an error message shows the value.
    Float(#[allow(dead_code)] f64),
    Str(String),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    /// Dict entries in insertion order. A repeated string key replaces the
    /// earlier value.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A `module.name` reference pushed by `GLOBAL`.
    Global(Rc<(String, String)>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    /// Short name of the value's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    pub fn new_dict() -> Value {
        Value::Dict(Rc::new(RefCell::new(Vec::new())))
    }
}

/// Builds the objects that a pickle stream requests by call or persistent id.
pub trait Hooks {
    /// Resolves the argument of `BINPERSID`.
    fn persistent_load(&mut self, pid: Value) -> Result<Value>;
    /// Applies `callable` (always a [`Value::Global`] in torch files) to the
    /// argument tuple of `REDUCE`.
    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value>;
}

/// Reads one pickle starting at `bytes[start]` and returns its value and the
/// offset just past its `STOP` opcode. Errors name the opcode and the byte
/// offset in `bytes`.
pub fn read_pickle(bytes: &[u8], start: usize, hooks: &mut dyn Hooks) -> Result<(Value, usize)> {
    let mut machine = Machine {
        bytes,
        pos: start,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        let offset = machine.pos;
        let opcode = *bytes.get(offset).ok_or_else(|| {
            anyhow!("the file ends at byte offset {offset} inside a pickle that started at byte offset {start}")
        })?;
        machine.pos += 1;
        let done = machine
            .step(opcode, hooks)
            .with_context(|| format!("{} at byte offset {offset}", describe_opcode(opcode)))?;
        if let Some(value) = done {
            return Ok((value, machine.pos));
        }
    }
}

fn describe_opcode(opcode: u8) -> String {
    if opcode.is_ascii_graphic() {
        format!("pickle opcode 0x{opcode:02x} ({:?})", opcode as char)
    } else {
        format!("pickle opcode 0x{opcode:02x}")
    }
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl Machine<'_> {
    /// Runs one opcode; returns the result when the opcode is `STOP`.
    fn step(&mut self, opcode: u8, hooks: &mut dyn Hooks) -> Result<Option<Value>> {
        match opcode {
            // PROTO: the protocol number is not needed to read the opcodes below.
            0x80 => {
                self.take(1)?;
            }
            // STOP
            b'.' => {
                let value = self.pop()?;
                if !self.stack.is_empty() || !self.marks.is_empty() {
                    bail!("values are left on the stack at the end of the pickle");
                }
                return Ok(Some(value));
            }
            // GLOBAL: "module\nname\n"
            b'c' => {
                let module = self.read_line()?;
                let name = self.read_line()?;
                self.stack.push(Value::Global(Rc::new((module, name))));
            }
            // BINPUT, LONG_BINPUT
            b'q' => {
                let index = u32::from(self.take(1)?[0]);
                self.memo_put(index)?;
            }
            b'r' => {
                let index = self.read_u32()?;
                self.memo_put(index)?;
            }
            // BINGET, LONG_BINGET
            b'h' => {
                let index = u32::from(self.take(1)?[0]);
                self.memo_get(index)?;
            }
            b'j' => {
                let index = self.read_u32()?;
                self.memo_get(index)?;
            }
            // MARK
            b'(' => self.marks.push(self.stack.len()),
            // EMPTY_DICT, DICT
            b'}' => self.stack.push(Value::new_dict()),
            b'd' => {
                let items = self.pop_mark()?;
                let dict = Value::new_dict();
                set_items(&dict, items)?;
                self.stack.push(dict);
            }
            // EMPTY_LIST, LIST
            b']' => self.stack.push(Value::List(Rc::default())),
            b'l' => {
                let items = self.pop_mark()?;
                self.stack.push(Value::List(Rc::new(RefCell::new(items))));
            }
            // APPEND, APPENDS
            b'a' => {
                let item = self.pop()?;
                append(self.top()?, vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                append(self.top()?, items)?;
            }
            // SETITEM, SETITEMS
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                set_items(self.top()?, vec![key, value])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                set_items(self.top()?, items)?;
            }
            // EMPTY_TUPLE, TUPLE, TUPLE1, TUPLE2, TUPLE3
            b')' => self.push_tuple(Vec::new()),
            b't' => {
                let items = self.pop_mark()?;
                self.push_tuple(items);
            }
            0x85..=0x87 => {
                let count = usize::from(opcode - 0x84);
                if self.stack.len() < count + self.marks.last().copied().unwrap_or(0) {
                    bail!("the stack contains fewer than {count} values");
                }
                let items = self.stack.split_off(self.stack.len() - count);
                self.push_tuple(items);
            }
            // BININT (i32), BININT1 (u8), BININT2 (u16)
            b'J' => {
                let raw = self.take(4)?;
                let value = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
                self.stack.push(Value::Int(value.into()));
            }
            b'K' => {
                let value = self.take(1)?[0];
                self.stack.push(Value::Int(value.into()));
            }
            b'M' => {
                let raw = self.take(2)?;
                let value = u16::from_le_bytes([raw[0], raw[1]]);
                self.stack.push(Value::Int(value.into()));
            }
            // LONG1: a little-endian two's complement integer of n bytes.
            0x8a => {
                let len = usize::from(self.take(1)?[0]);
                let value = decode_long(self.take(len)?)?;
                self.stack.push(Value::Int(value));
            }
            // BINFLOAT: a big-endian IEEE 754 double.
            b'G' => {
                let raw: [u8; 8] = self.take(8)?.try_into().expect("take returned 8 bytes");
                self.stack.push(Value::Float(f64::from_be_bytes(raw)));
            }
            // BINUNICODE, SHORT_BINUNICODE, BINSTRING, SHORT_BINSTRING
            b'X' | b'T' => {
                let len = self.read_u32()? as usize;
                self.push_string(len)?;
            }
            0x8c | b'U' => {
                let len = usize::from(self.take(1)?[0]);
                self.push_string(len)?;
            }
            // NONE, NEWTRUE, NEWFALSE
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            // REDUCE
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let value = hooks.reduce(callable, args)?;
                self.stack.push(value);
            }
            // BINPERSID
            b'Q' => {
                let pid = self.pop()?;
                let value = hooks.persistent_load(pid)?;
                self.stack.push(value);
            }
            // BUILD: torch pickles a state dict's `_metadata` attribute this
            // way. Instance attributes carry no tensor data, so for dicts the
            // state is dropped.
            b'b' => {
                let state = self.pop()?;
                match (self.top()?, &state) {
                    (Value::Dict(_), Value::Dict(_) | Value::None) => {}
                    (target, _) => bail!(
                        "setting the state of a {} from a {} is not supported",
                        target.type_name(),
                        state.type_name()
                    ),
                }
            }
            _ => bail!("unsupported opcode"),
        }
        Ok(None)
    }

    fn take(&mut self, len: usize) -> Result<&[u8]> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            bail!(
                "the file is truncated: {len} bytes are needed at byte offset {} but it is {} bytes long",
                self.pos,
                self.bytes.len()
            );
        };
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn read_u32(&mut self) -> Result<u32> {
        let raw = self.take(4)?;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }

    fn read_line(&mut self) -> Result<String> {
        let rest = &self.bytes[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == b'\n') else {
            bail!("the file is truncated inside a GLOBAL name");
        };
        let line = std::str::from_utf8(&rest[..len])
            .context("a GLOBAL name is not valid UTF-8")?
            .to_owned();
        self.pos += len + 1;
        Ok(line)
    }

    fn push_string(&mut self, len: usize) -> Result<()> {
        let raw = self.take(len)?;
        let text = std::str::from_utf8(raw)
            .context("a string is not valid UTF-8")?
            .to_owned();
        self.stack.push(Value::Str(text));
        Ok(())
    }

    fn push_tuple(&mut self, items: Vec<Value>) {
        self.stack.push(Value::Tuple(Rc::new(items)));
    }

    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            bail!("the stack is empty");
        }
        Ok(self.stack.pop().expect("stack length checked above"))
    }

    fn top(&self) -> Result<&Value> {
        self.stack.last().context("the stack is empty")
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().context("no MARK precedes this opcode")?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let value = self.top()?.clone();
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<()> {
        let value = self
            .memo
            .get(&index)
            .with_context(|| format!("memo entry {index} was never stored"))?
            .clone();
        self.stack.push(value);
        Ok(())
    }
}

fn append(target: &Value, items: Vec<Value>) -> Result<()> {
    let Value::List(list) = target else {
        bail!("cannot append to a {}", target.type_name());
    };
    list.borrow_mut().extend(items);
    Ok(())
}

/// Adds alternating key, value `items` to the dict `target`; a repeated key
/// replaces the earlier value, as in Python.
fn set_items(target: &Value, items: Vec<Value>) -> Result<()> {
    let Value::Dict(dict) = target else {
        bail!("cannot set items on a {}", target.type_name());
    };
    if items.len() % 2 != 0 {
        bail!("SETITEMS got an odd number ({}) of values", items.len());
    }
    let mut dict = dict.borrow_mut();
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        let existing = match &key {
            Value::Str(name) => dict
                .iter()
                .position(|(k, _)| matches!(k, Value::Str(other) if other == name)),
            _ => None,
        };
        match existing {
            Some(index) => dict[index].1 = value,
            None => dict.push((key, value)),
        }
    }
    Ok(())
}

fn decode_long(raw: &[u8]) -> Result<i128> {
    if raw.len() > 16 {
        bail!("a {}-byte integer does not fit in 128 bits", raw.len());
    }
    if raw.is_empty() {
        return Ok(0);
    }
    let fill = if raw[raw.len() - 1] & 0x80 != 0 {
        0xff
    } else {
        0
    };
    let mut buf = [fill; 16];
    buf[..raw.len()].copy_from_slice(raw);
    Ok(i128::from_le_bytes(buf))
}
