//! Fetching Microsoft's Dogs vs Cats zip: a 5-second reachability probe first (so an offline machine gets a
//! clear message at once), then a streamed download to a temp file that is renamed when complete.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::{Error, Result};

/// Microsoft's public copy of the Kaggle Dogs vs Cats photos (about 786 MB).
pub const MICROSOFT_URL: &str = "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/kagglecatsanddogs_5340.zip";

/// Kaggle's competition page, where `train.zip` can be downloaded after signing in.
pub const KAGGLE_PAGE: &str = "https://www.kaggle.com/c/dogs-vs-cats/data";

/// How long the probe waits for name resolution and the TCP connection together.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `host:port` of an `http(s)://host[:port]/…` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or(rest);
    if host.contains(':') {
        host.to_string()
    } else if url.starts_with("http://") {
        format!("{host}:80")
    } else {
        format!("{host}:443")
    }
}

/// Fails within [`PROBE_TIMEOUT`] when the URL's host cannot be resolved or connected to.
pub fn probe(url: &str) -> std::io::Result<()> {
    let addr = host_port(url);
    let (tx, rx) = mpsc::channel();
    // Name resolution has no timeout of its own; a thread bounds it (it is left to finish on its own).
    std::thread::spawn(move || {
        let result = (|| {
            let mut last = std::io::Error::other("no address");
            for a in addr.to_socket_addrs()? {
                match TcpStream::connect_timeout(&a, PROBE_TIMEOUT) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })();
        let _ = tx.send(result);
    });
    rx.recv_timeout(PROBE_TIMEOUT).unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer within 5 s",
        ))
    })
}

/// Downloads `url` to `dest` (through `dest` + `.part`), calling `progress(done, total)` as bytes arrive.
pub fn download(url: &str, dest: &Path, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<()> {
    let fail = |what: String| {
        Error::Download(format!(
            "downloading {url} failed ({what}): download it yourself and pass --archive PATH"
        ))
    };
    let response = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = response
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok());
    let part = dest.with_extension("zip.part");
    let mut file = std::fs::File::create(&part).map_err(|e| Error::io(&part, e))?;
    let mut reader = response.into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(fail(format!("after {done} bytes: {e}")));
            }
        };
        file.write_all(&buf[..n]).map_err(|e| Error::io(&part, e))?;
        done += n as u64;
        progress(done, total);
    }
    file.sync_all().map_err(|e| Error::io(&part, e))?;
    drop(file);
    if let Some(t) = total {
        if t != done {
            let _ = std::fs::remove_file(&part);
            return Err(fail(format!("got {done} of {t} bytes")));
        }
    }
    std::fs::rename(&part, dest).map_err(|e| Error::io(dest, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_defaults() {
        assert_eq!(host_port(MICROSOFT_URL), "download.microsoft.com:443");
        assert_eq!(host_port("http://127.0.0.1:9/x.zip"), "127.0.0.1:9");
        assert_eq!(host_port("http://example.org/x"), "example.org:80");
    }

    #[test]
    fn probe_fails_on_closed_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        assert!(probe(&format!("http://127.0.0.1:{port}/a.zip")).is_err());
    }
}
