//! How a failed command's error chain is printed: each cause once, even when an error's own
//! message already quotes its source (as `path: {source}` messages do).

/// The error and its causes joined by `": "`, leaving out a cause whose text the message so far
/// already contains.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like the libraries' `Io { path, source }` errors: the message quotes the source.
    #[derive(Debug)]
    struct Quoting {
        path: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.path, self.source)
        }
    }

    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn a_source_quoted_by_its_error_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let e = anyhow::Error::new(Quoting {
            path: "run/features/x.tmp".into(),
            source: io,
        })
        .context("extracting features from d1");
        assert_eq!(
            describe(&e),
            "extracting features from d1: run/features/x.tmp: No space left on device"
        );
    }

    #[test]
    fn distinct_causes_are_all_kept() {
        let e = anyhow::anyhow!("the model file is not ONNX").context("loading model m.onnx");
        assert_eq!(
            describe(&e),
            "loading model m.onnx: the model file is not ONNX"
        );
    }
}
