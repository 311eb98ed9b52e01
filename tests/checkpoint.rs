//! Loading Hugging Face BERT folders: name variants, dtypes, and the errors bad checkpoints give
//! (each naming the tensor or the file), on tiny synthetic checkpoints.

use engine::model::Checkpoint;
use engine::model::bert::{Bert, ParamKind};
use engine::model::safetensors::SafeTensors;
use engine::{Device, Tape};
use std::path::{Path, PathBuf};

const CONFIG: &str = r#"{"vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
  "intermediate_size": 12, "max_position_embeddings": 10, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
  "hidden_act": "gelu", "model_type": "bert"}"#;

/// (name, dtype, shape, raw little-endian bytes)
type Raw = (String, String, Vec<usize>, Vec<u8>);

fn write_safetensors(path: &Path, tensors: &[Raw]) {
    let mut header = serde_json::Map::new();
    let mut off = 0;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + bytes.len()]}),
        );
        off += bytes.len();
    }
    let json = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    for (_, _, _, b) in tensors {
        out.extend(b);
    }
    std::fs::write(path, out).unwrap();
}

/// The canonical parameters of the tiny config, as (name, shape), with the pooler.
fn canonical() -> Vec<(String, Vec<usize>)> {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let cfg = engine::model::BertConfig::from_json(CONFIG).unwrap();
    Bert::register(&mut tape.store, &cfg, true, &mut |_, d, _k: ParamKind| Ok(vec![0.0; d.iter().product()]), &|_| {
        true
    })
    .unwrap();
    tape.store.params().map(|(n, t)| (n.to_string(), t.dims().to_vec())).collect()
}

/// Deterministic values of tensor `i`.
fn values(i: usize, n: usize) -> Vec<f32> {
    (0..n).map(|j| ((i * 31 + j * 7) % 13) as f32 / 8.0 - 0.75).collect()
}

fn encode(v: &[f32], dtype: &str) -> Vec<u8> {
    match dtype {
        "F32" => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        "F16" => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
        "BF16" => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
        "I32" => v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
        _ => unreachable!(),
    }
}

/// A checkpoint folder whose tensors are `canonical()` transformed by `edit`.
fn folder(tag: &str, dtype: &str, edit: impl Fn(&mut Vec<Raw>)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-ckpt-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let mut raw: Vec<Raw> = canonical()
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let v = values(i, s.iter().product());
            (n, dtype.to_string(), s, encode(&v, dtype))
        })
        .collect();
    edit(&mut raw);
    write_safetensors(&dir.join("model.safetensors"), &raw);
    dir
}

fn load(dir: &Path) -> engine::Result<(Tape<f32>, Bert)> {
    let ckpt = Checkpoint::open(dir)?;
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let bert = ckpt.load_bert(&mut tape.store, &|_| true)?;
    Ok((tape, bert))
}

fn load_err(dir: &Path) -> String {
    match load(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loads_every_parameter_with_its_values() {
    let (tape, bert) = load(&folder("plain", "F32", |_| {})).unwrap();
    assert!(bert.pooler.is_some());
    for (i, (name, shape)) in canonical().iter().enumerate() {
        let t = tape.store.param(name).unwrap();
        assert_eq!(t.dims(), &shape[..]);
        assert_eq!(tape.store.read(t).unwrap(), values(i, shape.iter().product()), "{name}");
    }
}

#[test]
fn bert_prefix_old_layernorm_names_and_known_extras_load() {
    let dir = folder("prefixed", "F32", |raw| {
        for (n, ..) in raw.iter_mut() {
            *n = format!(
                "bert.{}",
                n.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
            );
        }
        raw.push(("cls.predictions.bias".into(), "F32".into(), vec![20], encode(&[0.0; 20], "F32")));
        raw.push(("bert.embeddings.position_ids".into(), "I64".into(), vec![1, 10], vec![0; 80]));
    });
    let (tape, _) = load(&dir).unwrap();
    let t = tape.store.param("encoder.layer.1.output.LayerNorm.weight").unwrap();
    let i = canonical().iter().position(|(n, _)| n == "encoder.layer.1.output.LayerNorm.weight").unwrap();
    assert_eq!(tape.store.read(t).unwrap(), values(i, 8));
}

#[test]
fn half_precision_checkpoints_load_as_float() {
    for dtype in ["F16", "BF16"] {
        let (tape, _) = load(&folder(dtype, dtype, |_| {})).unwrap();
        // The test values are multiples of 1/8 in [-0.75, 0.75]: exact in both formats.
        let t = tape.store.param("encoder.layer.0.attention.self.query.weight").unwrap();
        let i = canonical().iter().position(|(n, _)| n == "encoder.layer.0.attention.self.query.weight").unwrap();
        assert_eq!(tape.store.read(t).unwrap(), values(i, 64), "{dtype}");
    }
}

#[test]
fn a_checkpoint_without_pooler_loads_without_one() {
    let dir = folder("nopooler", "F32", |raw| raw.retain(|(n, ..)| !n.starts_with("pooler.")));
    let (mut tape, bert) = load(&dir).unwrap();
    assert!(bert.pooler.is_none());
    let h = tape.constant(&[0.0; 16], &[1, 2, 8]).unwrap();
    assert!(bert.pool(&mut tape, h).unwrap_err().to_string().contains("no pooler"));
}

#[test]
fn bad_tensors_are_named() {
    let name = "encoder.layer.1.intermediate.dense.weight";
    let missing = folder("missing", "F32", |raw| raw.retain(|(n, ..)| n != name));
    let e = load_err(&missing);
    assert!(e.contains(name) && e.contains("missing"), "{e}");

    let extra = folder("extra", "F32", |raw| {
        raw.push(("encoder.layer.0.surprise".into(), "F32".into(), vec![2], encode(&[1.0, 2.0], "F32")))
    });
    let e = load_err(&extra);
    assert!(e.contains("unexpected tensor encoder.layer.0.surprise"), "{e}");

    let misshaped = folder("misshaped", "F32", |raw| {
        let r = raw.iter_mut().find(|(n, ..)| n == name).unwrap();
        r.2 = vec![8, 12]; // transposed: same size, wrong shape
    });
    let e = load_err(&misshaped);
    assert!(e.contains(name) && e.contains("[8, 12]") && e.contains("[12, 8]"), "{e}");

    let mistyped = folder("mistyped", "F32", |raw| {
        let r = raw.iter_mut().find(|(n, ..)| n == name).unwrap();
        r.1 = "I32".into();
    });
    let e = load_err(&mistyped);
    assert!(e.contains(name) && e.contains("I32"), "{e}");
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let dir = folder("truncated", "F32", |_| {});
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(&dir);
    assert!(e.contains("truncated or corrupt"), "{e}");

    std::fs::write(&path, &bytes[..4]).unwrap();
    assert!(load_err(&dir).contains("too short"));

    let mut garbage = bytes.clone();
    garbage[8..40].copy_from_slice(&[b'#'; 32]);
    std::fs::write(&path, &garbage).unwrap();
    assert!(load_err(&dir).contains("does not parse"));

    let mut huge = bytes;
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &huge).unwrap();
    assert!(load_err(&dir).contains("extends past the end"));
    assert!(SafeTensors::open(&path).is_err());
}

#[test]
fn missing_files_are_named() {
    let dir = folder("nofiles", "F32", |_| {});
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert!(load_err(&dir).contains("no model.safetensors"));
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert!(load_err(&dir).contains("config.json"));
    std::fs::write(dir.join("config.json"), r#"{"vocab_size": 20, "hidden_size": 9, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 4}"#).unwrap();
    assert!(load_err(&dir).contains("not a multiple of num_attention_heads"));
}

/// The data section must be covered by the tensors exactly (the safetensors rule): a header
/// edited in place with its declared length unchanged (a space inserted, the padding's last space
/// pushed into the data) once loaded every tensor shifted by a byte, without a word.
#[test]
fn data_not_covered_exactly_by_the_tensors_is_refused() {
    use engine::model::safetensors::write;
    let dir = std::env::temp_dir().join(format!("engine-ckpt-{}-coverage", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.safetensors");
    // A name length for which the header has padding, so the edited header still parses.
    let bytes = (1..=8)
        .find_map(|n| {
            let t = vec![("w".repeat(n), vec![2, 3], (0..6).map(|i| i as f32).collect::<Vec<f32>>())];
            write(&path, &t, &Default::default()).unwrap();
            let b = std::fs::read(&path).unwrap();
            let hlen = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            (b[8 + hlen - 1] == b' ').then_some(b)
        })
        .expect("some name length pads the header");
    assert!(SafeTensors::open(&path).is_ok(), "the file as written loads");
    let open_err = |b: &[u8]| {
        std::fs::write(&path, b).unwrap();
        SafeTensors::open(&path).map(|_| ()).expect_err("refused").to_string()
    };
    let mut shifted = bytes.clone();
    shifted.insert(9, b' '); // after the header's '{'; its declared length stays
    let e = open_err(&shifted);
    assert!(e.contains("after the last tensor") && e.contains("does not describe the data"), "{e}");
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(open_err(&trailing).contains("1 bytes after the last tensor"));

    let raw = |offsets: [[usize; 2]; 2], data: usize| {
        let json = serde_json::json!({
            "a": {"dtype": "F32", "shape": [1], "data_offsets": offsets[0]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": offsets[1]},
        });
        let j = serde_json::to_vec(&json).unwrap();
        let mut b = (j.len() as u64).to_le_bytes().to_vec();
        b.extend(j);
        b.extend(vec![0u8; data]);
        b
    };
    let gap = open_err(&raw([[0, 4], [8, 16]], 16));
    assert!(gap.contains("bytes 4..8") && gap.contains("in no tensor"), "{gap}");
    let overlap = open_err(&raw([[0, 4], [2, 10]], 10));
    assert!(overlap.contains("overlaps that of tensor a"), "{overlap}");
    std::fs::write(&path, raw([[0, 4], [4, 12]], 12)).unwrap();
    assert!(SafeTensors::open(&path).is_ok(), "exact coverage loads");
}
