//! BERT's last layer at the rows the head reads (`Tail`, src/models/bert/tail.rs) in
//! prediction's packed forward (`Bert::encoder_hidden_at`) and in the mixed-prompt step and
//! prediction (src/train/mixed.rs), the table path where each batch row reads its own prompt
//! of its own length. The hidden rows the heads read and the table's gradient against the
//! full forward and backward (every row) within 1e-5; the frozen-weight products, counted by
//! the profiling backend, those of the last layer at the heads' rows. `tests/mixed.rs` checks
//! that the mixed step and prediction still equal each prompt alone.

mod common;

use common::bert_batch::{load_bert_mlm, token_batch, two_prompt_inputs, ROW_LENS};
use common::{assert_close, fixture, normals};
use softprompt::internals::backend::profile::Profiler;
use softprompt::internals::backend::{Backend, DType, Storage};
use softprompt::internals::cpu::CpuBackend;
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::bert::{self, Bert, BertInputs, Tail};
use softprompt::internals::models::Recompute;
use softprompt::internals::rng::Rng;
use softprompt::internals::train::data::Dataset;
use softprompt::internals::train::encode::Row;
use softprompt::internals::train::mixed::{predict_mixed, step_mixed};
use softprompt::internals::train::{Model, Params, Task, TaskKind, TaskSpec};

/// The tail against every row: the same float32 ops on fewer rows, the last layer's input
/// gradient summed in another order (bert_tail.rs's bound; measured here: the read rows
/// bit for bit, the table's gradient 2.6e-7).
const TOL_FULL: f64 = 1e-5;

/// The batch of two prompts (`two_prompt_inputs`: rows of 7, 2 and 5 tokens reading prompts
/// of 3, 5 and 3 rows, P = 5), the (2, 5, C) table, and the flat rows of (B, P+T) a head
/// reads: two of row 0's tokens, one of row 1's, row 2's last token.
fn mixed_batch<B: Backend>(be: &B, m: &Bert<B>) -> (BertInputs<B>, B::Buf, Vec<i32>) {
    let mut rng = Rng::new(29);
    let (c, vocab) = (m.cfg.hidden_size, m.cfg.vocab_size);
    let tokens = token_batch(&mut rng, &ROW_LENS, vocab);
    let table: Vec<f32> = (normals(&mut rng, 2 * 5 * c, 0.5).iter())
        .map(|&x| x as f32)
        .collect();
    let inp = two_prompt_inputs(be, m, &tokens);
    let t = inp.t(); // 12
                     // row 0's tokens sit at 3..10, row 1's at 5..7, row 2's at 3..8
    let read = vec![4, 9, t as i32 + 6, 2 * t as i32 + 7];
    (inp, be.upload(DType::F32, &table).unwrap(), read)
}

/// (R, C) the rows `rows` of `h` (rows·C).
fn rows_of(h: &[f32], rows: &[i32], c: usize) -> Vec<f32> {
    (rows.iter())
        .flat_map(|&r| h[r as usize * c..(r as usize + 1) * c].to_vec())
        .collect()
}

#[test]
fn packed_forward_at_the_read_rows_equals_every_row() {
    packed_tail_equals_every_row(&CpuBackend::<f32>::new(), TOL_FULL);
}

/// Through the kernels (the `emu` device): the tail's queries gathered from the packed rows,
/// float32 at the CPU's bound and bf16 at its default tolerance.
#[cfg(feature = "emu")]
#[test]
fn packed_forward_at_the_read_rows_equals_every_row_on_the_emu_device() {
    use softprompt::internals::backend::Precision;
    use softprompt::internals::cuda::CudaBackend;
    packed_tail_equals_every_row(&CudaBackend::emu_with(Precision::F32).unwrap(), TOL_FULL);
    let bf16 = CudaBackend::emu_with(Precision::Bf16).unwrap();
    packed_tail_equals_every_row(&bf16, bf16.device().default_tol());
}

fn packed_tail_equals_every_row<B: Backend>(be: &B, tol: f64) {
    let m = load_bert_mlm(be);
    let c = m.cfg.hidden_size;
    let (inp, table, read) = mixed_batch(be, &m);
    let tail = Tail::covering(be, &read, inp.b, inp.t()).unwrap().unwrap();
    assert_eq!(tail.count(), 3 * 2, "two rows a batch row");
    let full = be.download(&m.encoder_hidden(be, &table, &inp).unwrap());
    let (at, tail) = m.encoder_hidden_at(be, &table, &inp, Some(tail)).unwrap();
    let tail = tail.expect("6 rows are fewer than the 25 real positions");
    let at = be.download(&at).unwrap();
    assert_eq!(at.len(), tail.count() * c);
    let want = rows_of(&full.unwrap(), &read, c);
    let got = rows_of(&at, &tail.rows_of(&read, inp.t()).unwrap(), c);
    assert_close("the read rows", &got, &want, tol);
}

/// The mixed table's step at the encoder: a gradient at the read rows back to the (K, P, C)
/// table, with the last layer at those rows and at every row, both recompute modes.
#[test]
fn mixed_table_step_at_the_read_rows_equals_every_row() {
    let be = CpuBackend::<f32>::new();
    let m = load_bert_mlm(&be);
    let c = m.cfg.hidden_size;
    let (inp, table, read) = mixed_batch(&be, &m);
    let n = inp.b * inp.t();
    let dread: Vec<f32> = (normals(&mut Rng::new(3), read.len() * c, 1.0).iter())
        .map(|&x| x as f32)
        .collect();
    // (rows, C) zeros but the read rows' gradient, at `at` (the read rows in that layout)
    let dhidden = |rows: usize, at: &[i32]| {
        let mut d = vec![0.0f32; rows * c];
        for (i, &r) in at.iter().enumerate() {
            d[r as usize * c..(r as usize + 1) * c].copy_from_slice(&dread[i * c..(i + 1) * c]);
        }
        be.upload(be.act_dtype(), &d).unwrap()
    };
    for recompute in [Recompute::None, Recompute::Layer] {
        let step = |tail: Option<Tail<CpuBackend<f32>>>| {
            let mut acct = MemoryAccountant::new();
            let (h, acts) = m
                .encoder_fwd_at(&be, &mut acct, &table, &inp, recompute, None, tail)
                .unwrap();
            let (rows, at) = match acts.tail() {
                Some(tl) => (tl.count(), tl.rows_of(&read, inp.t()).unwrap()),
                None => (n, read.clone()),
            };
            let h = rows_of(&be.download(&h).unwrap(), &at, c);
            let mut dtable = be.zeros(DType::F32, 2 * 5 * c).unwrap();
            let d = dhidden(rows, &at);
            m.encoder_bwd_split(&be, &mut acct, Some(&mut dtable), None, d, acts, &inp)
                .unwrap();
            (h, be.download(&dtable).unwrap())
        };
        let (want_h, want_d) = step(None);
        let tail = Tail::covering(&be, &read, inp.b, inp.t()).unwrap();
        let (got_h, got_d) = step(tail);
        let name = format!("{recompute:?}");
        assert_close(&format!("{name}: the read rows"), &got_h, &want_h, TOL_FULL);
        assert!(want_d.iter().any(|&x| x != 0.0), "{name}: a zero gradient");
        assert_close(
            &format!("{name}: the table's gradient"),
            &got_d,
            &want_d,
            TOL_FULL,
        );
    }
}

/// Two `pet` jobs (one task, two verbalized labels) with prompts of 4 and 2 rows on `model`,
/// and their rows, interleaved: (jobs' parameters, rows naming their job).
fn pet_jobs<B: Backend>(be: &B, model: &Model<B>) -> (Task, Vec<Params<B>>, Vec<(usize, Row)>) {
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["bad".into(), "great".into()];
    spec.max_len = 32; // the fixture's 64 positions hold it behind 4 prompt rows
    let task = Task::new(spec, model).unwrap();
    let data = Dataset::from_pairs(
        "mem",
        [
            ("a great film with a warm heart", Some("positive")),
            ("bad", Some("negative")),
            (
                "the plot drags and the actors look tired of it",
                Some("negative"),
            ),
            ("quite good", Some("positive")),
            (
                "not my kind of thing at all, but well made",
                Some("positive"),
            ),
        ],
    );
    let enc = task.encode(&model.tokenizer, &data).unwrap();
    let c = model.hidden_size();
    let mut rng = Rng::new(7);
    let params = [4, 2].map(|p| {
        let prompt: Vec<f32> = (normals(&mut rng, p * c, 0.5).iter())
            .map(|&x| x as f32)
            .collect();
        Params {
            prompt: be.upload(DType::F32, &prompt).unwrap(),
            p,
            d: c,
            head: None,
            prefix: None,
        }
    });
    let rows = (enc.rows.iter().enumerate())
        .map(|(i, r)| (i % 2, r.clone()))
        .collect();
    (task, params.into(), rows)
}

/// The frozen-weight products' FLOPs of the mixed prediction and step over two `pet` jobs of
/// 4 and 2 prompt rows (one batch, P = 4): the last layer's queries, output projection and
/// FFN at each row's [MASK] row only (prediction: the other layers at the N real positions;
/// the step: at every position, and the first layer's backward at the B·P prompt rows).
#[test]
fn mixed_pet_jobs_run_the_last_layer_at_the_mask_rows() {
    let be = Profiler::new(CpuBackend::<f32>::new());
    let model = Model::load(&be, &fixture("bert_mlm")).unwrap();
    let (task, params, rows) = pet_jobs(&be, &model);
    let jobs: Vec<(&Task, &Params<_>)> = params.iter().map(|p| (&task, p)).collect();
    let softprompt::internals::models::Model::Bert(bert) = &model.net else {
        panic!("not BERT")
    };
    let (c, i, layers) = (
        bert.cfg.hidden_size,
        bert.cfg.intermediate_size,
        bert.cfg.num_hidden_layers,
    );
    assert!(layers >= 2, "the first and the last layer must differ");
    let b = rows.len();
    let lens: Vec<usize> = rows.iter().map(|(_, r)| r.ids.len()).collect();
    let (p, t) = (4, *lens.iter().max().unwrap());
    // the N real positions: each row's own prompt and its tokens
    let real: usize = (rows.iter().zip(&lens))
        .map(|((j, _), &l)| [4, 2][*j] + l)
        .sum();
    let layer = |rows: usize| rows * (4 * c * c + 2 * c * i);
    let last_at_mask = |kv_rows: usize| kv_rows * 2 * c * c + b * (2 * c * c + 2 * c * i);
    // the verbalizer head at the B [MASK] rows (prediction runs its forward alone)
    let head = b * c * c + b * c * 2;
    let products = |f: &dyn Fn()| {
        be.reset();
        f();
        be.sum_of(&["linear_fwd", "linear_bwd"]).0 as usize
    };
    let predicted = products(&|| {
        predict_mixed(&be, &model, &jobs, &rows, 64).unwrap();
    });
    let want = (layers - 1) * layer(real) + last_at_mask(real) + head;
    assert_eq!(predicted, 2 * want, "prediction's products");
    let stepped = products(&|| {
        step_mixed(&be, &model, &jobs, &rows, Recompute::None).unwrap();
    });
    let n = b * (p + t);
    let first_bwd = n * (c * c + 2 * c * i) + b * p * 3 * c * c;
    let full = layers * layer(n) + 2 * head + (layers - 1) * layer(n) + first_bwd;
    let want = full - 2 * layer(n) + 2 * last_at_mask(n);
    assert_eq!(stepped, 2 * want, "the step's products");
}

/// Single-prompt prediction of a `cls` task under mean pooling over rows of different
/// lengths. The head reads every real token, so the last layer's tail spans a batch row's
/// longest row, B·T rows: on these uneven rows no fewer than the N real positions, so the
/// batched prediction drops the tail and runs the packed forward at every row; each row alone
/// (no padding) runs the tail. Both against each row alone through the untailed, unpacked
/// `encoder_fwd`, mean-pooled over its tokens and through the head by hand, within 1e-5.
#[test]
fn mean_pooled_predict_on_uneven_rows_equals_each_row_alone_untailed() {
    use softprompt::internals::models::cls_head::HostClsHead;
    use softprompt::internals::models::heads::Pooling;
    use softprompt::internals::models::TokenBatch;
    use softprompt::internals::train::predict_all;
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).unwrap();
    let softprompt::internals::models::Model::Bert(bert) = &model.net else {
        panic!("not BERT")
    };
    let mut spec = TaskSpec::new(TaskKind::Cls, &["negative", "positive"]);
    spec.pooling = Pooling::Mean;
    spec.max_len = 32; // the fixture's 64 positions hold it behind the prompt
    let task = Task::new(spec, &model).unwrap();
    let texts = [
        "bad",
        "the plot drags and the actors look tired of it, scene after scene, to the end",
        "quite good",
        "a great film",
    ];
    let data = Dataset::from_pairs("mem", texts.iter().map(|t| (*t, None::<&str>)));
    let enc = task.encode(&model.tokenizer, &data).unwrap();
    let (p, c, k) = (3, model.hidden_size(), 2);
    let lens = enc.lens();
    let real: usize = lens.iter().map(|l| p + l).sum();
    let t = *lens.iter().max().unwrap();
    assert!(
        texts.len() * t >= real,
        "the batched tail would run: {lens:?}"
    );
    let mut rng = Rng::new(11);
    let mut draw = |n| -> Vec<f32> {
        normals(&mut rng, n, 0.5)
            .iter()
            .map(|&x| x as f32)
            .collect()
    };
    let prompt = draw(p * c);
    // a fresh head is zero: random values make the scores differ
    let head = HostClsHead {
        k,
        c,
        weight: draw(k * c),
        bias: draw(k),
    };
    let params = Params {
        prompt: be.upload(DType::F32, &prompt).unwrap(),
        p,
        d: c,
        head: Some(head.upload(&be).unwrap()),
        prefix: None,
    };
    // row i alone through every layer at every position: the mean of its token rows' hidden
    // states, then the head's log-softmax
    let untailed = |ids: &[i32]| -> Vec<f32> {
        let t = ids.len();
        let tokens = TokenBatch {
            b: 1,
            t,
            ids: ids.to_vec(),
            mask: vec![1; t],
            type_ids: None,
        };
        let inp = bert::upload_inputs(&be, &bert.cfg, &tokens, p).unwrap();
        let mut acct = MemoryAccountant::new();
        let (h, _) =
            (bert.encoder_fwd(&be, &mut acct, &params.prompt, &inp, Recompute::None, None))
                .unwrap();
        let h = be.download(&h).unwrap();
        let mean: Vec<f64> = (0..c)
            .map(|j| (p..p + t).map(|s| f64::from(h[s * c + j])).sum::<f64>() / t as f64)
            .collect();
        let logits: Vec<f64> = (0..k)
            .map(|i| {
                let w = &head.weight[i * c..(i + 1) * c];
                let dot: f64 = w.iter().zip(&mean).map(|(&w, &x)| f64::from(w) * x).sum();
                dot + f64::from(head.bias[i])
            })
            .collect();
        let top = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let norm = top + logits.iter().map(|&l| (l - top).exp()).sum::<f64>().ln();
        logits.iter().map(|&l| (l - norm) as f32).collect()
    };
    let batched = predict_all(&be, &model, &task, &params, &enc, 64).unwrap();
    let alone = predict_all(&be, &model, &task, &params, &enc, 1).unwrap();
    for (i, row) in enc.rows.iter().enumerate() {
        let want = untailed(&row.ids);
        assert_close(&format!("row {i} batched"), &batched[i].scores, &want, 1e-5);
        assert_close(&format!("row {i} alone"), &alone[i].scores, &want, 1e-5);
    }
}
