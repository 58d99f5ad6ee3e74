//! T5's relative-position bucket function against the table PyTorch dumped
//! (`tests/fixtures/t5_buckets.safetensors`: `T5Attention._relative_position_bucket` for
//! relative positions -300..300, both directions, num_buckets 8/32/13, max_distance 20/128/7).

mod common;

use common::fixture;
use softprompt::internals::backend::attention::{bucket_lookup, relative_position_bucket};
use softprompt::internals::weights::TensorFile;

struct Table {
    rel: Vec<i64>,
    /// (bidirectional, num_buckets, max_distance, buckets)
    combos: Vec<(bool, usize, usize, Vec<i64>)>,
    degenerate: Vec<String>,
}

fn table() -> Table {
    let file =
        TensorFile::read(&fixture("t5_buckets.safetensors")).expect("t5_buckets.safetensors");
    let meta: serde_json::Value =
        serde_json::from_str(&file.metadata["softprompt"]).expect("metadata");
    let degenerate: Vec<String> = meta["degenerate"]
        .as_array()
        .expect("degenerate list")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let (_, rel) = file
        .int("relative_position")
        .expect("relative_position")
        .clone();
    let mut combos = Vec::new();
    for (name, (shape, data)) in &file.ints {
        let Some(rest) = name.strip_prefix("buckets.") else {
            continue;
        };
        let parts: Vec<&str> = rest.split('.').collect();
        let [dir, nb, md] = parts[..] else {
            panic!("unexpected key {name}")
        };
        assert_eq!(shape, &vec![rel.len()], "{name}");
        if degenerate.contains(name) {
            continue;
        }
        combos.push((
            dir == "bidir",
            nb.parse().unwrap(),
            md.parse().unwrap(),
            data.clone(),
        ));
    }
    combos.sort_by_key(|c| (c.0, c.1, c.2));
    Table {
        rel,
        combos,
        degenerate,
    }
}

#[test]
fn bucket_function_matches_pytorch_table() {
    let t = table();
    assert_eq!(t.rel, (-300..=300).collect::<Vec<i64>>());
    assert_eq!(t.degenerate, ["buckets.bidir.32.7", "buckets.unidir.32.7"]);
    // 2 directions × 3 bucket counts × 3 distances, less the 2 degenerate combos
    assert_eq!(t.combos.len(), 16);
    for (bidir, nb, md, want) in &t.combos {
        let got: Vec<i64> = t
            .rel
            .iter()
            .map(|&r| relative_position_bucket(r, *bidir, *nb, *md) as i64)
            .collect();
        let bad: Vec<String> = (0..got.len())
            .filter(|&i| got[i] != want[i])
            .take(8)
            .map(|i| format!("rel {}: got {} want {}", t.rel[i], got[i], want[i]))
            .collect();
        assert!(
            bad.is_empty(),
            "bidir={bidir} nb={nb} md={md}: {}",
            bad.join(", ")
        );
        // a meaningful table: the logarithmic range is reached and buckets stay in range
        let distinct: std::collections::BTreeSet<i64> = want.iter().copied().collect();
        assert!(
            distinct.len() > *nb / 2,
            "bidir={bidir} nb={nb} md={md}: only {} buckets",
            distinct.len()
        );
        assert!(want.iter().all(|&b| b >= 0 && (b as usize) < *nb));
    }
}

#[test]
fn bucket_lookup_indexes_by_key_minus_query() {
    // bucket_lookup(tq, tk)[j - i + tq - 1] is the bucket of relative position j - i
    let t = table();
    for (bidir, nb, md, want) in &t.combos {
        for (tq, tk) in [(1, 1), (7, 7), (36, 36), (5, 13), (13, 5), (97, 97)] {
            let lookup = bucket_lookup(tq, tk, *bidir, *nb, *md);
            assert_eq!(lookup.len(), tq + tk - 1);
            for i in 0..tq {
                for j in 0..tk {
                    let rel = j as i64 - i as i64;
                    assert_eq!(
                        lookup[j + tq - 1 - i] as i64,
                        want[(rel + 300) as usize],
                        "tq {tq} tk {tk} i {i} j {j}"
                    );
                }
            }
        }
    }
}
