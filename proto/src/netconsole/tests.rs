//! Netconsole parsing against records captured from real kernels, and the
//! assemblers' limits.

use std::borrow::Cow;
use std::time::Instant;

use super::*;
use crate::assembler::PIECE_OVERHEAD;

const STARTED: &[u8] = b"6,416,1758426,-;netconsole: network logging started\n";

/// Cuts `msg` (an unfragmented extended record) the way the kernel's
/// `send_msg_fragmented` does, with `chunk` as MAX_PRINT_CHUNK.
fn kernel_fragments(msg: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let semi = msg.iter().position(|&b| b == b';').unwrap();
    let (header, body) = (&msg[..semi], &msg[semi + 1..]);
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < body.len() {
        let mut d = header.to_vec();
        d.extend_from_slice(format!(",ncfrag={}/{};", offset, body.len()).as_bytes());
        let n = (chunk - d.len()).min(body.len() - offset);
        d.extend_from_slice(&body[offset..offset + n]);
        offset += n;
        out.push(d);
    }
    out
}

fn all_records(asm: &mut ExtendedAssembler) -> Vec<KernelRecord> {
    std::iter::from_fn(|| asm.poll_record()).collect()
}

#[test]
fn parse_basic_record() {
    let r = parse_extended(STARTED).unwrap();
    assert_eq!(r.release, None);
    assert_eq!((r.level, r.facility, r.prefix()), (6, 0, 6));
    assert_eq!(
        (r.seq, r.ts_usec, r.cont, r.frag),
        (416, 1758426, false, None)
    );
    assert_eq!(r.text, b"netconsole: network logging started");
    assert_eq!(r.dict, b"");
    assert_eq!(r.dict_pairs().count(), 0);
}

#[test]
fn parse_release_prefix() {
    let d = b"6.4.0,6,444,501151268,-;netconsole: network logging started\n";
    let r = parse_extended(d).unwrap();
    assert_eq!(r.release, Some(&b"6.4.0"[..]));
    assert_eq!((r.level, r.seq, r.ts_usec), (6, 444, 501151268));
    let d = b"6.13.0-04048-g4f561a87745a,13,468,514729715,-,ncfrag=0/5;hello";
    let r = parse_extended(d).unwrap();
    assert_eq!(r.release, Some(&b"6.13.0-04048-g4f561a87745a"[..]));
    assert_eq!((r.level, r.facility), (5, 1));
    assert_eq!(
        r.frag,
        Some(Fragment {
            offset: 0,
            total: 5
        })
    );
}

#[test]
fn parse_dict_userdata_sysdata() {
    let d = b"7,160,424069,-;pci_root PNP0A03:00: host bridge window [io  0x0000-0x0cf7] (ignored)\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A03:00\n";
    let r = parse_extended(d).unwrap();
    let pairs: Vec<_> = r.dict_pairs().collect();
    assert_eq!(
        pairs,
        [
            (&b"SUBSYSTEM"[..], &b"acpi"[..]),
            (b"DEVICE", b"+acpi:PNP0A03:00")
        ]
    );
    let d = b"12,607,22085407756,-;This is a message\n foo=bar\n cpu=1\n cpu=42\n taskname=echo\n release=6.14.0-rc6-01219-g3c027fbd941d\n msgid=7\n";
    let r = parse_extended(d).unwrap();
    assert_eq!((r.level, r.facility), (4, 1));
    assert_eq!(r.text, b"This is a message");
    assert_eq!(r.dict_pairs().count(), 6);
    let mut asm = ExtendedAssembler::default();
    asm.push(&r, Instant::now()).unwrap();
    let k = asm.poll_record().unwrap();
    assert_eq!(k.msgid, Some(7));
    assert_eq!(k.dict_get(b"cpu"), Some(&b"42"[..]));
    assert_eq!(k.dict_get(b"taskname"), Some(&b"echo"[..]));
    assert_eq!(k.dict_get(b"nope"), None);
    assert!(k.is_complete());
    // A dictionary whose last line lost its newline, and an odd line without `=`.
    let r = parse_extended(b"6,1,2,-;x\n a=b\n weird\n msgid=12").unwrap();
    let pairs: Vec<_> = r.dict_pairs().collect();
    assert_eq!(pairs[1], (&b"weird"[..], &b""[..]));
    assert_eq!(pairs[2], (&b"msgid"[..], &b"12"[..]));
}

#[test]
fn parse_cont_and_extra_fields() {
    let r = parse_extended(b"4,17,99,c;first half \n").unwrap();
    assert!(r.cont);
    assert_eq!(r.text, b"first half ");
    let r = parse_extended(b"4,18,99,+;second half\n").unwrap();
    assert!(r.cont);
    let r = parse_extended(b"6,5,7,-,caller=T123;hi\n").unwrap();
    assert_eq!((r.seq, r.frag, r.text), (5, None, &b"hi"[..]));
    let r = parse_extended(b"6,5,7,-,caller=C1,ncfrag=3/9;abc").unwrap();
    assert_eq!(
        r.frag,
        Some(Fragment {
            offset: 3,
            total: 9
        })
    );
    // Flags `c` pass through the assembler unmerged.
    let mut asm = ExtendedAssembler::default();
    let now = Instant::now();
    asm.push(&parse_extended(b"4,17,99,c;first half \n").unwrap(), now)
        .unwrap();
    asm.push(&parse_extended(b"4,18,99,-;second half\n").unwrap(), now)
        .unwrap();
    let recs = all_records(&mut asm);
    assert_eq!(recs.len(), 2);
    assert!(recs[0].cont && !recs[1].cont);
    assert_eq!(recs[1].text, b"second half");
}

#[test]
fn parse_rejects_ordinary_text() {
    use NetconsoleError::*;
    let cases: &[(&[u8], NetconsoleError)] = &[
        (b"12,3,4 apples;\n", BadHeader),
        (b"12,3,4,apples;\n", BadFlags),
        (b"hello world\n", NoHeader),
        (b"", NoHeader),
        (b"1,2,3;x\n", BadHeader),
        (b"1,2,3,-", NoHeader),
        (b"1,2,3,-;no newline", MissingNewline),
        (b"01,2,3,-;x\n", BadHeader),
        (b"1,-2,3,-;x\n", BadHeader),
        (b"2048,2,3,-;x\n", BadNumber),
        (b"1,99999999999999999999,3,-;x\n", BadNumber),
        (b"1,2,3,-;tab\there\n", BadText),
        (b"1,2,3,-;caf\xc3\xa9\n", BadText),
        (b"1,2,3,-;x\nnot a dict line\n", BadDict),
        (b"1,2,3,-,;x\n", BadHeader),
        (b"1,2,3,-,ncfrag=1;x", BadFragment),
        (b"1,2,3,-,ncfrag=0/0;", BadFragment),
        (b"1,2,3,-,ncfrag=0/4,ncfrag=0/4;x", BadFragment),
        (b"1,2,3,-,ncfrag=4/4;x", FragmentOutOfRange),
        (b"1,2,3,-,ncfrag=2/4;xyz", FragmentOutOfRange),
        (b"1,2,3,-,ncfrag=0/4294967296;x", BadFragment),
        (b"linux,1,2,3,-;x\n", BadHeader),
        (b" 6,1,2,-;x\n", BadHeader),
    ];
    for (d, want) in cases {
        assert_eq!(
            parse_extended(d),
            Err(*want),
            "{:?}",
            String::from_utf8_lossy(d)
        );
        assert!(!want.to_string().is_empty());
    }
    // The header must end within MAX_HEADER_LEN bytes.
    let mut long = b"1,2,3,-,caller=".to_vec();
    long.resize(MAX_HEADER_LEN + 1, b'x');
    long.extend_from_slice(b";x\n");
    assert_eq!(parse_extended(&long), Err(NoHeader));
}

#[test]
fn unescape_kernel_escapes() {
    assert!(matches!(unescape(b"plain"), Cow::Borrowed(b"plain")));
    assert_eq!(&*unescape(b"a\\x5cb\\x09c"), b"a\\b\tc");
    assert_eq!(&*unescape(b"\\xE9\\xff"), b"\xe9\xff");
    assert_eq!(&*unescape(b"\\x4"), b"\\x4");
    assert_eq!(&*unescape(b"\\xzz\\"), b"\\xzz\\");
    assert_eq!(&*unescape(b"\\\\x41"), b"\\A");
}

#[test]
fn fragments_doc_example() {
    let a = b"6,416,1758426,-,ncfrag=0/31;the first chunk,";
    let b = b"6,416,1758426,-,ncfrag=16/31; the 2nd chunk.";
    let ra = parse_extended(a).unwrap();
    assert_eq!(
        ra.frag,
        Some(Fragment {
            offset: 0,
            total: 31
        })
    );
    assert_eq!(ra.text, b"the first chunk,");
    assert_eq!(ra.dict, b"");
    let now = Instant::now();
    for order in [[a as &[u8], b], [b, a]] {
        let mut asm = ExtendedAssembler::default();
        asm.push(&parse_extended(order[0]).unwrap(), now).unwrap();
        assert!(asm.poll_record().is_none());
        // What arrived (16 or 15 bytes), not the 31 declared.
        let first = parse_extended(order[0]).unwrap().text.len();
        assert_eq!(asm.held_bytes(), first + PIECE_OVERHEAD);
        asm.push(&parse_extended(order[1]).unwrap(), now).unwrap();
        let r = asm.poll_record().unwrap();
        assert_eq!(r.text, b"the first chunk, the 2nd chunk.");
        assert_eq!((r.seq, r.level, r.missing), (416, 6, 0));
        assert_eq!((asm.held_bytes(), asm.poll_timeout()), (0, None));
        // A late duplicate is dropped rather than starting a new record.
        asm.push(&parse_extended(order[0]).unwrap(), now).unwrap();
        assert_eq!(asm.held_bytes(), 0);
    }
}

#[test]
fn fragment_gap_given_up_after_timeout() {
    // As often quoted, without the second chunk's leading space: one byte short.
    let a = b"6,416,1758426,-,ncfrag=0/31;the first chunk,";
    let b = b"6,416,1758426,-,ncfrag=16/31;the 2nd chunk.";
    let cfg = ExtendedConfig {
        fragment_timeout: Duration::from_millis(500),
        ..ExtendedConfig::default()
    };
    let mut asm = ExtendedAssembler::new(cfg);
    let t0 = Instant::now();
    asm.push(&parse_extended(a).unwrap(), t0).unwrap();
    asm.push(&parse_extended(b).unwrap(), t0 + Duration::from_millis(10))
        .unwrap();
    assert!(asm.poll_record().is_none());
    let deadline = asm.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Duration::from_millis(500));
    assert_eq!(asm.handle_timeout(deadline - Duration::from_millis(1)), 0);
    assert_eq!(asm.handle_timeout(deadline), 1);
    let r = asm.poll_record().unwrap();
    assert!(!r.is_complete());
    assert_eq!(r.missing, 1);
    assert_eq!(r.text, b"the first chunk,the 2nd chunk.");
    assert_eq!(asm.poll_timeout(), None);
}

#[test]
fn fragments_with_release_and_userdata_like_kernel() {
    let mut msg = b"6.4.0,4,9000,123456789,-,caller=T42;".to_vec();
    let text: Vec<u8> = (0..2500).map(|i| b'a' + (i % 26) as u8).collect();
    msg.extend_from_slice(&text);
    msg.extend_from_slice(b"\n SUBSYSTEM=net\n cpu=3\n taskname=kworker/3:1\n msgid=77\n");
    let frags = kernel_fragments(&msg, 1000);
    assert_eq!(frags.len(), 3);
    let mut asm = ExtendedAssembler::default();
    let now = Instant::now();
    for f in frags.iter().rev() {
        assert!(f.len() <= 1000);
        assert_eq!(classify(f), Kind::Extended);
        asm.push(&parse_extended(f).unwrap(), now).unwrap();
    }
    let recs = all_records(&mut asm);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.release.as_deref(), Some(&b"6.4.0"[..]));
    assert_eq!((r.level, r.seq, r.ts_usec), (4, 9000, 123456789));
    assert_eq!(r.text, text);
    assert_eq!(r.msgid, Some(77));
    assert_eq!(r.dict_get(b"taskname"), Some(&b"kworker/3:1"[..]));
    assert_eq!(r.dict_pairs().count(), 4);
}

#[test]
fn fragment_limits() {
    let mut asm = ExtendedAssembler::default();
    let now = Instant::now();
    let big = parse_extended(b"6,1,2,-,ncfrag=0/65537;x").unwrap();
    assert_eq!(asm.push(&big, now), Err(NetconsoleError::RecordTooLarge));
    let ok = parse_extended(b"6,1,2,-,ncfrag=0/65536;x").unwrap();
    assert_eq!(asm.push(&ok, now), Ok(()));
    // Hand-built records bypassing parse_extended are still range-checked.
    let mut bad = ok;
    bad.frag = Some(Fragment {
        offset: 65535,
        total: 65536,
    });
    bad.text = b"xy";
    assert_eq!(
        asm.push(&bad, now),
        Err(NetconsoleError::FragmentOutOfRange)
    );
    // One byte held of 65,536 declared.
    assert_eq!(asm.held_bytes(), 1 + PIECE_OVERHEAD);
    // Past max_pending the oldest is given up to make room.
    for seq in 2..=5 {
        let d = format!("6,{seq},2,-,ncfrag=0/10;abc");
        asm.push(&parse_extended(d.as_bytes()).unwrap(), now)
            .unwrap();
    }
    let r = asm.poll_record().unwrap();
    assert_eq!((r.seq, r.missing, r.text.as_slice()), (1, 65535, &b"x"[..]));
    assert_eq!(asm.held_bytes(), 4 * (3 + PIECE_OVERHEAD));
    assert_eq!(asm.flush(), 4);
    assert_eq!(all_records(&mut asm).len(), 4);
    assert_eq!(asm.held_bytes(), 0);
}

#[test]
fn reboot_seq_falls_back() {
    let mut asm = ExtendedAssembler::default();
    let now = Instant::now();
    for d in [
        &b"6,5000,900000000,-;reboot: Restarting system\n"[..],
        b"5,0,0,-;Linux version 6.8.0 (gcc) #1 SMP\n",
        b"6,1,12,-;Command line: console=ttyS0 netconsole=+@/,@10.0.2.2/\n",
        b"6,1,12,-,ncfrag=0/3;abc",
    ] {
        asm.push(&parse_extended(d).unwrap(), now).unwrap();
    }
    let seqs: Vec<u64> = all_records(&mut asm).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [5000, 0, 1, 1]);
}

#[test]
fn plain_split_mid_line() {
    let mut j = PlainJoiner::default();
    let t0 = Instant::now();
    j.push(b"[    0.000000] Linux version 6.8", t0);
    assert!(j.poll_line().is_none());
    assert_eq!(j.held_bytes(), 32);
    assert_eq!(j.poll_timeout(), Some(t0 + DEFAULT_LINE_TIMEOUT));
    j.push(
        b".0\r\n[    0.000001] Command line: x\nKernel panic - not",
        t0,
    );
    let lines: Vec<_> = j.drain().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].text, b"[    0.000000] Linux version 6.8.0\r");
    assert_eq!(lines[1].text, b"[    0.000001] Command line: x");
    assert!(lines.iter().all(|l| !l.partial));
    assert_eq!(j.poll_timeout(), Some(t0 + DEFAULT_LINE_TIMEOUT));
    // The machine died: the held tail comes out on timeout, flagged partial.
    let t1 = t0 + DEFAULT_LINE_TIMEOUT;
    assert!(!j.handle_timeout(t1 - Duration::from_millis(1)));
    assert!(j.handle_timeout(t1));
    let l = j.poll_line().unwrap();
    assert_eq!(
        (l.text.as_slice(), l.partial),
        (&b"Kernel panic - not"[..], true)
    );
    assert_eq!((j.held_bytes(), j.poll_timeout()), (0, None));
    assert!(!j.flush());
    // Empty lines are kept.
    j.push(b"\n\nx\n", t1);
    let texts: Vec<_> = j.drain().map(|l| l.text).collect();
    assert_eq!(texts, [b"".to_vec(), b"".to_vec(), b"x".to_vec()]);
}

#[test]
fn plain_bound_one_mib_without_newline() {
    let cfg = PlainConfig::default();
    let mut j = PlainJoiner::new(cfg);
    let now = Instant::now();
    let chunk = vec![b'a'; 1000];
    let mut out = Vec::new();
    for _ in 0..1049 {
        j.push(&chunk, now);
        assert!(j.held_bytes() <= cfg.max_line_bytes);
        out.extend(j.drain());
    }
    j.push(b"aaaaaaaaaaaaaaaaaaaaaaaa\nnext", now);
    out.extend(j.drain());
    let total: usize = out.iter().map(|l| l.text.len()).sum();
    assert_eq!(total, 1049 * 1000 + 24);
    assert!(out[..out.len() - 1]
        .iter()
        .all(|l| l.partial && l.text.len() == cfg.max_line_bytes));
    assert!(!out.last().unwrap().partial);
    assert_eq!(j.held_bytes(), 4);
    // A line of exactly the bound is complete, not partial.
    let mut j = PlainJoiner::new(PlainConfig {
        max_line_bytes: 4,
        ..cfg
    });
    j.push(b"abcd\nabcde\n", now);
    let got: Vec<_> = j.drain().map(|l| (l.text, l.partial)).collect();
    assert_eq!(
        got,
        [
            (b"abcd".to_vec(), false),
            (b"abcd".to_vec(), true),
            (b"e".to_vec(), false)
        ]
    );
}

#[test]
fn classify_datagrams() {
    assert_eq!(classify(STARTED), Kind::Extended);
    assert_eq!(
        classify(b"6,416,1758426,-,ncfrag=16/31; the 2nd chunk."),
        Kind::Extended
    );
    assert_eq!(classify(b"[   12.345678] eth0: link up\n"), Kind::Text);
    assert_eq!(classify(b"12,3,4 apples;\n"), Kind::Text);
    assert_eq!(classify(b"caf\xc3\xa9 \xe2\x9c\x93\r\n\tok"), Kind::Text);
    assert_eq!(classify(b"\n"), Kind::Text);
    assert_eq!(classify(b""), Kind::Garbage(GarbageReason::Empty));
    assert_eq!(classify(b"a\0b"), Kind::Garbage(GarbageReason::Binary));
    assert_eq!(
        classify(b"\x1b[31mred"),
        Kind::Garbage(GarbageReason::Binary)
    );
    assert_eq!(
        classify(b"x\xc2\x85y"),
        Kind::Garbage(GarbageReason::Binary)
    );
    assert_eq!(
        classify(b"caf\xe9 au lait"),
        Kind::Garbage(GarbageReason::NotUtf8)
    );
    assert_eq!(classify(b"\x80"), Kind::Garbage(GarbageReason::NotUtf8));
    assert_eq!(classify(b"\xff\xfe"), Kind::Garbage(GarbageReason::NotUtf8));
    assert_eq!(GarbageReason::NotUtf8.to_string(), "not_utf8");
    // Plain netconsole cuts at 1000 bytes, possibly inside a character.
    let line = "é".repeat(700);
    let (a, b) = line.as_bytes().split_at(999);
    assert_eq!((classify(a), classify(b)), (Kind::Text, Kind::Text));
    // Random-looking binary.
    let junk: Vec<u8> = (0u32..512)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert!(matches!(classify(&junk), Kind::Garbage(_)));
    // 1 MiB of text without a newline is still text.
    assert_eq!(classify(&vec![b'z'; 1 << 20]), Kind::Text);
}

/// Datagrams of one fixture file: one per line, hex, optionally preceded by
/// `<source>` and whitespace (as `lab/udp_capture.py` writes them).
fn read_fixture(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut tokens: Vec<&str> = line.split_whitespace().collect();
        let hex = tokens.pop().unwrap();
        let source = tokens.join(" ");
        let bytes = hex
            .as_bytes()
            .chunks(2)
            .map(|c| {
                let c = std::str::from_utf8(c).ok().filter(|c| c.len() == 2)?;
                u8::from_str_radix(c, 16).ok()
            })
            .collect::<Option<Vec<u8>>>()
            .unwrap_or_else(|| panic!("{}:{}: bad hex", path.display(), n + 1));
        out.push((source, bytes));
    }
    out
}

/// `(n, of)` from the first `ncu-marker NNNN of MMMM` in `text`.
fn marker(text: &[u8]) -> Option<(u32, u32)> {
    let at = text.windows(11).position(|w| w == b"ncu-marker ")?;
    let s = std::str::from_utf8(text.get(at + 11..at + 23)?).ok()?;
    let (n, of) = s.split_once(" of ")?;
    Some((n.parse().ok()?, of.parse().ok()?))
}

fn check_markers(name: &str, texts: &[&[u8]]) -> usize {
    let marks: Vec<(u32, u32)> = texts.iter().filter_map(|t| marker(t)).collect();
    for w in marks.windows(2) {
        assert!(w[0].0 < w[1].0, "{name}: markers out of order: {marks:?}");
    }
    assert!(
        marks.iter().all(|&(n, of)| n >= 1 && n <= of),
        "{name}: {marks:?}"
    );
    marks.len()
}

/// Real captures in `proto/tests/fixtures/netconsole/*.hex` (or the directory
/// in `NCU_NETCONSOLE_FIXTURES`); a file holding any extended datagram, or
/// named `*ext*`, must be extended throughout.
#[test]
fn captured_fixtures() {
    let dir = std::env::var_os("NCU_NETCONSOLE_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/netconsole")
        });
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "hex"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    println!("{} fixture file(s) in {}", files.len(), dir.display());
    let t0 = Instant::now();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let datagrams = read_fixture(path);
        let extended = name.to_ascii_lowercase().contains("ext")
            || datagrams.iter().any(|(_, d)| classify(d) == Kind::Extended);
        if extended {
            check_extended_fixture(&name, &datagrams, t0);
        } else {
            check_plain_fixture(&name, &datagrams, t0);
        }
    }
}

fn check_extended_fixture(name: &str, datagrams: &[(String, Vec<u8>)], t0: Instant) {
    let mut asms: std::collections::BTreeMap<&str, ExtendedAssembler> = Default::default();
    let mut recs = Vec::new();
    for (i, (src, d)) in datagrams.iter().enumerate() {
        let r = parse_extended(d).unwrap_or_else(|e| {
            panic!("{name}: datagram {i} {:?}: {e}", String::from_utf8_lossy(d))
        });
        assert_eq!(classify(d), Kind::Extended, "{name}: datagram {i}");
        assert!(r.level < 8);
        let asm = asms.entry(src).or_default();
        asm.push(&r, t0).unwrap();
        recs.extend(std::iter::from_fn(|| asm.poll_record()));
    }
    for asm in asms.values_mut() {
        assert_eq!(
            asm.flush(),
            0,
            "{name}: a fragmented record never completed"
        );
    }
    assert!(!recs.is_empty());
    for w in recs.windows(2) {
        assert!(
            w[0].seq < w[1].seq || w[1].text.starts_with(b"Linux version"),
            "{name}: seq {} then {} ({:?})",
            w[0].seq,
            w[1].seq,
            String::from_utf8_lossy(&w[1].text)
        );
    }
    let texts: Vec<&[u8]> = recs.iter().map(|r| r.text.as_slice()).collect();
    let markers = check_markers(name, &texts);
    for r in &recs {
        let plain = unescape(&r.text);
        if r.text.starts_with(b"ncu-long begin") {
            assert!(r.text.ends_with(b"end-long"), "{name}: long record cut");
            assert!(r.text.len() > 900);
        }
        if r.text.starts_with(b"ncu-escape") {
            for needle in [
                &b"[\t]"[..],
                b"[\x07]",
                b"[\x1b]",
                b"[\x7f]",
                b"[\xe9]",
                b"[\\]",
            ] {
                assert!(
                    plain.windows(needle.len()).any(|w| w == needle),
                    "{name}: {needle:?}"
                );
            }
        }
        if r.text.starts_with(b"ncu-multiline first") {
            assert!(plain.ends_with(b"first\nncu-multiline second\nncu-multiline third"));
        }
        if r.text.starts_with(b"ncu-facility user notice") {
            assert_eq!((r.facility, r.level), (1, 5));
        }
    }
    println!(
        "{name}: {} datagrams, {} records, {markers} markers",
        datagrams.len(),
        recs.len()
    );
}

fn check_plain_fixture(name: &str, datagrams: &[(String, Vec<u8>)], t0: Instant) {
    let mut joiners: std::collections::BTreeMap<&str, PlainJoiner> = Default::default();
    let mut lines = Vec::new();
    for (src, d) in datagrams {
        assert!(d.len() <= 1000, "{name}: plain datagram over 1000 bytes");
        let j = joiners.entry(src).or_default();
        j.push(d, t0);
        lines.extend(j.drain());
    }
    for j in joiners.values_mut() {
        j.flush();
        lines.extend(j.drain());
    }
    let complete: Vec<&[u8]> = lines
        .iter()
        .filter(|l| !l.partial)
        .map(|l| l.text.as_slice())
        .collect();
    let markers = check_markers(name, &complete);
    for l in &lines {
        if marker(&l.text).is_some() || l.text.windows(14).any(|w| w == b"ncu-long begin") {
            assert!(
                !l.partial,
                "{name}: {:?} partial",
                String::from_utf8_lossy(&l.text)
            );
        }
        if l.text.windows(14).any(|w| w == b"ncu-long begin") {
            assert!(l.text.ends_with(b"end-long") || l.text.ends_with(b"end-long\r"));
        }
    }
    println!(
        "{name}: {} datagrams, {} lines, {markers} markers",
        datagrams.len(),
        lines.len()
    );
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fuzz_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let seed = match std::env::var("NCU_FUZZ_SEED") {
        Ok(s) => s.parse().expect("NCU_FUZZ_SEED must be a u64"),
        Err(_) => std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish(),
    };
    println!("netconsole fuzz seed: {seed} (rerun with NCU_FUZZ_SEED={seed})");
    seed | 1
}

#[test]
fn randomized_no_panic() {
    let mut rng = XorShift(fuzz_seed());
    let mut msg = b"6,100,200,-;".to_vec();
    msg.extend((0..1800).map(|i| b' ' + (i % 90) as u8));
    msg.extend_from_slice(b"\n cpu=1\n msgid=5\n");
    let mut seeds: Vec<Vec<u8>> = vec![
        STARTED.to_vec(),
        b"6.4.0,6,444,501151268,-;netconsole: network logging started\n".to_vec(),
        b"6,416,1758426,-,ncfrag=0/31;the first chunk,".to_vec(),
        b"6,416,1758426,-,ncfrag=16/31; the 2nd chunk.".to_vec(),
        b"12,607,22085407756,c,caller=T1;msg\n cpu=42\n msgid=1\n".to_vec(),
        b"plain text line\nand a half".to_vec(),
    ];
    seeds.extend(kernel_fragments(&msg, 1000));
    let ecfg = ExtendedConfig {
        max_record_bytes: 4096,
        fragment_timeout: Duration::from_millis(50),
        max_pending: 3,
    };
    let pcfg = PlainConfig {
        max_line_bytes: 300,
        line_timeout: Duration::from_millis(30),
    };
    let mut asm = ExtendedAssembler::new(ecfg);
    let mut joiner = PlainJoiner::new(pcfg);
    let mut now = Instant::now();
    let digits = b"0123456789,;/-c+=\n ";
    let (mut rebuilt, mut given_up) = (0, 0);
    let mut injected = 0u64;
    for _ in 0..30_000 {
        let d: Vec<u8> = match rng.below(4) {
            0 => (0..rng.below(1200)).map(|_| rng.next() as u8).collect(),
            1 => (0..rng.below(80))
                .map(|_| digits[rng.below(digits.len())])
                .collect(),
            _ => {
                let mut d = seeds[rng.below(seeds.len())].clone();
                for _ in 0..rng.below(4) {
                    match rng.below(4) {
                        0 if !d.is_empty() => {
                            let i = rng.below(d.len());
                            d[i] = rng.next() as u8;
                        }
                        1 if !d.is_empty() => {
                            let i = rng.below(d.len());
                            d[i] = digits[rng.below(digits.len())];
                        }
                        2 => d.truncate(rng.below(d.len() + 1)),
                        _ => {
                            let i = rng.below(d.len() + 1);
                            d.insert(i, digits[rng.below(digits.len())]);
                        }
                    }
                }
                d
            }
        };
        now += Duration::from_millis(rng.below(20) as u64);
        // Now and then a whole fragmented record at once, so that every seed
        // reaches reassembly (two intact fragments rarely meet by chance). Each
        // gets its own sequence number: a mutated copy of the seed record may
        // already have completed under the seed's, and repeats of a completed
        // record are dropped as duplicates.
        if rng.below(64) == 0 {
            injected += 1;
            let mut whole = format!("6,{},200,-;", 1_000_000 + injected).into_bytes();
            whole.extend_from_slice(&msg[msg.iter().position(|&b| b == b';').unwrap_or(0) + 1..]);
            for f in kernel_fragments(&whole, 1000) {
                if let Ok(r) = parse_extended(&f) {
                    let _ = asm.push(&r, now);
                }
            }
        }
        let _ = classify(&d);
        if let Ok(r) = parse_extended(&d) {
            assert!(r.level < 8);
            if let Some(f) = r.frag {
                assert!(f.offset < f.total);
                assert!(u64::from(f.offset) + r.text.len() as u64 <= u64::from(f.total));
            }
            let _ = r.dict_pairs().count();
            let _ = unescape(r.text);
            let _ = asm.push(&r, now);
        }
        joiner.push(&d, now);
        if rng.below(8) == 0 {
            asm.handle_timeout(now);
            joiner.handle_timeout(now);
        }
        assert!(asm.held_bytes() <= ecfg.max_pending * ecfg.max_record_bytes);
        assert!(joiner.held_bytes() <= pcfg.max_line_bytes);
        while let Some(r) = asm.poll_record() {
            if r.missing > 0 {
                given_up += 1;
            } else if r.text.len() > 1000 {
                rebuilt += 1;
            }
            assert!(r.text.len() + r.dict.len() + r.missing <= ecfg.max_record_bytes.max(1200));
        }
        for l in joiner.drain() {
            assert!(l.text.len() <= pcfg.max_line_bytes);
        }
    }
    // The loop must have reached reassembly and give-up, not just rejection.
    assert!(
        rebuilt > 0 && given_up > 0,
        "rebuilt {rebuilt}, given up {given_up}"
    );
}
