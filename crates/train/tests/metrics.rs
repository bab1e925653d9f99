//! metrics.json / confusion.json: schema, summary choices and the confusion counts.

use serde_json::Value;
use train::metrics::{write_json, ConfusionMatrix, EpochMetrics, Keep, Metrics};

fn epoch(epoch: usize, val_loss: f64, val_accuracy: f64) -> EpochMetrics {
    EpochMetrics {
        epoch,
        loss: 1.0 / epoch as f64,
        accuracy: 0.5 + epoch as f64 / 10.0,
        val_loss,
        val_accuracy,
        seconds: 0.25,
    }
}

fn history() -> Vec<EpochMetrics> {
    vec![
        epoch(1, 0.50, 0.80),
        epoch(2, 0.30, 0.90),
        epoch(3, 0.35, 0.95),
        epoch(4, 0.40, 0.93),
    ]
}

#[test]
fn summary_picks_best_and_final_epochs() {
    let m = Metrics::summarize(
        history(),
        Keep::Best,
        None,
        100,
        40,
        "split validation".into(),
    )
    .unwrap();
    assert_eq!(m.final_val_accuracy, 0.93);
    assert_eq!((m.best_val_accuracy, m.best_val_accuracy_epoch), (0.95, 3));
    assert_eq!((m.best_val_loss, m.best_val_loss_epoch), (0.30, 2));
    assert_eq!((m.kept_epoch, m.kept_val_accuracy), (2, 0.90));
    assert_eq!(m.total_seconds, 1.0);
    let last = Metrics::summarize(history(), Keep::Last, None, 100, 40, String::new()).unwrap();
    assert_eq!((last.kept_epoch, last.kept_val_loss), (4, 0.40));
    assert!(Metrics::summarize(vec![], Keep::Best, None, 0, 0, String::new()).is_err());
}

#[test]
fn metrics_json_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.json");
    let m = Metrics::summarize(
        history(),
        Keep::Best,
        None,
        100,
        40,
        "split validation".into(),
    )
    .unwrap();
    write_json(&path, &m).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let epochs = v["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 4);
    for (i, e) in epochs.iter().enumerate() {
        let obj = e.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "accuracy",
                "epoch",
                "loss",
                "seconds",
                "val_accuracy",
                "val_loss"
            ]
        );
        assert_eq!(obj["epoch"].as_u64().unwrap(), i as u64 + 1);
        assert!(obj["val_accuracy"].is_f64());
    }
    assert_eq!(v["final_val_accuracy"].as_f64().unwrap(), 0.93);
    assert_eq!(v["best_val_accuracy"].as_f64().unwrap(), 0.95);
    assert_eq!(v["keep"], "best");
    assert_eq!(v["kept_epoch"], 2);
    assert!(v["stopped_early"].is_null());
    // Round trip and no stray temporary files.
    let back: Metrics = serde_json::from_value(v).unwrap();
    assert_eq!(back, m);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["metrics.json"]);
}

#[test]
fn confusion_matrix_counts_and_rates() {
    let classes = vec!["cats".to_string(), "dogs".to_string(), "fish".to_string()];
    let truth = [0, 0, 0, 1, 1, 2, 2, 2, 2];
    let pred = [0, 0, 1, 1, 1, 2, 2, 0, 2];
    let c = ConfusionMatrix::new(&classes, &truth, &pred).unwrap();
    assert_eq!(c.matrix, vec![vec![2, 1, 0], vec![0, 2, 0], vec![1, 0, 3]]);
    assert!((c.accuracy - 7.0 / 9.0).abs() < 1e-12);
    assert_eq!(c.per_class[0].support, 3);
    assert!((c.per_class[0].recall - 2.0 / 3.0).abs() < 1e-12);
    assert!((c.per_class[0].precision - 2.0 / 3.0).abs() < 1e-12);
    assert!((c.per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
    let text = c.render();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.lines().nth(3).unwrap().starts_with("fish"), "{text}");
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["classes"][2], "fish");
    assert_eq!(v["matrix"][2][0], 1);
    assert!(ConfusionMatrix::new(&classes, &[0], &[]).is_err());
    assert!(ConfusionMatrix::new(&classes, &[0], &[3]).is_err());
}
