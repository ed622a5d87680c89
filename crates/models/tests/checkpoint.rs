//! Checkpoint files on hostile input (issue #15, "nothing panics"): the safetensors reader refuses
//! truncated, empty, random and lying files with an error naming the file before tch sees them, and a failed
//! atomic write leaves no temporary file.

use std::path::{Path, PathBuf};

use ferroflow_models::ModelError;
use ferroflow_models::checkpoint::{check_safetensors, load_tensors, save_tensors};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
use tch::{Device, Kind, Tensor};

/// Proptest cases per strategy (arbitrary bytes, mutated valid files), from a fixed seed.
const CASES: u32 = 256;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferroflow-checkpoint-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A safetensors file: header length, header, data.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Three tensors as the checkpoints hold them (float weights, an int64 step, an empty tensor).
fn named() -> Vec<(String, Tensor)> {
    vec![
        (
            "net.0.weight".into(),
            Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]),
        ),
        ("step".into(), Tensor::from_slice(&[41i64])),
        ("empty".into(), Tensor::zeros([0, 4], (Kind::Double, Device::Cpu))),
    ]
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect()
}

/// The refusal of `path`, checked to be a [`ModelError::Safetensors`] naming it and saying `reason`.
fn refused(path: &Path, reason: &str) {
    let err = load_tensors(path).expect_err("the file must be refused");
    let message = err.to_string();
    let file = path.file_name().unwrap().to_str().unwrap();
    assert!(
        matches!(err, ModelError::Safetensors { .. }) && message.contains(file) && message.contains(reason),
        "{file}: `{message}` lacks `{reason}`"
    );
}

#[test]
fn checkpoints_round_trip() {
    let dir = scratch("round-trip");
    let path = dir.join("model.safetensors");
    save_tensors(&named(), &path).unwrap();
    check_safetensors(&path).unwrap();
    let mut read = load_tensors(&path).unwrap();
    read.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(read.len(), 3);
    assert_eq!(read[0].1.size(), vec![0, 4]);
    assert_eq!(read[1].1, named()[0].1);
    assert_eq!(read[2].1.int64_value(&[0]), 41);
    assert_eq!(temporaries(&dir), Vec::<String>::new());
    // A header with metadata, padded with spaces as the Python writer pads it.
    let path = write(
        &dir,
        "meta.safetensors",
        &safetensors(
            r#"{"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   "#,
            &[0; 8],
        ),
    );
    assert_eq!(load_tensors(&path).unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hostile_safetensors_headers_are_refused_naming_the_file() {
    let dir = scratch("hostile");
    let tensor = |dtype: &str, shape: &str, offsets: &str| {
        format!(r#"{{"x":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
    };
    refused(&write(&dir, "empty.safetensors", b""), "truncated: 0 bytes");
    refused(
        &write(&dir, "five.safetensors", &[1, 2, 3, 4, 5]),
        "truncated: 5 bytes",
    );
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    refused(
        &write(&dir, "huge-header.safetensors", &huge),
        "more than the limit",
    );
    let mut long = 1000u64.to_le_bytes().to_vec();
    long.extend_from_slice(&[b' '; 42]);
    refused(
        &write(&dir, "long-header.safetensors", &long),
        "the header claims 1000 bytes but only 42 follow",
    );
    refused(
        &write(&dir, "not-json.safetensors", &safetensors("{not json}", &[])),
        "not JSON",
    );
    refused(
        &write(&dir, "array.safetensors", &safetensors("[1, 2]", &[])),
        "does not start with '{'",
    );
    refused(
        &write(&dir, "string.safetensors", &safetensors(r#"{"x": "y"}"#, &[])),
        "has no `dtype`",
    );
    // Offsets beyond the file, over a small data section: refused without allocating the claimed size.
    refused(
        &write(
            &dir,
            "beyond.safetensors",
            &safetensors(&tensor("F32", "[1000000,1000000]", "[0,4000000000000]"), &[0; 16]),
        ),
        "outside the data section of 16 bytes",
    );
    refused(
        &write(
            &dir,
            "backwards.safetensors",
            &safetensors(&tensor("F32", "[1]", "[8,4]"), &[0; 8]),
        ),
        "outside",
    );
    refused(
        &write(
            &dir,
            "shape.safetensors",
            &safetensors(&tensor("F32", "[2,2]", "[0,8]"), &[0; 8]),
        ),
        "needs 16 bytes",
    );
    refused(
        &write(
            &dir,
            "overflow.safetensors",
            &safetensors(
                &tensor("F64", "[4294967296,4294967296,4294967296]", "[0,8]"),
                &[0; 8],
            ),
        ),
        "overflows",
    );
    refused(
        &write(
            &dir,
            "not-a-size.safetensors",
            &safetensors(&tensor("F32", "[0,18446744073709551615]", "[0,0]"), &[]),
        ),
        "not a size",
    );
    refused(
        &write(
            &dir,
            "negative.safetensors",
            &safetensors(&tensor("F32", "[-1]", "[0,0]"), &[]),
        ),
        "not a size",
    );
    refused(
        &write(
            &dir,
            "dtype.safetensors",
            &safetensors(&tensor("U16", "[2]", "[0,4]"), &[0; 4]),
        ),
        r#"dtype "U16"; accepted: BOOL, U8"#,
    );
    refused(
        &write(
            &dir,
            "fp8.safetensors",
            &safetensors(&tensor("F8_E4M3", "[2]", "[0,2]"), &[0; 2]),
        ),
        "F8_E4M3",
    );
    let two = |a: &str, b: &str| {
        format!(
            r#"{{"a":{{"dtype":"F32","shape":[2],"data_offsets":{a}}},"b":{{"dtype":"F32","shape":[2],"data_offsets":{b}}}}}"#
        )
    };
    refused(
        &write(
            &dir,
            "gap.safetensors",
            &safetensors(&two("[0,8]", "[16,24]"), &[0; 24]),
        ),
        "starts at byte 16 of the data section, expected 8",
    );
    refused(
        &write(
            &dir,
            "overlap.safetensors",
            &safetensors(&two("[0,8]", "[0,8]"), &[0; 8]),
        ),
        "expected 8",
    );
    refused(
        &write(
            &dir,
            "trailing.safetensors",
            &safetensors(&tensor("F32", "[2]", "[0,8]"), &[0; 16]),
        ),
        "cover 8 bytes but the data section holds 16",
    );
    refused(
        &write(
            &dir,
            "metadata.safetensors",
            &safetensors(r#"{"__metadata__":{"step":3}}"#, &[]),
        ),
        "`__metadata__`",
    );
    // An 8 GiB sparse file behind a valid header: refused from its length, nothing read.
    let head = safetensors(&tensor("F32", "[2]", "[0,8]"), &[0; 8]);
    let path = write(&dir, "sparse.safetensors", &head);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 33)
        .unwrap();
    refused(&path, "the data section holds");
    // Not a file at all.
    refused(&dir, "not a regular file");
    assert!(matches!(
        load_tensors(&dir.join("missing.safetensors")),
        Err(ModelError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn failed_checkpoint_writes_leave_no_temporary_file() {
    let dir = scratch("failed-writes");
    // The rename fails: the final name is a directory.
    let taken = dir.join("checkpoint.safetensors");
    std::fs::create_dir(&taken).unwrap();
    let err = save_tensors(&named(), &taken).unwrap_err();
    assert!(err.to_string().contains("checkpoint.safetensors"), "{err}");
    assert_eq!(temporaries(&dir), Vec::<String>::new());
    // The write fails: the folder does not exist.
    let err = save_tensors(&named(), &dir.join("gone/model.safetensors")).unwrap_err();
    assert!(err.to_string().contains("gone/model.safetensors"), "{err}");
    // A tensor that cannot be written (not contiguous).
    let strided = vec![(
        "t".to_owned(),
        Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]).tr(),
    )];
    assert!(save_tensors(&strided, &dir.join("strided.safetensors")).is_err());
    assert_eq!(temporaries(&dir), Vec::<String>::new());
    assert!(!dir.join("strided.safetensors").exists());
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
    /// Eight bytes of `value` (little-endian) from `pos`: a length or an offset.
    Word {
        pos: usize,
        value: u64,
    },
}

/// Half the positions in the first 256 bytes, where the header is; half anywhere.
fn position() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..256, any::<usize>()]
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

/// Checks the reader on `bytes`: tensors, or an error naming the file; a file the check passes is one tch
/// reads. Says whether it was read.
fn check(path: &Path, bytes: &[u8]) -> Result<bool, TestCaseError> {
    std::fs::write(path, bytes).unwrap();
    let checked = check_safetensors(path).is_ok();
    match load_tensors(path) {
        Ok(_) => Ok(true),
        Err(err) => {
            prop_assert!(!checked, "passed the check but tch refused it: {}", err);
            prop_assert!(err.to_string().contains("case.safetensors"), "{}", err);
            Ok(false)
        }
    }
}

/// Runs `check` on `CASES` inputs of `strategy` from a fixed seed; returns how many were read.
fn never_panics<S: Strategy>(name: &str, strategy: S, input: impl Fn(S::Value) -> Vec<u8>) -> usize {
    let dir = scratch(name);
    let path = dir.join("case.safetensors");
    let read = std::cell::Cell::new(0);
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let outcome = runner.run(&strategy, |value| {
        read.set(read.get() + usize::from(check(&path, &input(value))?));
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{name}: {failure}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    read.get()
}

#[test]
fn the_safetensors_reader_never_panics_on_arbitrary_bytes() {
    // Raw bytes; raw bytes behind a length that fits them (so the JSON parser sees them); and headers
    // shaped like safetensors' with arbitrary dtypes, shapes and offsets over arbitrary data.
    let header = "\\{\"[a-c]\":\\{\"dtype\":\"(F32|I64|BOOL|U16|X)\",\"shape\":\\[[0-9]{0,3}(,[0-9]{1,20}){0,2}\\],\"data_offsets\":\\[[0-9]{1,3},[0-9]{1,21}\\]\\}\\}";
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512).prop_map(|bytes| bytes),
        prop::collection::vec(any::<u8>(), 0..512).prop_map(|bytes| [
            &(bytes.len() as u64).to_le_bytes()[..],
            &bytes
        ]
        .concat()),
        (header, prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(header, data)| safetensors(&header, &data)),
    ];
    never_panics("arbitrary", strategy, |bytes| bytes);
}

#[test]
fn the_safetensors_reader_never_panics_on_mutated_files() {
    let dir = scratch("seed");
    let path = dir.join("seed.safetensors");
    save_tensors(&named(), &path).unwrap();
    let seed = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let read = never_panics("mutated", prop::collection::vec(mutation(), 1..5), |changes| {
        mutate(seed.clone(), &changes)
    });
    // Mutations in the data leave a readable file; the rest must be refused: both paths are exercised.
    assert!(read > 0 && read < CASES as usize, "{read} of {CASES} read");
}
