//! candump log files (`candump -l`): `(1700000000.123456) can0 18FECA00#...` per line,
//! CAN FD as `ID##<flags><data>`, parsed by the socketcan crate's reader. Bad lines are
//! reported with their number and skipped, so one damaged line does not lose a capture.

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

/// Reads a candump log record by record.
pub struct LogReader<R> {
    inner: socketcan::dump::Reader<R>,
    path: String,
    line: usize,
}

impl LogReader<std::io::BufReader<std::fs::File>> {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(LogReader {
            inner: socketcan::dump::Reader::from_file(path)?,
            path: path.display().to_string(),
            line: 0,
        })
    }
}

impl<R: std::io::Read> LogReader<std::io::BufReader<R>> {
    pub fn from_reader(r: R, path: &str) -> Self {
        LogReader {
            inner: socketcan::dump::Reader::from_reader(r),
            path: path.to_string(),
            line: 0,
        }
    }
}

impl<R: BufRead> Iterator for LogReader<R> {
    type Item = Result<Record, LineError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The reader consumes exactly one line per call, good or bad.
        let next = self.inner.next_record();
        self.line += 1;
        match next {
            Ok(None) => None,
            Ok(Some(rec)) => {
                let ts_ns = (rec.t_us as i64).saturating_mul(1000);
                Some(Ok(Record {
                    line: self.line,
                    interface: rec.device,
                    received: Received::from_socketcan(rec.frame, ts_ns),
                }))
            }
            Err(e) => Some(Err(LineError {
                path: self.path.clone(),
                line: self.line,
                problem: describe(&e),
            })),
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
}
