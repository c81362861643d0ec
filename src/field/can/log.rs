//! candump log files (`candump -l`): `(1700000000.123456) can0 18FECA00#...` per line,
//! CAN FD as `ID##<flags><data>`, each line's frame parsed by the socketcan crate. Bad
//! lines are reported with their number and skipped, so one damaged line does not lose a
//! capture.

use super::frame::Received;
use std::io::BufRead;
use std::path::Path;

/// One line of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub interface: String,
    pub received: Received,
}

/// A line that is not a candump record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {problem}")]
pub struct LineError {
    pub path: String,
    pub line: usize,
    pub problem: String,
}

/// The longest line read as a record; anything longer is one bad line (and the line
/// count stays right after it).
pub const MAX_LINE: usize = 64 * 1024;

/// Reads a candump log record by record. Lines are ours to split (a line too long is
/// one bad line, whatever its length); each line's frame is parsed by the socketcan
/// crate, and one rule of `candump -l` is applied over it: an id written with eight hex
/// digits is a 29-bit id whatever its value (the crate decides by value, so an extended
/// id at or below 0x7FF came out standard).
pub struct LogReader<R> {
    inner: R,
    path: String,
    line: usize,
    buf: Vec<u8>,
    /// One crate reader for the whole log, fed one line at a time through `feed`
    /// (a reader per line would cost a buffer allocation per line).
    parser: socketcan::dump::Reader<std::io::BufReader<Feed>>,
    feed: Feed,
}

/// The line the crate's reader parses next: what `LogReader` puts in, it reads out.
#[derive(Clone, Default)]
struct Feed(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<u8>>>);

impl Feed {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<u8>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::io::Read for Feed {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        std::io::Read::read(&mut *self.lock(), out)
    }
}

impl LogReader<std::io::BufReader<std::fs::File>> {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(LogReader::new(
            std::io::BufReader::new(std::fs::File::open(path)?),
            &path.display().to_string(),
        ))
    }
}

impl<R: std::io::Read> LogReader<std::io::BufReader<R>> {
    pub fn from_reader(r: R, path: &str) -> Self {
        LogReader::new(std::io::BufReader::new(r), path)
    }
}

impl<R: BufRead> LogReader<R> {
    fn new(inner: R, path: &str) -> Self {
        let feed = Feed::default();
        LogReader {
            inner,
            path: path.to_string(),
            line: 0,
            buf: Vec::with_capacity(256),
            parser: socketcan::dump::Reader::from_reader(feed.clone()),
            feed,
        }
    }

    fn error(&self, problem: String) -> LineError {
        LineError {
            path: self.path.clone(),
            line: self.line,
            problem,
        }
    }

    /// The next line into `buf` (without its end); Ok(false) at the end of the file,
    /// Err(n) for a line of n bytes over the limit (consumed whole).
    fn read_line(&mut self) -> std::io::Result<Result<bool, usize>> {
        self.buf.clear();
        let mut total = 0usize;
        loop {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                return Ok(if total == 0 {
                    Ok(false)
                } else if total > MAX_LINE {
                    Err(total)
                } else {
                    Ok(true)
                });
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if total + take <= MAX_LINE + 1 {
                self.buf.extend_from_slice(&chunk[..take]);
            }
            total += take;
            self.inner.consume(take);
            if done {
                if total > MAX_LINE + 1 {
                    return Ok(Err(total));
                }
                while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                    self.buf.pop();
                }
                return Ok(Ok(true));
            }
        }
    }
}

/// Whether the id of a candump line is written with eight hex digits (29 bits).
fn eight_digit_id(line: &str) -> bool {
    let Some(frame) = line.split_whitespace().nth(2) else {
        return false;
    };
    frame.split('#').next().is_some_and(|id| id.len() == 8)
}

impl<R: BufRead> Iterator for LogReader<R> {
    type Item = Result<Record, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        let read = self.read_line();
        self.line += 1;
        match read {
            Err(e) => return Some(Err(self.error(format!("cannot read: {e}")))),
            Ok(Ok(false)) => return None,
            Ok(Err(n)) => {
                return Some(Err(self.error(format!(
                    "a line of {n} bytes, over the {MAX_LINE}-byte limit of a record"
                ))))
            }
            Ok(Ok(true)) => {}
        }
        let text = String::from_utf8_lossy(&self.buf);
        // The crate reads a line up to its end and at most 64 KiB with it; anything
        // longer (invalid bytes grow as they become U+FFFD) would stay in its buffer.
        if text.len() >= MAX_LINE {
            let n = text.len();
            return Some(Err(self.error(format!(
                "a line of {n} bytes, over the {MAX_LINE}-byte limit of a record"
            ))));
        }
        // The line and its end go in whole, and the crate reads exactly up to that end:
        // nothing of this line is left for the next.
        let eight_digits = eight_digit_id(&text);
        {
            let mut feed = self.feed.lock();
            feed.clear();
            feed.extend(text.as_bytes());
            feed.push_back(b'\n');
        }
        let parsed = self.parser.next_record();
        match parsed {
            Ok(None) => Some(Err(self.error(
                "incomplete line: expected (TIMESTAMP) INTERFACE ID#DATA".to_string(),
            ))),
            Ok(Some(rec)) => {
                let ts_ns = (rec.t_us as i64).saturating_mul(1000);
                let mut received = Received::from_socketcan(rec.frame, ts_ns);
                if let Received::Data(f) = &mut received {
                    if !f.extended && eight_digits {
                        f.extended = true;
                    }
                }
                Some(Ok(Record {
                    line: self.line,
                    interface: rec.device,
                    received,
                }))
            }
            Err(e) => Some(Err(self.error(describe(&e)))),
        }
    }
}

fn describe(e: &socketcan::dump::ParseError) -> String {
    use socketcan::dump::ParseError as P;
    match e {
        P::InvalidTimestamp => {
            "the timestamp is not (SECONDS.MICROSECONDS) with six digits".to_string()
        }
        P::UnexpectedEndOfLine => {
            "incomplete line: expected (TIMESTAMP) INTERFACE ID#DATA".to_string()
        }
        P::InvalidCanFrame => "the frame is not ID#DATA, ID##FLAGSDATA or ID#R".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::can::frame::Frame;

    #[test]
    fn classic_fd_and_bad_lines() {
        let log = "(1700000000.000100) can0 123#1122\n\
                   garbage\n\
                   (1700000000.000200) can1 18FECA00##1000102030405060708090A0B\n\
                   (1700000000.000300) can0 7FF#R\n";
        let recs: Vec<_> = LogReader::from_reader(log.as_bytes(), "t.log").collect();
        assert_eq!(recs.len(), 4);
        let r0 = recs[0].as_ref().unwrap();
        assert_eq!(
            r0.received,
            Received::Data(Frame {
                ts_ns: 1_700_000_000_000_100_000,
                id: 0x123,
                extended: false,
                fd: false,
                data: vec![0x11, 0x22]
            })
        );
        let e = recs[1].as_ref().unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("t.log:2: "), "{e}");
        let r2 = recs[2].as_ref().unwrap();
        assert_eq!(r2.line, 3);
        assert_eq!(r2.interface, "can1");
        match &r2.received {
            Received::Data(f) => {
                assert!(f.fd && f.extended);
                assert_eq!(f.id, 0x18FECA00);
                assert_eq!(f.data.len(), 12);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(recs[3].as_ref().unwrap().received, Received::Remote);
    }

    /// `candump -l` writes a 29-bit id with eight digits whatever its value.
    #[test]
    fn an_eight_digit_id_is_extended_even_at_or_below_0x7ff() {
        let log = "(1700000000.000100) can0 00000123#0700000000000000\n\
                   (1700000000.000200) can0 123#07\n";
        let recs: Vec<_> = LogReader::from_reader(log.as_bytes(), "t.log")
            .map(|r| r.unwrap().received)
            .collect();
        match (&recs[0], &recs[1]) {
            (Received::Data(a), Received::Data(b)) => {
                assert!(a.extended && a.id == 0x123, "{a:?}");
                assert!(!b.extended && b.id == 0x123, "{b:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A line over the limit is one bad line: the numbers after it stay right.
    #[test]
    fn a_very_long_line_is_one_bad_line() {
        let long = format!("(1700000000.000100) can0 123#{}\n", "A".repeat(100_000));
        let log = format!("{long}(1700000000.000200) can0 124#01\n");
        let recs: Vec<_> = LogReader::from_reader(log.as_bytes(), "t.log").collect();
        assert_eq!(recs.len(), 2, "{recs:?}");
        let e = recs[0].as_ref().unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.problem.contains("over the 65536-byte limit"), "{e}");
        assert_eq!(recs[1].as_ref().unwrap().line, 2);
    }

    #[test]
    fn lines_at_the_limit_leave_nothing_behind() {
        // Around the limit, and invalid bytes that grow past it as U+FFFD: whatever
        // each line gives, the good line after it is read whole at its own number.
        let head = "(1700000000.000100) can0 123#";
        let mut log = Vec::new();
        for n in [MAX_LINE - 2, MAX_LINE - 1, MAX_LINE, MAX_LINE + 1] {
            log.extend(head.as_bytes());
            log.extend(std::iter::repeat_n(b'A', n - head.len()));
            log.push(b'\n');
            log.extend(b"(1700000000.000200) can0 124#01\n");
        }
        log.extend(head.as_bytes());
        log.extend(std::iter::repeat_n(0xFFu8, 30_000));
        log.extend(b"\n(1700000000.000200) can0 124#01\n");
        let recs: Vec<_> = LogReader::from_reader(&log[..], "t.log").collect();
        assert_eq!(recs.len(), 10);
        for (i, pair) in recs.chunks(2).enumerate() {
            assert!(pair[0].is_err(), "line {}: {:?}", 2 * i + 1, pair[0]);
            let good = pair[1].as_ref().unwrap();
            assert_eq!(good.line, 2 * i + 2);
            let Received::Data(f) = &good.received else {
                panic!("{good:?}")
            };
            assert_eq!((f.id, &f.data[..]), (0x124, &[1u8][..]));
        }
    }
}
