//! Refusals with a message that says what to do: no head, a head from another model or image
//! size, an unknown or useless split tensor, an existing run, changed settings on resume, and a
//! diverging loss.

mod common;

use common::{synthetic, synthetic_config};
use finetune::classifier::Classifier;
use finetune::epoch::{EpochData, Learner, Source, State};
use finetune::net::Net;
use finetune::rows::{Precision, RowReader, RowWriter};
use finetune::{finetune, Error};
use testkit::synth::{vgg_like, VggSpec};
use train::driver::{fit, Plan, Progress};
use train::kernels::Nhwc;
use train::metrics::Keep;
use train::optim::{Optimizer, SgdConfig};

fn fails(cfg: &finetune::FinetuneConfig) -> (Error, String) {
    let e = finetune(cfg, &mut |_| {}).expect_err("fine-tuning should have failed");
    let msg = e.to_string();
    (e, msg)
}

#[test]
fn a_run_without_a_head_asks_for_train_head() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    std::fs::remove_dir_all(p.run.join("head")).unwrap();
    let (e, msg) = fails(&synthetic_config(&p, &p.run));
    assert!(matches!(e, Error::NoHead { .. }), "{e:?}");
    assert!(
        msg.contains(&format!("bottleneck train-head --run {}", p.run.display())),
        "{msg}"
    );
}

#[test]
fn a_head_from_another_model_or_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let other = dir.path().join("other.onnx");
    std::fs::write(
        &other,
        vgg_like(&VggSpec {
            seed: 99,
            ..VggSpec::default()
        }),
    )
    .unwrap();
    let mut cfg = synthetic_config(&p, &p.run);
    cfg.model = Some(other.to_string_lossy().into_owned());
    let (e, msg) = fails(&cfg);
    assert!(matches!(e, Error::Mismatch(_)), "{e:?}");
    assert!(msg.contains("trained on features of model"), "{msg}");

    let mut cfg = synthetic_config(&p, &p.run);
    cfg.size = Some(32);
    let (e, msg) = fails(&cfg);
    assert!(
        matches!(e, Error::Mismatch(_)) && msg.contains("--size 32"),
        "{msg}"
    );
}

#[test]
fn a_split_tensor_that_does_not_exist_or_leaves_nothing_to_train_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let mut cfg = synthetic_config(&p, &p.run);
    cfg.split_at = Some("block4_poool".into());
    let (_, msg) = fails(&cfg);
    assert!(
        msg.contains("--split-at block4_poool") && msg.contains("block4_pool"),
        "{msg}"
    );

    cfg.split_at = Some("block5_pool".into());
    let (e, msg) = fails(&cfg);
    assert!(
        matches!(e, Error::Block(_)) && msg.contains("nothing to train"),
        "{msg}"
    );

    // A split further down trains blocks 4 and 5 together.
    cfg.split_at = Some("block3_pool".into());
    let block = finetune(&cfg, &mut |_| {});
    assert!(
        block.is_ok(),
        "training blocks 4 and 5 from block3_pool is allowed: {:?}",
        block.err()
    );
}

#[test]
fn an_existing_run_needs_force_or_resume_and_resume_keeps_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let mut cfg = synthetic_config(&p, &p.run);
    cfg.epochs = 1;
    let mut resume = cfg.clone();
    resume.resume = true;
    let (_, msg) = fails(&resume);
    assert!(msg.contains("nothing to resume"), "{msg}");

    finetune(&cfg, &mut |_| {}).expect("first run");
    let (e, msg) = fails(&cfg);
    assert!(
        matches!(e, Error::Train(train::Error::Exists { .. }))
            && msg.contains("--resume")
            && msg.contains("--force"),
        "{msg}"
    );

    let mut changed = resume.clone();
    changed.epochs = 2;
    changed.options.sgd.learning_rate = 0.5;
    let (e, msg) = fails(&changed);
    assert!(
        matches!(e, Error::Mismatch(_)) && msg.contains("learning_rate"),
        "{msg}"
    );

    let mut longer = resume.clone();
    longer.epochs = 2;
    let r = finetune(&longer, &mut |_| {}).expect("resume for a second epoch");
    assert_eq!((r.resumed_at, r.epochs_done), (Some(1), 2));

    let mut force = cfg.clone();
    force.force = true;
    let r = finetune(&force, &mut |_| {}).expect("--force starts over");
    assert_eq!((r.resumed_at, r.epochs_done), (None, 1));
}

#[test]
fn a_diverging_loss_stops_without_writing_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let mut cfg = synthetic_config(&p, &p.run);
    cfg.options.sgd.learning_rate = 1e6;
    cfg.options.sgd.momentum = 0.0;
    let (e, msg) = fails(&cfg);
    assert!(matches!(e, Error::Diverged(_)), "{e:?}");
    assert!(msg.contains("--lr"), "{msg}");
    assert!(!p.run.join("finetune/checkpoint.safetensors").exists());
}

#[test]
fn an_epoch_with_a_nan_loss_leaves_the_last_good_state() {
    let model = vgg_like(&VggSpec::default());
    let block = finetune::graph::block_from_onnx(&model, "block4_pool", "block5_pool").unwrap();
    let head = Classifier {
        pooled: false,
        feature_shape: [16, 2, 2],
        hidden: 4,
        num_classes: 2,
        dropout: 0.5,
        w1: (0..64 * 4).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect(),
        b1: vec![0.0; 4],
        w2: vec![0.1, -0.1, 0.2, -0.2],
        b2: vec![0.0],
    };
    let net = Net::new(
        block,
        head,
        Nhwc {
            n: 1,
            h: 4,
            w: 4,
            c: 16,
        },
    )
    .unwrap();
    let sizes: Vec<usize> = net.params().iter().map(|p| p.len()).collect();
    let optim = Optimizer::new(
        SgdConfig {
            learning_rate: 1e-4,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        }
        .to_config(),
        &sizes,
    )
    .unwrap();
    let state = State { net, optim };
    let dir = tempfile::tempdir().unwrap();
    let rows = 8;
    let write = |name: &str, value: f32| {
        let path = dir.path().join(name);
        let mut w = RowWriter::create(
            &path,
            rows,
            &[16, 4, 4],
            Precision::F32,
            &Default::default(),
        )
        .unwrap();
        for i in 0..rows {
            let row: Vec<f32> = (0..256)
                .map(|j| {
                    if j == 5 {
                        value
                    } else {
                        ((i * 31 + j) % 11) as f32
                    }
                })
                .collect();
            w.push(&row).unwrap();
        }
        w.finish().unwrap();
        RowReader::open(&path).unwrap()
    };
    let clean = [write("clean.safetensors", 1.0)];
    let poisoned = [write("nan.safetensors", f32::NAN)];
    let labels: Vec<u32> = (0..rows as u32).map(|i| i % 2).collect();
    let all: Vec<usize> = (0..rows).collect();
    let data = EpochData {
        labels: &labels,
        rows: &all,
        row_shape: [16, 4, 4],
        batch_size: 4,
        seed: 1,
        val: &clean[0],
        val_labels: &labels,
    };
    let mut on_end = |_: &State, _: &train::driver::EpochEnd<'_, Net>| Ok(());
    let mut cpu = finetune::compute::Cpu;
    let mut learner = Learner {
        state,
        compute: &mut cpu,
        source: Source::Cached(&clean),
        data,
        on_end: &mut on_end,
    };
    let plan = |epochs| Plan {
        epochs,
        stop_after: None,
        keep: Keep::Last,
    };
    let first = fit(&mut learner, &plan(1), Progress::default(), &mut |_| {}).unwrap();
    assert!(first.stopped_early.is_none() && first.history.len() == 1);
    let good = learner.state.net.clone();
    learner.source = Source::Cached(&poisoned);
    let progress = Progress {
        history: first.history,
        best: None,
    };
    let second = fit(&mut learner, &plan(2), progress, &mut |_| {}).unwrap();
    let msg = second
        .stopped_early
        .expect("a NaN input should stop the epoch");
    assert!(msg.contains("epoch 2"), "{msg}");
    assert_eq!(second.history.len(), 1);
    assert!(
        learner.state.net == good,
        "the weights were not rolled back"
    );
}
