//! Downloading an update image: over HTTPS with the gateway's certificate, into a
//! staging file, resumed with an HTTP range after any interruption (any number of
//! times, from exactly where the staging file ends), never past the signed length, and
//! given up on a link that stalls or crawls (slow retrieval). Every byte goes through
//! the image check; the file counts only once `finish` says it is the signed image.

use crate::release::image::ImageCheck;
use crate::release::{Image, Refusal};
use http_body_util::BodyExt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the image comes from.
#[derive(Clone)]
pub struct Source {
    pub host: String,
    pub port: u16,
    /// `/v1/device/images/{sha256}`.
    pub path: String,
    /// The cloud's CA and the gateway's certificate and key.
    pub tls: Arc<rustls::ClientConfig>,
}

/// How patient a download is.
#[derive(Debug, Clone)]
pub struct Limits {
    /// No byte for this long: the attempt is given up (and the download resumed).
    pub stall: Duration,
    /// Fewer bytes than this per second over `rate_window`: given up as slow retrieval.
    pub min_rate: u64,
    pub rate_window: Duration,
    /// Attempts in all, resumes included.
    pub attempts: u32,
    /// Pause between attempts (doubling up to `retry_max`).
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            stall: Duration::from_secs(30),
            min_rate: 1024,
            rate_window: Duration::from_secs(60),
            attempts: 1000,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The bytes are not the signed image: the staging file is deleted.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("the staging file {path}: {error}")]
    Staging {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("gave up after {attempts} attempts; the last: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("the cloud answered {status}: {body}")]
    Refusing { status: u16, body: String },
}

/// What a download took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Image bytes received over the network (the resumed ones once, as they came).
    pub received: u64,
    pub attempts: u32,
}

/// Why one attempt ended early (the download resumes).
#[derive(Debug)]
enum Cut {
    Network(String),
    Stalled(Duration),
    Slow { bytes: u64, window: Duration },
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Network(e) => write!(f, "{e}"),
            Cut::Stalled(d) => write!(f, "no data for {d:?}"),
            Cut::Slow { bytes, window } => {
                write!(
                    f,
                    "slow retrieval: {bytes} bytes in {window:?}, below the minimum rate"
                )
            }
        }
    }
}

fn staging_err(path: &Path) -> impl Fn(std::io::Error) -> DownloadError + '_ {
    move |error| DownloadError::Staging {
        path: path.display().to_string(),
        error,
    }
}

/// The check, fed with what the staging file holds already (a truncated or foreign
/// file is started over).
fn resume(staging: &Path, image: &Image) -> Result<(ImageCheck, std::fs::File), DownloadError> {
    let err = staging_err(staging);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(staging)
        .map_err(&err)?;
    let mut check = ImageCheck::new(image);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(&err)?;
        if n == 0 {
            break;
        }
        if check.feed(&buf[..n]).is_err() {
            // More than the image: not ours to resume.
            file.set_len(0).map_err(&err)?;
            return Ok((ImageCheck::new(image), file));
        }
    }
    Ok((check, file))
}

/// Downloads `image` from `source` into `staging` (resuming what is there), calling
/// `progress(bytes, total)` as it goes. Ok only when the staging file is the image.
pub async fn fetch(
    source: &Source,
    staging: &Path,
    image: &Image,
    limits: &Limits,
    mut progress: impl FnMut(u64, u64),
) -> Result<Fetched, DownloadError> {
    let mut fetched = Fetched::default();
    let mut last = String::new();
    while fetched.attempts < limits.attempts {
        let (mut check, mut file) = resume(staging, image)?;
        let have = check.bytes_seen();
        if have == image.length {
            return match check.finish() {
                Ok(()) => {
                    file.sync_all().map_err(staging_err(staging))?;
                    Ok(fetched)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(staging);
                    Err(e.into())
                }
            };
        }
        if fetched.attempts > 0 {
            let pause =
                crate::backoff::backoff(limits.retry_min, limits.retry_max, fetched.attempts - 1);
            tokio::time::sleep(pause).await;
        }
        fetched.attempts += 1;
        match attempt(
            source,
            staging,
            &mut file,
            &mut check,
            have,
            limits,
            &mut fetched,
            &mut progress,
        )
        .await
        {
            Ok(()) => continue,
            Err(Ok(cut)) => {
                tracing::info!(at = check.bytes_seen(), of = image.length, attempt = fetched.attempts, reason = %cut, "image download interrupted; resuming");
                last = cut.to_string();
            }
            Err(Err(e)) => {
                if matches!(e, DownloadError::Refused(_)) {
                    let _ = std::fs::remove_file(staging);
                }
                return Err(e);
            }
        }
    }
    Err(DownloadError::GaveUp {
        attempts: fetched.attempts,
        last,
    })
}

/// One request from byte `have`: Ok at the end of the body, `Err(Ok)` to resume,
/// `Err(Err)` to give up.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    source: &Source,
    staging: &Path,
    file: &mut std::fs::File,
    check: &mut ImageCheck,
    have: u64,
    limits: &Limits,
    fetched: &mut Fetched,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), Result<Cut, DownloadError>> {
    let range = format!("bytes={have}-");
    let headers: Vec<(&str, &str)> = if have > 0 {
        vec![("range", range.as_str())]
    } else {
        vec![]
    };
    let to = crate::https::Target {
        host: &source.host,
        port: source.port,
        addr: None,
        tls: Some(source.tls.clone()),
    };
    let req = crate::https::Request {
        method: http::Method::GET,
        path: &source.path,
        headers: &headers,
        body: None,
        limit: 0,
        timeout: limits.stall,
    };
    let mut answer = crate::https::open(&to, req)
        .await
        .map_err(|e| Ok(Cut::Network(e.to_string())))?;
    match (answer.status, have) {
        (206, _) | (200, 0) => {}
        (200, _) => {
            // The server ignored the range: start over from byte 0.
            file.set_len(0).map_err(|e| Err(staging_err(staging)(e)))?;
            return Err(Ok(Cut::Network(
                "the server did not resume; starting over".into(),
            )));
        }
        (s, _) if s >= 500 => return Err(Ok(Cut::Network(format!("the cloud answered {s}")))),
        (status, _) => {
            let body = tokio::time::timeout(limits.stall, answer.body.collect())
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).to_string())
                .unwrap_or_default();
            return Err(Err(DownloadError::Refusing { status, body }));
        }
    }
    let mut window_start = Instant::now();
    let mut window_bytes = 0u64;
    let mut last_data = Instant::now();
    loop {
        // Wait for the next bytes until the link stalls or the rate window closes,
        // whichever comes first: a link that crawls is caught even when (TLS records
        // being large) no whole record arrives within the window.
        let stall_left = limits.stall.saturating_sub(last_data.elapsed());
        let window_left = limits.rate_window.saturating_sub(window_start.elapsed());
        let next = tokio::time::timeout(stall_left.min(window_left), answer.body.frame()).await;
        let frame = match next {
            Err(_) if last_data.elapsed() >= limits.stall => {
                return Err(Ok(Cut::Stalled(limits.stall)))
            }
            Err(_) => {
                let window = window_start.elapsed();
                if (window_bytes as f64) < limits.min_rate as f64 * window.as_secs_f64() {
                    return Err(Ok(Cut::Slow {
                        bytes: window_bytes,
                        window,
                    }));
                }
                window_start = Instant::now();
                window_bytes = 0;
                continue;
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(Ok(Cut::Network(e.to_string()))),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        check.feed(&data).map_err(|e| Err(e.into()))?;
        file.write_all(&data)
            .map_err(|e| Err(staging_err(staging)(e)))?;
        fetched.received += data.len() as u64;
        window_bytes += data.len() as u64;
        last_data = Instant::now();
        progress(check.bytes_seen(), check.declared_length());
    }
}
