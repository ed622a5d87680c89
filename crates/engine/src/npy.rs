//! Reading `.npy` files (NumPy's array format, versions 1.0, 2.0 and 3.0) as 2-D `f32` arrays, with every
//! size checked before anything is allocated.
//!
//! A `.npy` file is a preamble (`\x93NUMPY`, a major and minor version, the header's length), a header (a
//! Python dict literal `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }` padded with spaces)
//! and the raw data. The header is parsed here rather than by `ndarray-npy` so that a header that claims a
//! huge shape over a small file is refused from the file's length alone, and so that each refusal says what
//! was wrong: which dtype was found, what shape was claimed, how many bytes were expected and found.
//! Writing stays with `ndarray-npy` ([`crate::files::write_npy`]).
//!
//! Accepted: little-endian float32 (`'<f4'`) and float64 (`'<f8'`, converted to float32), 2-D, C or
//! Fortran order (returned in C order), rows, columns and elements each at most [`MAX_ELEMENTS`], every
//! entry finite as a float32.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ShapeBuilder};

/// The first six bytes of every `.npy` file.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The longest header accepted, in bytes. NumPy writes a few hundred bytes and itself refuses headers over
/// 10,000 bytes unless told otherwise.
pub const MAX_HEADER_BYTES: u64 = 65_536;

/// The most rows, columns and elements an array may have (2^31: 8 GiB as float32). The file's length is
/// checked against the header before any allocation, so this bound only stops files that are really that
/// large.
pub const MAX_ELEMENTS: u64 = 1 << 31;

/// Nesting depth of the header's literal beyond which it is refused (NumPy's headers nest two deep).
const MAX_NESTING: usize = 16;

/// Bytes read and converted at a time.
const CHUNK_BYTES: usize = 1 << 16;

/// The element types accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// Little-endian float32, `'<f4'`.
    F4,
    /// Little-endian float64, `'<f8'`.
    F8,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Dtype::F4 => 4,
            Dtype::F8 => 8,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::F4 => "'<f4'",
            Dtype::F8 => "'<f8'",
        })
    }
}

/// Why a `.npy` file could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be opened or read.
    #[error("{path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The path is a directory, a device or a pipe.
    #[error("{path}: not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file does not start with `\x93NUMPY`.
    #[error("{path}: not a .npy file (it does not start with the magic string \\x93NUMPY)")]
    Magic {
        /// The file.
        path: PathBuf,
    },
    /// A format version other than 1.0, 2.0 or 3.0.
    #[error("{path}: .npy format version {major}.{minor} is not supported; accepted: 1.0, 2.0, 3.0")]
    Version {
        /// The file.
        path: PathBuf,
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// The file ends inside its preamble or header.
    #[error("{path}: truncated: the .npy {part} needs {expected} bytes, the file has {found}")]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Which part ("preamble" or "header").
        part: &'static str,
        /// Bytes the part needs, from the start of the file.
        expected: u64,
        /// Bytes in the file.
        found: u64,
    },
    /// The header claims more bytes than [`MAX_HEADER_BYTES`].
    #[error("{path}: the header claims {length} bytes, more than the limit of {MAX_HEADER_BYTES}")]
    HeaderTooLong {
        /// The file.
        path: PathBuf,
        /// The claimed length.
        length: u64,
    },
    /// The header is not the dict NumPy writes.
    #[error("{path}: malformed .npy header: {detail}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// An element type other than `'<f4'` and `'<f8'`.
    #[error("{path}: dtype {found} is not accepted; accepted: '<f4' (float32) and '<f8' (float64){hint}")]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The `descr` of the header, as written.
        found: String,
        /// How to convert it, when known.
        hint: &'static str,
    },
    /// An array that is not 2-D.
    #[error("{path}: shape {shape:?} has {} dimensions; a 2-D array [rows, columns] is needed", .shape.len())]
    Dimensions {
        /// The file.
        path: PathBuf,
        /// The shape in the header.
        shape: Vec<u64>,
    },
    /// More rows, columns or elements than [`MAX_ELEMENTS`].
    #[error(
        "{path}: shape {shape:?} is too large; rows, columns and elements are each limited to {MAX_ELEMENTS} (2^31)"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The shape in the header.
        shape: Vec<u64>,
    },
    /// The data after the header is shorter or longer than the header's shape and dtype imply.
    #[error(
        "{path}: {what}: shape {shape:?} of {dtype} needs {expected} bytes of data after the header, found {found}"
    )]
    DataLength {
        /// The file.
        path: PathBuf,
        /// "truncated" or "trailing bytes".
        what: &'static str,
        /// The shape in the header.
        shape: Vec<u64>,
        /// The element type.
        dtype: Dtype,
        /// Bytes the shape and dtype imply.
        expected: u64,
        /// Bytes after the header.
        found: u64,
    },
    /// An array with no rows or no columns where points are needed.
    #[error("{path}: holds no points (shape {shape:?}); at least one row and one column are needed")]
    Empty {
        /// The file.
        path: PathBuf,
        /// The array's shape.
        shape: [usize; 2],
    },
    /// An entry that is NaN or infinite (or a float64 too large for float32).
    #[error("{path}: entry [{row}, {col}] is {value:?}, not a finite float32")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Its row.
        row: usize,
        /// Its column.
        col: usize,
        /// Its value, as stored.
        value: f64,
    },
}

/// What a checked header says.
struct Header {
    /// Element type.
    dtype: Dtype,
    /// Whether the data is stored column by column.
    fortran_order: bool,
    /// Rows and columns.
    shape: [usize; 2],
}

/// Reads a 2-D `.npy` of `'<f4'` or `'<f8'` values as `f32` in standard (C) layout, refusing non-finite
/// entries. Sizes are checked against the file's length before anything is allocated.
pub fn read_f32_2d(path: &Path) -> Result<Array2<f32>, NpyError> {
    let io = |e: std::io::Error| NpyError::Io {
        path: path.to_path_buf(),
        detail: format!("cannot read: {e}"),
    };
    let mut file = File::open(path).map_err(|e| NpyError::Io {
        path: path.to_path_buf(),
        detail: format!("cannot open: {e}"),
    })?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(NpyError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let header = read_header(&mut file, metadata.len(), path)?;
    let [rows, cols] = header.shape;
    let data = read_data(&mut file, &header, path)?;
    let array = if header.fortran_order {
        Array2::from_shape_vec((rows, cols).f(), data).map(|a| a.as_standard_layout().into_owned())
    } else {
        Array2::from_shape_vec((rows, cols), data)
    };
    // The length was checked against the shape and the shape is bounded, so this cannot fail; an error
    // rather than a panic all the same.
    array.map_err(|e| NpyError::Header {
        path: path.to_path_buf(),
        detail: format!("shape [{rows}, {cols}]: {e}"),
    })
}

/// Reads a `.npy` of points `[n, dim]` as [`read_f32_2d`] does, refusing an array with no rows or no
/// columns.
pub fn read_points(path: &Path) -> Result<Array2<f32>, NpyError> {
    let points = read_f32_2d(path)?;
    if points.is_empty() {
        return Err(NpyError::Empty {
            path: path.to_path_buf(),
            shape: [points.nrows(), points.ncols()],
        });
    }
    Ok(points)
}

/// Reads and checks the preamble and header of `file` (of `file_len` bytes) and checks the length of the
/// data against them; leaves `file` at the start of the data.
fn read_header(file: &mut impl Read, file_len: u64, path: &Path) -> Result<Header, NpyError> {
    let truncated = |part, expected| NpyError::TruncatedHeader {
        path: path.to_path_buf(),
        part,
        expected,
        found: file_len,
    };
    let io = |e: std::io::Error| NpyError::Io {
        path: path.to_path_buf(),
        detail: format!("cannot read: {e}"),
    };
    // The magic string first, as far as the file goes, so that a short file of another kind is called
    // that rather than truncated.
    let mut preamble = [0u8; 12];
    let available = file_len.min(8) as usize;
    file.read_exact(&mut preamble[..available]).map_err(io)?;
    let magic_len = available.min(MAGIC.len());
    if preamble[..magic_len] != MAGIC[..magic_len] {
        return Err(NpyError::Magic {
            path: path.to_path_buf(),
        });
    }
    if file_len < 8 {
        return Err(truncated("preamble", 10));
    }
    let (major, minor) = (preamble[6], preamble[7]);
    let length_bytes: usize = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => {
            return Err(NpyError::Version {
                path: path.to_path_buf(),
                major,
                minor,
            });
        }
    };
    let preamble_len = 8 + length_bytes as u64;
    if file_len < preamble_len {
        return Err(truncated("preamble", preamble_len));
    }
    file.read_exact(&mut preamble[8..8 + length_bytes]).map_err(io)?;
    let header_len = if length_bytes == 2 {
        u64::from(u16::from_le_bytes([preamble[8], preamble[9]]))
    } else {
        u64::from(u32::from_le_bytes([
            preamble[8],
            preamble[9],
            preamble[10],
            preamble[11],
        ]))
    };
    if header_len > MAX_HEADER_BYTES {
        return Err(NpyError::HeaderTooLong {
            path: path.to_path_buf(),
            length: header_len,
        });
    }
    let data_offset = preamble_len + header_len;
    if file_len < data_offset {
        return Err(truncated("header", data_offset));
    }
    // Bounded by MAX_HEADER_BYTES and by the file's length.
    let mut text = vec![0u8; header_len as usize];
    file.read_exact(&mut text).map_err(io)?;
    let header_error = |detail: String| NpyError::Header {
        path: path.to_path_buf(),
        detail,
    };
    let fields = parse_header(&text).map_err(header_error)?;

    let dtype = match fields.descr.as_str() {
        "<f4" => Dtype::F4,
        "<f8" => Dtype::F8,
        other => {
            return Err(NpyError::Dtype {
                path: path.to_path_buf(),
                found: format!("'{other}'"),
                hint: dtype_hint(other),
            });
        }
    };
    let [rows, cols] = match fields.shape[..] {
        [rows, cols] => [rows, cols],
        _ => {
            return Err(NpyError::Dimensions {
                path: path.to_path_buf(),
                shape: fields.shape,
            });
        }
    };
    let elements = rows
        .checked_mul(cols)
        .filter(|&e| e <= MAX_ELEMENTS && rows <= MAX_ELEMENTS && cols <= MAX_ELEMENTS);
    let Some(elements) = elements else {
        return Err(NpyError::TooLarge {
            path: path.to_path_buf(),
            shape: fields.shape,
        });
    };
    // At most 2^31 * 8 bytes: no overflow.
    let expected = elements * dtype.size();
    let found = file_len - data_offset;
    if expected != found {
        return Err(NpyError::DataLength {
            path: path.to_path_buf(),
            what: if found < expected {
                "truncated"
            } else {
                "trailing bytes"
            },
            shape: fields.shape,
            dtype,
            expected,
            found,
        });
    }
    let to_usize = |n: u64| {
        usize::try_from(n).map_err(|_| NpyError::TooLarge {
            path: path.to_path_buf(),
            shape: vec![rows, cols],
        })
    };
    Ok(Header {
        dtype,
        fortran_order: fields.fortran_order,
        shape: [to_usize(rows)?, to_usize(cols)?],
    })
}

/// How to turn a refused dtype into an accepted one.
fn dtype_hint(descr: &str) -> &'static str {
    if descr == ">f4" || descr == ">f8" {
        " (this one is big-endian; convert with `a.astype('<f4')`)"
    } else if descr.len() == 3 && matches!(&descr[1..2], "i" | "u" | "b" | "f") {
        " (convert with `a.astype('float32')`)"
    } else {
        ""
    }
}

/// Reads the elements after the header as `f32`, in file order, refusing the first non-finite one.
fn read_data(file: &mut impl Read, header: &Header, path: &Path) -> Result<Vec<f32>, NpyError> {
    let [rows, cols] = header.shape;
    let n_elements = rows * cols;
    let item = header.dtype.size() as usize;
    let mut values = Vec::with_capacity(n_elements);
    let mut chunk = vec![0u8; CHUNK_BYTES.min(n_elements * item)];
    while values.len() < n_elements {
        let bytes = (n_elements - values.len()) * item;
        let chunk = &mut chunk[..bytes.min(CHUNK_BYTES)];
        file.read_exact(chunk).map_err(|e| NpyError::Io {
            path: path.to_path_buf(),
            detail: format!("cannot read the data (was the file changed while it was read?): {e}"),
        })?;
        for bytes in chunk.chunks_exact(item) {
            let wide = match header.dtype {
                Dtype::F4 => f64::from(f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
                Dtype::F8 => f64::from_le_bytes([
                    bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                ]),
            };
            let value = wide as f32;
            if !value.is_finite() {
                let idx = values.len();
                let (row, col) = if header.fortran_order {
                    (idx % rows, idx / rows)
                } else {
                    (idx / cols, idx % cols)
                };
                return Err(NpyError::NonFinite {
                    path: path.to_path_buf(),
                    row,
                    col,
                    value: wide,
                });
            }
            values.push(value);
        }
    }
    Ok(values)
}

/// The three keys of a header.
#[derive(Debug)]
struct HeaderFields {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// A Python literal of the kinds a `.npy` header holds.
#[derive(Debug)]
enum Literal {
    Str(String),
    Bool(bool),
    Int(u64),
    None,
    Sequence(Vec<Literal>),
    Dict(Vec<(Literal, Literal)>),
}

/// Parses the header dict and picks out its three keys.
fn parse_header(text: &[u8]) -> Result<HeaderFields, String> {
    let mut parser = Parser { text, pos: 0 };
    let literal = parser.value(0)?;
    parser.skip_space();
    if parser.pos != text.len() {
        return Err(format!(
            "unexpected {} after the dict at byte {}",
            parser.describe_next(),
            parser.pos
        ));
    }
    let Literal::Dict(entries) = literal else {
        return Err("not a dict".into());
    };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    for (key, value) in entries {
        let Literal::Str(key) = key else {
            return Err(format!("key {key:?} is not a string"));
        };
        match key.as_str() {
            "descr" => match value {
                Literal::Str(s) => descr = Some(s),
                other => {
                    return Err(format!(
                        "'descr' is {}, not a dtype string (structured dtypes are not accepted)",
                        kind(&other)
                    ));
                }
            },
            "fortran_order" => match value {
                Literal::Bool(b) => fortran_order = Some(b),
                other => return Err(format!("'fortran_order' is {}, not True or False", kind(&other))),
            },
            "shape" => match value {
                Literal::Sequence(items) => {
                    let dims = items
                        .into_iter()
                        .map(|item| match item {
                            Literal::Int(n) => Ok(n),
                            other => Err(format!("'shape' holds {}, not only integers", kind(&other))),
                        })
                        .collect::<Result<Vec<u64>, String>>()?;
                    shape = Some(dims);
                }
                other => return Err(format!("'shape' is {}, not a tuple", kind(&other))),
            },
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    let missing = |key: &str| format!("no {key:?} key");
    Ok(HeaderFields {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

/// A word for a literal's kind, for messages.
fn kind(literal: &Literal) -> &'static str {
    match literal {
        Literal::Str(_) => "a string",
        Literal::Bool(_) => "a boolean",
        Literal::Int(_) => "an integer",
        Literal::None => "None",
        Literal::Sequence(_) => "a tuple or list",
        Literal::Dict(_) => "a dict",
    }
}

/// A recursive-descent parser of the Python literals of a header, with bounded nesting.
struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.pos).is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn describe_next(&self) -> String {
        match self.peek() {
            Some(b) if b.is_ascii_graphic() => format!("'{}'", b as char),
            Some(b) => format!("byte {b:#04x}"),
            None => "end of header".into(),
        }
    }

    fn expected(&self, what: &str) -> String {
        format!(
            "expected {what} at byte {}, found {}",
            self.pos,
            self.describe_next()
        )
    }

    fn value(&mut self, depth: usize) -> Result<Literal, String> {
        if depth > MAX_NESTING {
            return Err(format!("nested more than {MAX_NESTING} deep"));
        }
        self.skip_space();
        match self.peek() {
            Some(quote @ (b'\'' | b'"')) => self.string(quote),
            Some(b'(') => self.sequence(b')', depth).map(Literal::Sequence),
            Some(b'[') => self.sequence(b']', depth).map(Literal::Sequence),
            Some(b'{') => self.dict(depth),
            Some(b'0'..=b'9') => self.integer(),
            Some(b'T' | b'F' | b'N') => self.word(),
            _ => Err(self.expected("a value")),
        }
    }

    fn string(&mut self, quote: u8) -> Result<Literal, String> {
        let start = self.pos + 1;
        let Some(len) = self.text[start..].iter().position(|&b| b == quote) else {
            return Err(format!("unterminated string at byte {}", self.pos));
        };
        let bytes = &self.text[start..start + len];
        if bytes.contains(&b'\\') {
            return Err(format!("escapes in strings are not supported (byte {start})"));
        }
        self.pos = start + len + 1;
        Ok(Literal::Str(String::from_utf8_lossy(bytes).into_owned()))
    }

    fn integer(&mut self) -> Result<Literal, String> {
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit - b'0')))
                .ok_or_else(|| format!("integer at byte {start} does not fit 64 bits"))?;
            self.pos += 1;
        }
        // Python 2 wrote long integers with an `L`.
        if self.peek() == Some(b'L') {
            self.pos += 1;
        }
        Ok(Literal::Int(value))
    }

    fn word(&mut self) -> Result<Literal, String> {
        for (word, literal) in [
            (&b"True"[..], Literal::Bool(true)),
            (b"False", Literal::Bool(false)),
            (b"None", Literal::None),
        ] {
            if self.text[self.pos..].starts_with(word) {
                self.pos += word.len();
                return Ok(literal);
            }
        }
        Err(self.expected("True, False or None"))
    }

    /// Items separated by commas up to `close`, a trailing comma allowed.
    fn sequence(&mut self, close: u8, depth: usize) -> Result<Vec<Literal>, String> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_space();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(items);
            }
            items.push(self.value(depth + 1)?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b) if b == close => {}
                _ => return Err(self.expected(&format!("',' or '{}'", close as char))),
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Literal, String> {
        self.pos += 1;
        let mut entries = Vec::new();
        loop {
            self.skip_space();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Literal::Dict(entries));
            }
            let key = self.value(depth + 1)?;
            self.skip_space();
            if self.peek() != Some(b':') {
                return Err(self.expected("':'"));
            }
            self.pos += 1;
            let value = self.value(depth + 1)?;
            entries.push((key, value));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.expected("',' or '}'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_as_numpy_writes_them_parse() {
        let fields =
            parse_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }          \n").unwrap();
        assert_eq!(
            (fields.descr.as_str(), fields.fortran_order, fields.shape),
            ("<f4", false, vec![3, 2])
        );
        let fields = parse_header(b"{\"descr\":\"<f8\",\"fortran_order\":True,\"shape\":(7,)}").unwrap();
        assert_eq!(
            (fields.descr.as_str(), fields.fortran_order, fields.shape),
            ("<f8", true, vec![7])
        );
        assert_eq!(
            parse_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (), }")
                .unwrap()
                .shape,
            Vec::<u64>::new()
        );
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        let cases: [(&[u8], &str); 8] = [
            (b"{'descr': '<f4', 'fortran_order': False}", "no \"shape\" key"),
            (
                b"{'descr': '<f4', 'fortran_order': 0, 'shape': (1, 1)}",
                "not True or False",
            ),
            (
                b"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
                "structured",
            ),
            (
                b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), 'x': 1}",
                "unknown key",
            ),
            (
                b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1)} junk",
                "after the dict",
            ),
            (b"{'descr': '<f4", "unterminated"),
            (b"{'shape': (99999999999999999999999, 1)}", "64 bits"),
            (b"[1, 2]", "not a dict"),
        ];
        for (text, reason) in cases {
            let err = parse_header(text).unwrap_err();
            assert!(err.contains(reason), "{}: {err}", String::from_utf8_lossy(text));
        }
        let deep = [vec![b'('; 10_000], vec![b')'; 10_000]].concat();
        assert!(parse_header(&deep).unwrap_err().contains("nested"));
    }
}
