use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

#[test]
fn the_reference_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
    let cfg = GatewayConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.bus.len(), 2);
    assert_eq!(cfg.bus[1].get_ref().device.len(), 2);
    assert_eq!(cfg.buffer.max_bytes.0, 256 << 20);
}

/// Each bad fixture starts with `# expect: LINE: TEXT`; the first error must be on that
/// line and contain that text.
#[test]
fn every_bad_fixture_is_refused_at_its_line() {
    let mut n = 0;
    let mut bad = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue; // the DBC files the CAN fixtures name
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .unwrap();
        let (line, needle) = expect.split_once(": ").unwrap();
        let errs = GatewayConfig::parse(&text, &path)
            .expect_err(&path.display().to_string())
            .0;
        let first = &errs[0];
        let shown = first.to_string();
        assert!(
            shown.contains(needle),
            "{}: `{shown}` lacks `{needle}`",
            path.display()
        );
        if first.line != line.parse::<usize>().unwrap() {
            eprintln!("MISMATCH {} want {line} got: {shown}", path.display());
            bad += 1;
        }
        assert!(shown.starts_with(&path.display().to_string()), "{shown}");
        n += 1;
    }
    assert_eq!(bad, 0);
    assert!(n >= 15);
}

#[test]
fn errors_name_the_field_path() {
    let text = std::fs::read_to_string(fixtures().join("bad-bit-range.toml")).unwrap();
    let e = GatewayConfig::parse(&text, Path::new("x.toml")).unwrap_err();
    assert!(
        e.0[0]
            .field
            .contains("bus[0] (b).device[0] (d).point[0] (p).bit"),
        "{}",
        e
    );
}

#[test]
fn line_col_counts_from_one() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é\n", 1), (1, 1));
}
