//! `RUN/finetune/model.onnx` run by ONNX Runtime gives the probabilities of the Candle forward
//! rebuilt from the saved `block.safetensors` and `head.safetensors`.

mod common;

use common::{synthetic, synthetic_config};
use features::dataset::{scan, Item};
use features::onnx::Layout;
use features::preprocess::{self, Preprocess, Resize};
use features::runtime::{session, SessionOptions};
use finetune::block::{nchw_to_nhwc, Layer};
use finetune::frozen::run_images;
use finetune::net::Net;
use finetune::{finetune, load_head};
use train::kernels::Nhwc;

/// The photos as one NCHW caffe-preprocessed batch at 64 px (what the synthetic runs use).
fn caffe_inputs(items: &[Item]) -> Vec<f32> {
    let per = 3 * 64 * 64;
    let mut input = vec![0f32; items.len() * per];
    for (slot, it) in input.chunks_exact_mut(per).zip(items) {
        let img = features::image_io::load_rgb8(&it.path).unwrap().image;
        let img = preprocess::resize(&img, 64, 64, Resize::Nearest).unwrap();
        preprocess::write_input(&img, Preprocess::Caffe, Layout::Nchw, slot).unwrap();
    }
    input
}

#[test]
fn exported_model_equals_the_candle_forward_of_the_saved_weights() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let cfg = synthetic_config(&p, &p.run);
    let mut infos = Vec::new();
    let report = finetune(&cfg, &mut |e| {
        if let finetune::Event::Info(s) = e {
            infos.push(s)
        }
    })
    .expect("fine-tuning");
    let check = report.export_check.as_ref().expect("export check ran");
    assert!(check.max_diff <= 1e-4);
    assert!(report.block_check.max_diff <= 1e-4);
    assert!(
        report.block_check.reference_max > 0.0,
        "the block output is all zeros"
    );
    println!("block check: {:?}", report.block_check);
    assert!(
        infos.iter().any(|s| s.contains("model.onnx matches")),
        "{infos:?}"
    );

    // Rebuild the network from the saved files.
    let model = std::fs::read(&p.model).unwrap();
    let mut block = finetune::graph::block_from_onnx(&model, "block4_pool", "block5_pool").unwrap();
    let saved = common::tensors(&p.run.join("finetune/block.safetensors"));
    let f32s = |name: &str| -> Vec<f32> {
        let bytes = &saved
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .1;
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    for l in &mut block.layers {
        if let Layer::Conv(c) = l {
            let w = f32s(&c.weight_name);
            *c = finetune::block::ConvLayer::from_onnx(
                [
                    &c.node.clone(),
                    &c.weight_name.clone(),
                    &c.bias_name.clone(),
                ],
                &w,
                f32s(&c.bias_name),
                (c.cout, c.cin),
                c.relu,
            )
            .unwrap();
        }
    }
    let (head, meta) = load_head(&p.run.join("finetune/head.safetensors")).unwrap();
    assert_eq!(meta.classes, vec!["bright".to_string(), "dark".to_string()]);
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

    // Inputs: every validation image.
    let data = scan(&p.data).unwrap();
    let items = &data.split("validation").unwrap().items;
    let n = items.len();
    let input = caffe_inputs(items);
    let opts = SessionOptions {
        threads: Some(1),
        ..Default::default()
    };
    let mut exported = session(
        &std::fs::read(p.run.join("finetune/model.onnx")).unwrap(),
        &opts,
    )
    .unwrap();
    let (dims, probs) = run_images(&mut exported, Layout::Nchw, 64, &input, n).unwrap();
    assert_eq!(dims, vec![n, 2]);

    let cut = features::onnx::cut_at(&model, "block4_pool").unwrap();
    let mut frozen = session(&cut.bytes, &opts).unwrap();
    let (fd, rows) = run_images(&mut frozen, Layout::Nchw, 64, &input, n).unwrap();
    let d = Nhwc {
        n,
        c: fd[1],
        h: fd[2],
        w: fd[3],
    };
    let z = net.logits(&nchw_to_nhwc(&rows, d), d).unwrap();
    let ours: Vec<f32> = net.head.probabilities(&z).into_iter().flatten().collect();
    let diff = probs
        .iter()
        .zip(&ours)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-5,
        "model.onnx vs Candle: max probability difference {diff}"
    );
    for row in probs.chunks_exact(2) {
        assert!(
            (row[0] + row[1] - 1.0).abs() < 1e-5,
            "probabilities {row:?} do not sum to 1"
        );
    }
    // The head accepts the fine-tuned block's output: predictions follow the labels.
    let correct = probs
        .chunks_exact(2)
        .zip(items)
        .filter(|(pr, it)| usize::from(pr[1] > pr[0]) == it.label)
        .count();
    println!("exported model: {correct}/{n} validation images right, max diff {diff:.2e}, infos {infos:#?}");
}

/// The head-only classifier (backbone cut at the head's input + the stage-2 head, no fine-tuned
/// block) run by ONNX Runtime gives the probabilities of the backbone in ONNX Runtime followed by
/// the head in Candle.
#[test]
fn head_only_export_equals_backbone_in_ort_plus_head_in_candle() {
    use finetune::export::{export_head_onnx, metadata, ExportInfo, OUTPUT};

    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    let (head, meta) = head::load(&p.run.join("head/head.safetensors")).unwrap();
    let model = std::fs::read(&p.model).unwrap();
    let info = ExportInfo {
        classes: meta.classes.clone(),
        preprocess: meta.features.preprocess.clone(),
        image_size: meta.features.image_size,
    };
    let onnx = export_head_onnx(&model, &head, &meta.features.output_tensor, &info).unwrap();
    let props = metadata(&onnx).unwrap();
    let get = |k: &str| {
        props
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("classes"), Some(r#"["bright","dark"]"#));
    assert_eq!(get("image_size"), Some("64"));
    assert_eq!(get("fine_tuned"), None);

    let data = scan(&p.data).unwrap();
    let items = &data.split("validation").unwrap().items[..5];
    let n = items.len();
    let input = caffe_inputs(items);
    let opts = SessionOptions {
        threads: Some(1),
        ..Default::default()
    };
    let mut one = session(&onnx, &opts).unwrap();
    assert_eq!(one.session.outputs()[0].name(), OUTPUT);
    let (dims, probs) = run_images(&mut one, Layout::Nchw, 64, &input, n).unwrap();
    assert_eq!(dims, vec![n, 2]);

    let cut = features::onnx::cut_at(&model, &meta.features.output_tensor).unwrap();
    let mut backbone = session(&cut.bytes, &opts).unwrap();
    let (fd, rows) = run_images(&mut backbone, Layout::Nchw, 64, &input, n).unwrap();
    assert_eq!(fd[1..], meta.feature_shape[..]);
    let ours: Vec<f32> = head.predict(&rows).unwrap().into_iter().flatten().collect();
    let diff = probs
        .iter()
        .zip(&ours)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-5,
        "head-only model vs ORT backbone + Candle head: max probability difference {diff}"
    );
    let spread = ours.iter().fold(0f32, |m, v| m.max((v - 0.5).abs()));
    assert!(spread > 1e-3, "all probabilities are 0.5: {ours:?}");
}

/// Stage 2 with the calibrated linear probe (the `fit` default) in `run`.
fn probe_head(run: &std::path::Path) {
    let opts = head::pipeline::TrainHeadOptions {
        run: run.to_path_buf(),
        config: head::mlp::TrainConfig {
            recipe: head::recipe::Recipe::Probe,
            ..head::mlp::TrainConfig::default()
        },
        val_split: None,
        force: true,
    };
    head::pipeline::train_head(&opts, &mut |_| {}).expect("probe head");
}

#[test]
fn a_linear_probe_head_fine_tunes_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    probe_head(&p.run);
    let cfg = synthetic_config(&p, &p.run);
    let report = finetune(&cfg, &mut |_| {}).expect("fine-tuning a probe head");
    let check = report.export_check.as_ref().expect("export check ran");
    assert!(check.max_diff <= 1e-4, "{check:?}");
    let m = report.metrics.as_ref().expect("metrics");
    assert!(
        m.kept_val_loss.is_finite() && m.kept_val_ece.is_some(),
        "{m:?}"
    );
    let (_, meta) = head::load(&report.paths.head).unwrap();
    assert_eq!(meta.recipe, head::recipe::Recipe::Probe);
}

#[test]
fn calibrate_divides_the_saved_logits_by_a_cross_fitted_temperature() {
    let dir = tempfile::tempdir().unwrap();
    let p = synthetic(dir.path());
    probe_head(&p.run);
    let calibrated_run = dir.path().join("calibrated");
    common::copy_run(&p.run, &calibrated_run);
    let plain = finetune(&synthetic_config(&p, &p.run), &mut |_| {}).expect("fine-tuning");
    let mut cfg = synthetic_config(&p, &calibrated_run);
    cfg.options.calibrate = 2;
    let cal = finetune(&cfg, &mut |_| {}).expect("fine-tuning with --calibrate 2");
    assert!(plain.calibration.is_none());
    let c = cal.calibration.as_ref().expect("the cross-fit ran");
    assert_eq!(c.folds, 2);
    assert!(c.temperature >= 1.0 && c.temperature <= 20.0, "{c:?}");
    assert!(c.oof_log_loss_calibrated <= c.oof_log_loss + 1e-12, "{c:?}");
    // Training is the same run; only the saved output layer is divided by the temperature.
    let (a, b) = (
        common::tensors(&plain.paths.head),
        common::tensors(&cal.paths.head),
    );
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let f = |v: &[u8]| -> Vec<f32> {
            v.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let (x, y) = (f(x), f(y));
        let scale = if name.starts_with("dense_2") {
            1.0 / c.temperature as f32
        } else {
            1.0
        };
        for (u, v) in x.iter().zip(&y) {
            assert!(
                (u * scale - v).abs() <= 1e-6 * u.abs().max(1.0),
                "{name}: {u}·{scale} vs {v}"
            );
        }
    }
    // The reported validation loss is the saved (calibrated) model's; accuracy is unchanged.
    let (pm, cm) = (plain.metrics.unwrap(), cal.metrics.unwrap());
    assert_eq!(pm.kept_val_accuracy, cm.kept_val_accuracy);
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cal.paths.stage.metrics).unwrap()).unwrap();
    assert_eq!(file["calibration"]["folds"], 2);
    assert_eq!(file["kept_val_loss"].as_f64(), Some(cm.kept_val_loss));
    assert!(cal
        .export_check
        .as_ref()
        .is_some_and(|e| e.max_diff <= 1e-4));
}
