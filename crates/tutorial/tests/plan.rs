//! The tutorial's plan on a tiny synthetic setup: a subset of stages, outputs made by the stage
//! commands outside the tutorial (reused, time from their metrics.json), an interrupted head
//! (trained again), features of other images (refused), and the `--limit` subset.

use std::path::{Path, PathBuf};

use features::extract::{extract, ExtractConfig};
use features::preprocess::Preprocess;
use head::mlp::TrainConfig;
use head::pipeline::{train_head, TrainHeadOptions};
use testkit::synth::{vgg_like, VggSpec};
use tutorial::{Action, Error, Stage, Summary, TutorialConfig};

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    model: PathBuf,
    run: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    testkit::write_synthetic(&data, &[("train", 6), ("validation", 3)], 2).unwrap();
    let model = dir.path().join("tiny.onnx");
    std::fs::write(&model, vgg_like(&VggSpec::default())).unwrap();
    let run = dir.path().join("run");
    Setup {
        _dir: dir,
        data,
        model,
        run,
    }
}

fn config(s: &Setup, stages: &str) -> TutorialConfig {
    let mut cfg = TutorialConfig::new(&s.data, s.model.to_string_lossy(), &s.run).quick();
    cfg.preprocess = Some(Preprocess::Caffe);
    cfg.size = Some(64);
    cfg.scratch_size = 64;
    cfg.split_at = Some("block4_pool".into());
    cfg.threads = Some(1);
    cfg.stages = Stage::parse_list(stages).unwrap();
    cfg
}

fn action(s: &Summary, stage: Stage) -> Action {
    s.stages.iter().find(|r| r.stage == stage).unwrap().action
}

fn row(s: &Summary, stage: Stage) -> &tutorial::Row {
    s.stages.iter().find(|r| r.stage == stage).unwrap()
}

fn extract_outside(s: &Setup, data: &Path) {
    let mut cfg = ExtractConfig::new(data, s.model.to_string_lossy(), &s.run);
    cfg.preprocess = Some(Preprocess::Caffe);
    cfg.size = 64;
    extract(&cfg, &mut |_| {}).unwrap();
}

#[test]
fn stage_lists_parse_and_unknown_names_are_refused() {
    assert_eq!(
        Stage::parse_list("finetune, head,extract").unwrap(),
        vec![Stage::Extract, Stage::TrainHead, Stage::Finetune]
    );
    assert_eq!(Stage::parse_list("all").unwrap(), Stage::ALL.to_vec());
    let e = Stage::parse_list("extract,fine-tune")
        .unwrap_err()
        .to_string();
    assert!(e.contains("fine-tune") && e.contains("train-head"), "{e}");
}

#[test]
fn outputs_of_the_stage_commands_are_reused_with_their_own_time() {
    let s = setup();
    // The subset the tutorial would use, made by the stage commands themselves.
    let first = tutorial::run(&config(&s, "extract"), &mut |_| {}).unwrap();
    assert_eq!(action(&first, Stage::Extract), Action::Run);
    std::fs::remove_file(tutorial::record::path(&s.run)).unwrap();
    let opts = TrainHeadOptions {
        run: s.run.clone(),
        config: TrainConfig {
            epochs: 5,
            recipe: head::recipe::Recipe::Keras2016,
            ..TrainConfig::default()
        },
        val_split: None,
        force: false,
    };
    let head = train_head(&opts, &mut |_| {}).unwrap();

    let sum = tutorial::run(&config(&s, "extract,train-head"), &mut |_| {}).unwrap();
    assert_eq!(action(&sum, Stage::Extract), Action::Reuse);
    assert_eq!(action(&sum, Stage::TrainHead), Action::Reuse);
    let r = row(&sum, Stage::TrainHead);
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
    assert!(
        close(r.seconds, head.metrics.total_seconds),
        "{:?}",
        r.seconds
    );
    assert_eq!(r.seconds_source, Some("metrics.json"));
    assert!(close(r.val_accuracy, head.metrics.final_val_accuracy));
    assert_eq!(row(&sum, Stage::Extract).seconds, None);
    for stage in [Stage::Scratch, Stage::Finetune] {
        assert_eq!(action(&sum, stage), Action::Skip);
        assert_eq!(row(&sum, stage).state, "not run");
    }
    let md = std::fs::read_to_string(&sum.report_md).unwrap();
    assert!(
        md.contains("(from metrics.json)") && md.contains("not recorded"),
        "{md}"
    );

    // An interrupted head (no curves yet) is trained again.
    std::fs::remove_file(s.run.join("head/curves.png")).unwrap();
    let again = tutorial::run(&config(&s, "train-head"), &mut |_| {}).unwrap();
    assert_eq!(action(&again, Stage::TrainHead), Action::Continue);
    assert!(s.run.join("head/curves.png").is_file());
    assert_eq!(
        row(&again, Stage::TrainHead).seconds_source,
        Some("tutorial.json")
    );
}

#[test]
fn features_of_other_images_are_refused_and_the_subset_is_linked() {
    let s = setup();
    // Features extracted outside the tutorial from all images, while the tutorial uses 2 per class.
    extract_outside(&s, &s.data);
    let mut cfg = config(&s, "extract");
    cfg.limit = Some(2);
    let err = tutorial::run(&cfg, &mut |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Mismatch(_)), "{err:?}");
    assert!(
        msg.contains("features/train images: 12 there vs 4") && msg.contains("--force"),
        "{msg}"
    );
    cfg.force = true;
    let sum = tutorial::run(&cfg, &mut |_| {}).unwrap();
    assert_eq!(action(&sum, Stage::Extract), Action::Rerun);
    assert_eq!(sum.inputs.images["train"], 4);
    assert_eq!(sum.inputs.images["validation"], 4);
    let meta = features::store::read_meta(&s.run.join("features/train.safetensors")).unwrap();
    assert_eq!(meta.files.len(), 4);
    let linked = s
        .run
        .join(tutorial::inputs::SUBSET_DIR)
        .join("train/bright");
    assert_eq!(std::fs::read_dir(linked).unwrap().count(), 2);
}
