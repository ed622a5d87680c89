//! Every file reader of the engine on hostile input (issue #15, "nothing panics"): `.npy` arrays, IDX image
//! and label files, `metrics.json`, and the atomic writer's temporary files.
//!
//! Each reader checks sizes against the file's length before allocating and reports the first real error
//! naming the file. Sparse files (a large length, no data) show that a size is checked before the data is
//! read: reading them would take seconds and gigabytes, refusing them takes microseconds. Property tests
//! feed arbitrary bytes and mutated valid files to each reader: the answer is `Ok` or `Err`, never a panic
//! or an abort.

use std::path::{Path, PathBuf};

use ferroflow_engine::files::{read_npy, read_points, write_atomic, write_atomic_with, write_npy};
use ferroflow_engine::images::{
    IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, ImageError, read_idx_images, read_idx_labels,
};
use ferroflow_engine::metrics::{MAX_METRICS_BYTES, METRICS_FILE, RunMetrics};
use ferroflow_engine::npy::{Dtype, MAX_ELEMENTS, NpyError};
use ndarray::{Array2, ShapeBuilder, array};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};

/// Proptest cases per strategy (arbitrary bytes, mutated valid files); each reader gets both, from a fixed
/// seed.
const CASES: u32 = 256;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-readers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A version 1.0 `.npy` with the given header dict and data, padded as NumPy pads.
fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.as_bytes().to_vec();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    bytes
}

fn dict(descr: &str, fortran: bool, shape: &str) -> String {
    let order = if fortran { "True" } else { "False" };
    format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}")
}

fn le_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn le_f64(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The error, checked to name the file.
fn npy_error(path: &Path) -> NpyError {
    let err = read_npy(path).expect_err("the file must be refused");
    let file = path.file_name().unwrap().to_str().unwrap();
    assert!(err.to_string().contains(file), "`{err}` does not name {file}");
    err
}

/// A file of `len` bytes starting with `head`, the rest a hole (no data on disk).
fn sparse(dir: &Path, name: &str, head: &[u8], len: u64) -> PathBuf {
    let path = write(dir, name, head);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();
    path
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect()
}

#[test]
fn a_huge_shape_over_a_small_file_is_refused_before_allocating() {
    let dir = scratch("huge");
    // 2^40 elements: beyond the bound, refused from the header alone.
    let path = write(
        &dir,
        "huge.npy",
        &npy_bytes(&dict("<f4", false, "(1048576, 1048576)"), &[0; 24]),
    );
    assert!(std::fs::metadata(&path).unwrap().len() < 200);
    let err = npy_error(&path);
    assert!(matches!(err, NpyError::TooLarge { ref shape, .. } if shape == &[1 << 20, 1 << 20]));
    let message = err.to_string();
    assert!(
        message.contains("[1048576, 1048576]") && message.contains(&MAX_ELEMENTS.to_string()),
        "{message}"
    );

    // Within the bound (2^30 elements) but far beyond the file: the length decides, nothing is allocated.
    let path = write(
        &dir,
        "big.npy",
        &npy_bytes(&dict("<f4", false, "(32768, 32768)"), &[0; 24]),
    );
    let err = npy_error(&path);
    assert!(
        matches!(err, NpyError::DataLength { what: "truncated", expected, found: 24, .. } if expected == 1 << 32),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("[32768, 32768]") && message.contains("4294967296"),
        "{message}"
    );

    // A product that overflows 64 bits, and a header length beyond the file.
    let path = write(
        &dir,
        "overflow.npy",
        &npy_bytes(&dict("<f8", false, "(18446744073709551615, 3)"), &[]),
    );
    assert!(matches!(npy_error(&path), NpyError::TooLarge { .. }));
    let mut bytes = npy_bytes(&dict("<f4", false, "(1, 1)"), &[0; 4]);
    bytes[8..10].copy_from_slice(&60_000u16.to_le_bytes());
    let path = write(&dir, "long-header.npy", &bytes);
    let err = npy_error(&path);
    assert!(
        matches!(
            err,
            NpyError::TruncatedHeader {
                part: "header",
                expected: 60_010,
                ..
            }
        ),
        "{err}"
    );
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    let path = write(&dir, "v2-huge-header.npy", &bytes);
    assert!(
        matches!(npy_error(&path), NpyError::HeaderTooLong { length, .. } if length == u64::from(u32::MAX))
    );

    // An 8 GiB sparse file whose header claims 3 x 2: refused from its length, without reading it.
    let head = npy_bytes(&dict("<f4", false, "(3, 2)"), &[0; 24]);
    let path = sparse(&dir, "sparse.npy", &head, 1 << 33);
    let err = npy_error(&path);
    assert!(
        matches!(
            err,
            NpyError::DataLength {
                what: "trailing bytes",
                expected: 24,
                ..
            }
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_truncated_file_is_called_truncated_with_both_lengths() {
    let dir = scratch("truncated");
    let values = array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]];
    let whole = dir.join("whole.npy");
    write_npy(&whole, values.view()).unwrap();
    assert_eq!(read_npy(&whole).unwrap(), values);
    let bytes = std::fs::read(&whole).unwrap();
    let path = write(&dir, "cut.npy", &bytes[..bytes.len() - 3]);
    let message = npy_error(&path).to_string();
    assert!(
        message.contains("truncated") && message.contains("needs 24 bytes") && message.contains("found 21"),
        "{message}"
    );
    // float64 too: the real error, not a float32 fallback's complaint about the descriptor.
    let path = write(
        &dir,
        "cut64.npy",
        &npy_bytes(&dict("<f8", false, "(3, 2)"), &le_f64(&[1.0; 5])),
    );
    let message = npy_error(&path).to_string();
    assert!(
        message.contains("truncated") && message.contains("needs 48 bytes") && message.contains("found 40"),
        "{message}"
    );
    assert!(!message.contains("descriptor"), "{message}");

    // Inside the preamble and the header; an empty file; another kind of file.
    for (name, len, part) in [
        ("pre.npy", 9, "preamble"),
        ("head.npy", 40, "header"),
        ("empty.npy", 0, "preamble"),
    ] {
        let path = write(&dir, name, &bytes[..len]);
        let err = npy_error(&path);
        assert!(
            matches!(err, NpyError::TruncatedHeader { part: p, found, .. } if p == part && found == len as u64),
            "{err}"
        );
    }
    let path = write(&dir, "text.npy", b"x,y\n1,2\n");
    assert!(matches!(npy_error(&path), NpyError::Magic { .. }));
    let mut version = bytes.clone();
    version[6] = 4;
    let path = write(&dir, "v4.npy", &version);
    assert!(npy_error(&path).to_string().contains("version 4.0"));
    assert!(matches!(npy_error(&dir), NpyError::NotAFile { .. }));
    assert!(matches!(npy_error(&dir.join("missing.npy")), NpyError::Io { .. }));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fortran_order_arrays_are_returned_in_c_order() {
    let dir = scratch("fortran");
    let c_order = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
    // ndarray-npy writes an array in Fortran layout with `fortran_order: True`.
    let mut fortran = Array2::<f32>::zeros((2, 3).f());
    fortran.assign(&c_order);
    let path = dir.join("fortran.npy");
    let mut bytes = Vec::new();
    ndarray_npy::WriteNpyExt::write_npy(&fortran, &mut bytes).unwrap();
    assert!(String::from_utf8_lossy(&bytes[..128]).contains("'fortran_order': True"));
    std::fs::write(&path, &bytes).unwrap();
    let read = read_npy(&path).unwrap();
    assert_eq!(read, c_order);
    assert!(read.is_standard_layout());

    // By hand, float64, column by column.
    let path = write(
        &dir,
        "fortran64.npy",
        &npy_bytes(
            &dict("<f8", true, "(2, 3)"),
            &le_f64(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]),
        ),
    );
    let read = read_points(&path).unwrap();
    assert_eq!(read, c_order);
    assert!(read.as_slice().is_some());

    // A non-finite entry is named by its row and column in either order.
    let path = write(
        &dir,
        "nan.npy",
        &npy_bytes(
            &dict("<f4", true, "(2, 3)"),
            &le_f32(&[1.0, 4.0, 2.0, f32::NAN, 3.0, 6.0]),
        ),
    );
    let err = npy_error(&path);
    assert!(matches!(err, NpyError::NonFinite { row: 1, col: 1, .. }), "{err}");
    let path = write(
        &dir,
        "inf.npy",
        &npy_bytes(
            &dict("<f8", false, "(2, 3)"),
            &le_f64(&[1.0, 2.0, 3.0, 4.0, 1e300, 6.0]),
        ),
    );
    let message = npy_error(&path).to_string();
    assert!(
        message.contains("[1, 1]") && message.contains("1e300") && message.contains("float32"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn other_dtypes_and_shapes_are_refused_by_name() {
    let dir = scratch("dtypes");
    let path = write(
        &dir,
        "ints.npy",
        &npy_bytes(&dict("<i8", false, "(3, 2)"), &[0; 48]),
    );
    let err = npy_error(&path);
    assert!(matches!(err, NpyError::Dtype { ref found, .. } if found == "'<i8'"));
    let message = err.to_string();
    assert!(
        message.contains("'<i8'") && message.contains("accepted: '<f4' (float32) and '<f8' (float64)"),
        "{message}"
    );
    let path = write(
        &dir,
        "big-endian.npy",
        &npy_bytes(&dict(">f4", false, "(3, 2)"), &[0; 24]),
    );
    assert!(npy_error(&path).to_string().contains("big-endian"));
    let path = write(
        &dir,
        "object.npy",
        &npy_bytes(&dict("|O", false, "(3, 2)"), &[0; 48]),
    );
    assert!(npy_error(&path).to_string().contains("'|O'"));

    for (name, shape) in [
        ("one-d.npy", "(6,)"),
        ("three-d.npy", "(1, 3, 2)"),
        ("scalar.npy", "()"),
    ] {
        let path = write(
            &dir,
            name,
            &npy_bytes(&dict("<f4", false, shape), &le_f32(&[0.0; 6])),
        );
        let err = npy_error(&path);
        assert!(
            matches!(err, NpyError::Dimensions { .. }) && err.to_string().contains("2-D"),
            "{err}"
        );
    }
    let path = write(
        &dir,
        "structured.npy",
        &npy_bytes(
            "{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (3, 2), }",
            &[0; 24],
        ),
    );
    assert!(npy_error(&path).to_string().contains("structured"));
    // Version 2.0 and 3.0 headers are read like 1.0's.
    let mut v3 = npy_bytes(&dict("<f4", false, "(1, 2)"), &le_f32(&[1.0, 2.0]));
    let header_len = u16::from_le_bytes([v3[8], v3[9]]);
    v3.splice(
        6..10,
        [3, 0]
            .into_iter()
            .chain((u32::from(header_len) - 2).to_le_bytes()),
    );
    v3.remove(v3.len() - 9); // two padding spaces fewer for the longer length field
    v3.remove(v3.len() - 9);
    let path = write(&dir, "v3.npy", &v3);
    assert_eq!(read_npy(&path).unwrap(), array![[1.0f32, 2.0]]);
    assert_eq!(Dtype::F8.to_string(), "'<f8'");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn points_need_a_row_and_a_column() {
    let dir = scratch("empty");
    let path = write(
        &dir,
        "no-rows.npy",
        &npy_bytes(&dict("<f4", false, "(0, 2)"), &[]),
    );
    assert_eq!(read_npy(&path).unwrap().dim(), (0, 2));
    let err = read_points(&path).unwrap_err();
    assert!(matches!(err, NpyError::Empty { shape: [0, 2], .. }));
    let message = err.to_string();
    assert!(
        message.contains("no-rows.npy") && message.contains("no points"),
        "{message}"
    );
    let path = write(
        &dir,
        "no-columns.npy",
        &npy_bytes(&dict("<f4", false, "(5, 0)"), &[]),
    );
    assert!(matches!(
        read_points(&path).unwrap_err(),
        NpyError::Empty { shape: [5, 0], .. }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An IDX file of unsigned bytes: magic, big-endian dimensions, data.
fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for dim in dims {
        bytes.extend_from_slice(&dim.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn an_idx_header_claiming_more_than_the_file_is_refused_before_reading() {
    let dir = scratch("idx");
    let path = write(
        &dir,
        "claims-60000",
        &idx_bytes(IDX_IMAGES_MAGIC, &[60_000, 28, 28], &[0; 10]),
    );
    let err = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Length {
                expected: 47_040_016,
                actual: 26,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("claims-60000"));
    // Dimensions whose product is beyond any file.
    let path = write(
        &dir,
        "overflow",
        &idx_bytes(IDX_IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[]),
    );
    let err = read_idx_images(&path).unwrap_err();
    assert!(
        matches!(err, ImageError::TooLarge { .. }) && err.to_string().contains("overflow"),
        "{err}"
    );
    // An 8 GiB sparse file whose header announces one image: refused from the length, without reading.
    let head = idx_bytes(IDX_IMAGES_MAGIC, &[1, 28, 28], &[0; 784]);
    let path = sparse(&dir, "sparse", &head, 1 << 33);
    let err = read_idx_images(&path).unwrap_err();
    assert!(matches!(err, ImageError::Length { expected: 800, .. }), "{err}");
    let err = read_idx_labels(&dir).unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_metrics_file_is_read_only_up_to_its_bound() {
    let dir = scratch("metrics");
    assert_eq!(RunMetrics::read(&dir).unwrap(), RunMetrics::default());
    sparse(&dir, METRICS_FILE, b"{", MAX_METRICS_BYTES + 1);
    let message = format!("{:#}", RunMetrics::read(&dir).unwrap_err());
    assert!(
        message.contains(METRICS_FILE) && message.contains(&MAX_METRICS_BYTES.to_string()),
        "{message}"
    );
    for bytes in [&b""[..], b"[1, 2]", b"{\"w2\": 1", b"\xff\xfe"] {
        write(&dir, METRICS_FILE, bytes);
        let message = format!("{:#}", RunMetrics::read(&dir).unwrap_err());
        assert!(message.contains(METRICS_FILE), "{message}");
    }
    std::fs::remove_dir(dir.join(METRICS_FILE)).ok();
    std::fs::remove_file(dir.join(METRICS_FILE)).unwrap();
    std::fs::create_dir(dir.join(METRICS_FILE)).unwrap();
    let message = format!("{:#}", RunMetrics::read(&dir).unwrap_err());
    assert!(message.contains(METRICS_FILE), "{message}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_atomic_writes_leave_no_temporary_file() {
    let dir = scratch("atomic");
    // The rename fails: the final name is a directory.
    let target = dir.join("taken");
    std::fs::create_dir(&target).unwrap();
    let message = format!("{:#}", write_atomic(&target, b"data").unwrap_err());
    assert!(message.contains("taken"), "{message}");
    assert_eq!(temporaries(&dir), Vec::<String>::new());
    assert!(target.is_dir());

    // The write fails midway, after some bytes reached the temporary file.
    let target = dir.join("half.npy");
    let err = write_atomic_with(&target, |file| {
        file.write_all(&[0; 100_000])?;
        anyhow::bail!("the disk is full (simulated)")
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("half.npy"), "{err:#}");
    assert_eq!(temporaries(&dir), Vec::<String>::new());
    assert!(!target.exists());

    // A panic while writing.
    let target = dir.join("panic.npy");
    let outcome = std::panic::catch_unwind(|| {
        write_atomic_with(&target, |file| {
            file.write_all(b"partial")?;
            panic!("a bug while writing");
        })
    });
    assert!(outcome.is_err());
    assert_eq!(temporaries(&dir), Vec::<String>::new());

    // The parent does not exist; and an array through the same path.
    let message = format!("{:#}", write_atomic(&dir.join("no/such/dir/x"), b"").unwrap_err());
    assert!(message.contains("no/such/dir"), "{message}");
    let taken = dir.join("taken");
    assert!(write_npy(&taken, array![[1.0f32]].view()).is_err());
    assert_eq!(temporaries(&dir), Vec::<String>::new());

    write_atomic(&dir.join("fine"), b"ok").unwrap();
    assert_eq!(std::fs::read(dir.join("fine")).unwrap(), b"ok");
    assert_eq!(temporaries(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One change to a file's bytes, at a position taken modulo its length.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        pos: usize,
        bit: u8,
    },
    Set {
        pos: usize,
        byte: u8,
    },
    Insert {
        pos: usize,
        byte: u8,
    },
    Delete {
        pos: usize,
    },
    Truncate {
        len: usize,
    },
    /// Eight bytes of `value` (little-endian) from `pos`: a length, a dimension or a size.
    Word {
        pos: usize,
        value: u64,
    },
}

/// Half the positions in the first 128 bytes, where the headers are; half anywhere.
fn position() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..128, any::<usize>()]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        any::<u64>(),
        0u64..1024,
        (0u32..64).prop_map(|k| 1u64 << k),
        Just(u64::MAX)
    ];
    prop_oneof![
        (position(), 0u8..8).prop_map(|(pos, bit)| Mutation::Flip { pos, bit }),
        (position(), any::<u8>()).prop_map(|(pos, byte)| Mutation::Set { pos, byte }),
        (position(), any::<u8>()).prop_map(|(pos, byte)| Mutation::Insert { pos, byte }),
        position().prop_map(|pos| Mutation::Delete { pos }),
        position().prop_map(|len| Mutation::Truncate { len }),
        (position(), value).prop_map(|(pos, value)| Mutation::Word { pos, value }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len();
        let at = |pos: usize| if len == 0 { 0 } else { pos % len };
        match *mutation {
            Mutation::Flip { pos, bit } if len > 0 => bytes[at(pos)] ^= 1 << bit,
            Mutation::Set { pos, byte } if len > 0 => bytes[at(pos)] = byte,
            Mutation::Insert { pos, byte } => bytes.insert(pos % (len + 1), byte),
            Mutation::Delete { pos } if len > 0 => {
                bytes.remove(at(pos));
            }
            Mutation::Truncate { len: keep } => bytes.truncate(keep % (len + 1)),
            Mutation::Word { pos, value } if len > 0 => {
                for (offset, byte) in value.to_le_bytes().into_iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at(pos) + offset) {
                        *slot = byte;
                    }
                }
            }
            _ => {}
        }
    }
    bytes
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..5)
}

fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..512)
}

/// A valid `.npy` in each form read (f4 or f8, C or Fortran order, no rows), with data enough that
/// mutations often land in it and leave a readable file.
fn npy_seed() -> impl Strategy<Value = Vec<u8>> {
    let values: Vec<f64> = (0..64).map(|k| f64::from(k) * 0.25 - 4.0).collect();
    let singles: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    prop_oneof![
        Just(npy_bytes(&dict("<f4", false, "(16, 4)"), &le_f32(&singles))),
        Just(npy_bytes(&dict("<f8", true, "(8, 8)"), &le_f64(&values))),
        Just(npy_bytes(&dict("<f4", false, "(0, 2)"), &[])),
    ]
}

/// Whether `bytes` were read.
fn check_npy(path: &Path, bytes: &[u8]) -> Result<bool, TestCaseError> {
    std::fs::write(path, bytes).unwrap();
    match read_npy(path) {
        Ok(array) => {
            prop_assert!(array.iter().all(|v| v.is_finite()));
            prop_assert!(array.is_standard_layout());
            Ok(true)
        }
        Err(err) => {
            prop_assert!(err.to_string().contains("case.npy"), "{}", err);
            Ok(false)
        }
    }
}

/// Whether `bytes` were read, as images or as labels.
fn check_idx(path: &Path, bytes: &[u8]) -> Result<bool, TestCaseError> {
    std::fs::write(path, bytes).unwrap();
    let mut read = false;
    for result in [
        read_idx_images(path).map(|_| ()),
        read_idx_labels(path).map(|_| ()),
    ] {
        match result {
            Ok(()) => read = true,
            Err(err) => prop_assert!(err.to_string().contains("case-idx"), "{}", err),
        }
    }
    Ok(read)
}

/// Whether `bytes` were read.
fn check_metrics(dir: &Path, bytes: &[u8]) -> Result<bool, TestCaseError> {
    std::fs::write(dir.join(METRICS_FILE), bytes).unwrap();
    match RunMetrics::read(dir) {
        Ok(_) => Ok(true),
        Err(err) => {
            prop_assert!(format!("{err:#}").contains(METRICS_FILE), "{:#}", err);
            Ok(false)
        }
    }
}

fn idx_seed() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(idx_bytes(IDX_LABELS_MAGIC, &[4], &[0, 3, 9, 1])),
        Just(idx_bytes(IDX_IMAGES_MAGIC, &[1, 28, 28], &[128; 784])),
    ]
}

fn metrics_seed() -> Vec<u8> {
    br#"{"train_steps": 200, "w2": 0.25, "w2_samples": 100, "eval_solver": "midpoint", "by_hand": [1, {"a": null}]}"#
        .to_vec()
}

/// Runs `check` (which says whether the file was read) on `CASES` inputs of `strategy` from a fixed seed,
/// in a scratch folder removed afterwards; returns how many inputs were read and how many refused.
fn never_panics<S: Strategy>(
    name: &str,
    strategy: S,
    check: impl Fn(&Path, S::Value) -> Result<bool, TestCaseError>,
) -> (usize, usize) {
    let read = std::cell::Cell::new(0);
    let dir = scratch(name);
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let outcome = runner.run(&strategy, |value| {
        read.set(read.get() + usize::from(check(&dir, value)?));
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{name}: {failure}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    (read.get(), CASES as usize - read.get())
}

/// Mutations must sometimes leave a readable file (the data changed) and sometimes not, or the property
/// only exercises one path.
fn assert_both_paths(name: &str, (read, refused): (usize, usize)) {
    assert!(read > 0 && refused > 0, "{name}: {read} read, {refused} refused");
}

#[test]
fn the_npy_reader_never_panics_on_arbitrary_bytes() {
    never_panics(
        "npy-arbitrary",
        (arbitrary_bytes(), any::<bool>()),
        |dir, (bytes, preamble)| {
            // Half the cases behind a valid preamble, so that the header parser sees them.
            let bytes = if preamble {
                [&b"\x93NUMPY\x01\x00"[..], &bytes].concat()
            } else {
                bytes
            };
            check_npy(&dir.join("case.npy"), &bytes)
        },
    );
}

#[test]
fn the_npy_reader_never_panics_on_mutated_files() {
    let outcome = never_panics(
        "npy-mutated",
        (npy_seed(), mutations()),
        |dir, (seed, changes)| check_npy(&dir.join("case.npy"), &mutate(seed, &changes)),
    );
    assert_both_paths("npy-mutated", outcome);
}

#[test]
fn the_idx_readers_never_panic_on_arbitrary_bytes() {
    never_panics(
        "idx-arbitrary",
        (arbitrary_bytes(), any::<bool>()),
        |dir, (bytes, magic)| {
            let bytes = if magic {
                [&IDX_IMAGES_MAGIC.to_be_bytes()[..], &bytes].concat()
            } else {
                bytes
            };
            check_idx(&dir.join("case-idx"), &bytes)
        },
    );
}

#[test]
fn the_idx_readers_never_panic_on_mutated_files() {
    let outcome = never_panics(
        "idx-mutated",
        (idx_seed(), mutations()),
        |dir, (seed, changes)| check_idx(&dir.join("case-idx"), &mutate(seed, &changes)),
    );
    assert_both_paths("idx-mutated", outcome);
}

#[test]
fn the_metrics_reader_never_panics_on_arbitrary_bytes() {
    never_panics("metrics-arbitrary", arbitrary_bytes(), |dir, bytes| {
        check_metrics(dir, &bytes)
    });
}

#[test]
fn the_metrics_reader_never_panics_on_mutated_files() {
    let outcome = never_panics("metrics-mutated", mutations(), |dir, changes| {
        check_metrics(dir, &mutate(metrics_seed(), &changes))
    });
    assert_both_paths("metrics-mutated", outcome);
}
