//! The wire format against PROTOCOL.md's vectors, and every malformation.

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header() -> Header {
    Header {
        session: 0x0123_4567_89ab_cdef,
        seq: 1,
        sent_at_us: 1_700_000_000_000_000,
        counter: 1,
    }
}

// The vectors below are the ones printed in PROTOCOL.md.
const DATA_TWO_LINES: &str = concat!(
    "4e435501",
    "0200",
    "000b",
    "0123456789abcdef",
    "0000000000000001",
    "00060a24181e4000",
    "00000001",
    "8a34caff",
    "00000268690100036f6b21"
);

#[test]
fn data_vector_two_lines() {
    let mut payload = Vec::new();
    push_line_record(&mut payload, 0, b"hi");
    push_line_record(&mut payload, LINE_PARTIAL, b"ok!");
    let repr = Repr {
        header: header(),
        payload: Payload::Lines {
            count: 2,
            lines: Lines { rest: &payload },
        },
    };
    let mut out = Vec::new();
    repr.emit(&mut out);
    assert_eq!(hex(&out), DATA_TWO_LINES);
    let parsed = Repr::parse(&out).unwrap();
    assert_eq!(parsed, repr);
    let Payload::Lines { count, lines } = parsed.payload else {
        panic!("not lines")
    };
    assert_eq!(count, 2);
    let lines: Vec<_> = lines.collect();
    assert_eq!(lines[0].text, b"hi");
    assert!(!lines[0].is_partial());
    assert_eq!(lines[1].text, b"ok!");
    assert!(lines[1].is_partial());
}

const HELLO: &str = concat!(
    "4e435501",
    "0100",
    "0017",
    "0123456789abcdef",
    "0000000000000001",
    "00060a24181e4000",
    "00000000",
    "f230aa2b",
    "0000053900060a24181e4000037765620005737464696e"
);
const FRAGMENT: &str = concat!(
    "4e435501",
    "0202",
    "000c",
    "0123456789abcdef",
    "0000000000000007",
    "00060a24181e4000",
    "00000009",
    "0edca12c",
    "000000040000000a00616263"
);
const HEARTBEAT: &str = concat!(
    "4e435501",
    "0300",
    "0004",
    "0123456789abcdef",
    "000000000000002a",
    "00060a24181e4000",
    "0000000b",
    "8c1c663e",
    "03776562"
);
const END: &str = concat!(
    "4e435501",
    "0400",
    "0009",
    "0123456789abcdef",
    "000000000000002a",
    "00060a24181e4000",
    "0000000c",
    "d1cdce4e",
    "037765620200000003"
);

fn roundtrip(repr: &Repr<'_>, expected_hex: &str) {
    let mut out = Vec::new();
    repr.emit(&mut out);
    assert_eq!(hex(&out), expected_hex, "emit of {repr:?}");
    assert_eq!(&Repr::parse(&out).unwrap(), repr);
}

#[test]
fn vectors_of_every_kind() {
    let h = header();
    roundtrip(
        &Repr {
            header: Header { counter: 0, ..h },
            payload: Payload::Hello {
                name: "web",
                pid: 1337,
                started_at_us: 1_700_000_000_000_000,
                source: "stdin",
            },
        },
        HELLO,
    );
    roundtrip(
        &Repr {
            header: Header {
                seq: 7,
                counter: 9,
                ..h
            },
            payload: Payload::Fragment {
                offset: 4,
                total: 10,
                line_flags: 0,
                bytes: b"abc",
            },
        },
        FRAGMENT,
    );
    roundtrip(
        &Repr {
            header: Header {
                seq: 42,
                counter: 11,
                ..h
            },
            payload: Payload::Heartbeat { name: "web" },
        },
        HEARTBEAT,
    );
    roundtrip(
        &Repr {
            header: Header {
                seq: 42,
                counter: 12,
                ..h
            },
            payload: Payload::End {
                name: "web",
                reason: EndReason::Exit(3),
            },
        },
        END,
    );
}

fn vector_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn each_malformation_has_its_error() {
    let good = vector_bytes(DATA_TWO_LINES);
    assert!(Repr::parse(&good).is_ok());
    assert_eq!(Repr::parse(&[]).unwrap_err(), DecodeError::Truncated);
    assert_eq!(
        Repr::parse(&good[..20]).unwrap_err(),
        DecodeError::Truncated
    );
    assert_eq!(
        Repr::parse(&good[..good.len() - 1]).unwrap_err(),
        DecodeError::Truncated
    );
    let mut long = good.clone();
    long.push(0);
    assert_eq!(Repr::parse(&long).unwrap_err(), DecodeError::TrailingBytes);
    assert_eq!(
        Repr::parse(b"hello world, not ncu at all").unwrap_err(),
        DecodeError::BadMagic
    );
    let mut v = good.clone();
    v[3] = 2;
    assert_eq!(Repr::parse(&v).unwrap_err(), DecodeError::UnknownVersion);
    let mut v = good.clone();
    v[HEADER_LEN + 4] ^= 0x01;
    assert_eq!(Repr::parse(&v).unwrap_err(), DecodeError::BadChecksum);

    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.clone();
        f(&mut v);
        finish_datagram(&mut v);
        Repr::parse(&v).unwrap_err()
    };
    assert_eq!(with(&|v| v[4] = 9), DecodeError::UnknownKind);
    assert_eq!(with(&|v| v[5] = 0x80), DecodeError::BadFlags);
    assert_eq!(with(&|v| v[5] = FLAG_SEALED), DecodeError::Sealed);
    assert_eq!(with(&|v| v[HEADER_LEN + 2] = 200), DecodeError::BadLength);
    assert_eq!(with(&|v| v[HEADER_LEN] = 0x40), DecodeError::BadFlags);
    assert_eq!(with(&|v| v.truncate(HEADER_LEN)), DecodeError::EmptyData);
    let frag = vector_bytes(FRAGMENT);
    let mut v = frag.clone();
    v[HEADER_LEN + 3] = 8; // offset 8 + 3 bytes > total 10
    finish_datagram(&mut v);
    assert_eq!(
        Repr::parse(&v).unwrap_err(),
        DecodeError::FragmentOutOfRange
    );
    let mut v = vector_bytes(HEARTBEAT);
    v[HEADER_LEN + 1] = 0xff; // name not UTF-8
    finish_datagram(&mut v);
    assert_eq!(Repr::parse(&v).unwrap_err(), DecodeError::BadText);
    let mut v = vector_bytes(END);
    v[HEADER_LEN + 4] = 9;
    finish_datagram(&mut v);
    assert_eq!(Repr::parse(&v).unwrap_err(), DecodeError::BadEndReason);
}

#[test]
fn padding_is_last_zero_and_not_a_line() {
    let build = |records: &[(u8, &[u8])]| {
        let mut v = Vec::new();
        write_header(&mut v, Kind::Data, 0, 0, &header());
        for (flags, text) in records {
            push_line_record(&mut v, *flags, text);
        }
        finish_datagram(&mut v);
        v
    };
    let ok = build(&[(0, b"a"), (LINE_PADDING, &[0, 0, 0])]);
    let Payload::Lines { count, lines } = Repr::parse(&ok).unwrap().payload else {
        panic!()
    };
    assert_eq!((count, lines.count()), (1, 1));
    assert_eq!(
        Repr::parse(&build(&[(LINE_PADDING, &[0])])).unwrap_err(),
        DecodeError::EmptyData
    );
    assert_eq!(
        Repr::parse(&build(&[(LINE_PADDING, &[]), (0, b"a")])).unwrap_err(),
        DecodeError::BadLength
    );
    assert_eq!(
        Repr::parse(&build(&[(0, b"a"), (LINE_PADDING, &[1])])).unwrap_err(),
        DecodeError::BadLength
    );
    assert_eq!(
        Repr::parse(&build(&[(0, b"a"), (LINE_PADDING | 1, &[])])).unwrap_err(),
        DecodeError::BadFlags
    );
}

const KMSG: &str = concat!(
    "4e435501",
    "0200",
    "0060",
    "0123456789abcdef",
    "0000000000000005",
    "00060a24181e4000",
    "00000003",
    "a6d6a2ae",
    "04005d",
    "362c313230342c353134303930302c2d2c6e63755f6f7665727772697474656e3d313130302d31313939",
    "2c6e63755f66696c74657265643d333b75736220312d313a206e6577206465766963650a2053554253",
    "595354454d3d7573620a"
);

const COMPANION: &str = concat!(
    "4e435501",
    "0700",
    "0007",
    "0123456789abcdef",
    "000000000000002a",
    "00060a24181e4000",
    "0000000d",
    "cb906828",
    "040a000007",
    "1a09"
);

/// PROTOCOL.md §16's COMPANION vector: the kernel's netconsole sends from
/// 10.0.0.7:6665.
#[test]
fn companion_vector() {
    let repr = Repr {
        header: Header {
            seq: 42,
            counter: 13,
            ..header()
        },
        payload: Payload::Companion {
            source: "10.0.0.7:6665".parse().unwrap(),
        },
    };
    let mut out = Vec::new();
    repr.emit(&mut out);
    assert_eq!(hex(&out), COMPANION);
    assert_eq!(Repr::parse(&out).unwrap(), repr);
    let v6 = Repr {
        payload: Payload::Companion {
            source: "[fd00::7]:6665".parse().unwrap(),
        },
        ..repr
    };
    let mut out = Vec::new();
    v6.emit(&mut out);
    assert_eq!(Repr::parse(&out).unwrap(), v6);
    let mut bad = vector_bytes(COMPANION);
    bad[HEADER_LEN] = 5; // no such family
    finish_datagram(&mut bad);
    assert_eq!(Repr::parse(&bad).unwrap_err(), DecodeError::BadLength);
}

/// PROTOCOL.md §16's vector: one kernel record as `ncu-send --kmsg` sends it.
#[test]
fn kmsg_vector() {
    let record: &[u8] = b"6,1204,5140900,-,ncu_overwritten=1100-1199,ncu_filtered=3;\
                          usb 1-1: new device\n SUBSYSTEM=usb\n";
    let mut payload = Vec::new();
    push_line_record(&mut payload, LINE_KMSG, record);
    let repr = Repr {
        header: Header {
            seq: 5,
            counter: 3,
            ..header()
        },
        payload: Payload::Lines {
            count: 1,
            lines: Lines { rest: &payload },
        },
    };
    let mut out = Vec::new();
    repr.emit(&mut out);
    assert_eq!(hex(&out), KMSG);
    let Payload::Lines { mut lines, .. } = Repr::parse(&out).unwrap().payload else {
        panic!("not lines")
    };
    let line = lines.next().unwrap();
    assert_eq!((line.flags, line.text), (LINE_KMSG, record));
    let parsed = crate::kmsg::parse_line(line.text).unwrap();
    assert_eq!(
        (parsed.level, parsed.seq, parsed.ts_usec),
        (6, 1204, 5_140_900)
    );
    assert_eq!(parsed.text, b"usb 1-1: new device");
    let skipped = crate::kmsg::Skipped::parse(line.text);
    assert_eq!(
        (skipped.overwritten(), skipped.filtered),
        (&[(1100, 1199)][..], 3)
    );
}

/// Every vector PROTOCOL.md prints.
const VECTORS: [&str; 7] = [
    DATA_TWO_LINES,
    HELLO,
    FRAGMENT,
    HEARTBEAT,
    END,
    KMSG,
    COMPANION,
];

#[test]
fn every_single_bit_flip_is_caught() {
    for vector in VECTORS {
        let good = vector_bytes(vector);
        for bit in 0..good.len() * 8 {
            let mut v = good.clone();
            v[bit / 8] ^= 1 << (bit % 8);
            assert!(Repr::parse(&v).is_err(), "bit {bit} of {vector}");
        }
    }
}

#[test]
fn every_truncation_is_caught() {
    for vector in VECTORS {
        let good = vector_bytes(vector);
        for len in 0..good.len() {
            assert!(Repr::parse(&good[..len]).is_err());
        }
    }
}
