//! ISO 15022 codec: every public sample with its expected outcome, typed views against the
//! settlement questions, builders, the CLI, and property tests.
//!
//! Method: data-driven (matklad): the table below lists each file of `tests/data/samples/` with
//! the options it is read with and the exact errors (line, column, code) expected; each is also
//! read with all-LF and all-CRLF line endings, and every syntactically sound sample must
//! round-trip byte-identically through the writer after line-ending normalisation.

#![cfg(test)]

use ccass::iso15022::build::{
    self, Envelope, HoldingSpec, ReasonSpec, SettlementInstructionSpec, StatementSpec,
    StatusAdviceSpec, StatusSpec, StatusTransactionSpec, TransactionSpec,
};
use ccass::iso15022::cli::{FinCommand, run};
use ccass::iso15022::fields::{
    Amount, Continuation, Function, FunctionCode, Isin, Page, PartyId, Quantity, QuantityKind,
    Subfunction, isin_check_digit,
};
use ccass::iso15022::views::{
    Linkage, Party, PaymentType, SettlementDirection, SettlementInstruction, Statement,
    StatusAdvice, StatusCode, StatusQualifier,
};
use ccass::iso15022::{
    self, AckStatus, Code, Disposition, MessageType, NakCode, ParseOptions, ReasonCode, Severity,
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use time::macros::{date, datetime};

const SAMPLES: &str = "tests/data/samples";

#[derive(Debug, Clone, Copy)]
enum Read {
    /// Full FIN message: blocks 1, 2 and 4 required.
    Fin,
    /// Block-4-only input accepted, with this message type.
    Text(Option<u16>),
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// No error and no warning.
    Valid,
    /// No error; exactly these warning codes.
    Warnings(&'static [&'static str]),
    /// Exactly these errors (line, column, code), in order.
    Invalid(&'static [(u32, u32, &'static str)]),
    /// At least these errors (for the 40 KB statement whose PENA lines repeat one problem).
    InvalidIncluding(&'static [(u32, u32, &'static str)]),
}

use Outcome::{Invalid, InvalidIncluding, Valid, Warnings};
use Read::{Fin, Text};

/// Every sample, how it is read, and what must come out. SOURCES.md says where each is from.
/// Decisions: fake ISINs (wrong check digit) are business rejections (E311 → MT548 REJT/DSEC)
/// of otherwise network-valid messages; `11111111` (mt543-prowide-3) is a valid calendar date
/// (1111-11-11) and is accepted here; `:90B::DEAL//ACTU/37,` (Midclear) lacks its currency.
const TABLE: &[(&str, Read, Outcome)] = &[
    (
        "blk4-prowide-1.fin",
        Text(None),
        Invalid(&[(4, 22, "E311"), (6, 1, "E204"), (11, 1, "E202")]),
    ),
    (
        "blk4-prowide-2.fin",
        Text(None),
        Invalid(&[
            (1, 1, "E102"),
            (5, 1, "E203"),
            (5, 8, "E206"),
            (6, 1, "E204"),
            (7, 1, "E204"),
            (7, 1, "E309"),
            (8, 2, "E103"),
        ]),
    ),
    (
        "blk4-prowide-3.fin",
        Text(None),
        Invalid(&[
            (1, 1, "E102"),
            (5, 1, "E203"),
            (5, 8, "E206"),
            (6, 1, "E204"),
            (7, 1, "E204"),
            (7, 1, "E309"),
            (8, 2, "E103"),
        ]),
    ),
    ("mt535-prowide-1.fin", Fin, Valid),
    ("mt535-prowide-2.fin", Fin, Invalid(&[(47, 3, "E103")])),
    (
        "mt535-prowide-3.fin",
        Fin,
        Invalid(&[
            (2, 1, "E202"),
            (2, 1, "E304"),
            (2, 1, "E304"),
            (2, 1, "E304"),
            (2, 1, "E304"),
            (2, 1, "E304"),
            (2, 1, "E304"),
            (2, 1, "E304"),
            (2, 1, "E304"),
            (2, 1, "E304"),
            (2, 1, "E304"),
            (2, 1, "E304"),
        ]),
    ),
    (
        "mt535-prowide-4.fin",
        Fin,
        Invalid(&[
            (16, 1, "E202"),
            (18, 14, "E206"),
            (31, 1, "E202"),
            (31, 1, "E304"),
            (31, 1, "E304"),
        ]),
    ),
    ("mt535-prowide-ack-1.fin", Fin, Valid),
    (
        "mt535-pwintegr-1.fin",
        Fin,
        Invalid(&[
            (16, 1, "E202"),
            (19, 5, "E206"),
            (31, 1, "E202"),
            (31, 1, "E304"),
            (31, 1, "E304"),
        ]),
    ),
    ("mt535-pwintegr-2.fin", Fin, Valid),
    ("mt536-eurex-1.fin", Text(Some(536)), Valid),
    (
        "mt537-pwexamples-1.fin",
        Fin,
        InvalidIncluding(&[(2, 1, "E207"), (41, 22, "E311"), (2437, 1, "E303")]),
    ),
    ("mt540-midclear-1.fin", Text(Some(540)), Valid),
    ("mt540-midclear-2.fin", Text(Some(540)), Valid),
    ("mt540-prowide-1.fin", Fin, Invalid(&[(13, 22, "E311")])),
    ("mt540-prowide-2.fin", Fin, Invalid(&[(12, 22, "E311")])),
    ("mt540-pwintegr-1.fin", Fin, Valid),
    (
        "mt541-prowide-1.fin",
        Fin,
        Invalid(&[(11, 22, "E311"), (14, 1, "E203")]),
    ),
    ("mt541-prowide-2.fin", Fin, Invalid(&[(11, 22, "E311")])),
    ("mt541-prowide-3.fin", Fin, Invalid(&[(11, 22, "E311")])),
    ("mt541-prowide-4.fin", Fin, Invalid(&[(11, 22, "E311")])),
    (
        "mt541-prowide-6.fin",
        Fin,
        Invalid(&[
            (2, 1, "E202"),
            (2, 1, "E304"),
            (2, 1, "E301"),
            (2, 1, "E301"),
            (2, 1, "E301"),
            (3, 1, "E309"),
        ]),
    ),
    ("mt541-prowide-7.fin", Fin, Valid),
    (
        "mt542-midclear-1.fin",
        Text(Some(542)),
        Invalid(&[(9, 1, "E309")]),
    ),
    (
        "mt543-midclear-1.fin",
        Text(Some(543)),
        Invalid(&[(9, 1, "E309")]),
    ),
    ("mt543-prowide-1.fin", Fin, Invalid(&[(11, 22, "E311")])),
    ("mt543-prowide-2.fin", Fin, Invalid(&[(11, 22, "E311")])),
    ("mt543-prowide-3.fin", Fin, Invalid(&[(11, 22, "E311")])),
    ("mt543-prowide-5.fin", Fin, Invalid(&[(11, 22, "E311")])),
    (
        "mt544-kdd-1.fin",
        Text(Some(544)),
        Invalid(&[(12, 22, "E311")]),
    ),
    (
        "mt546-kdd-1.fin",
        Text(Some(546)),
        Invalid(&[(12, 22, "E311")]),
    ),
    ("mt547-clearstream-1.fin", Text(Some(547)), Valid),
    // Lenient: `:25D::SETT/PEND` is a warning; the bogus `28E::REAS/PAGE/...` is rejected.
    (
        "mt548-hkex-1.fin",
        Text(Some(548)),
        Invalid(&[(13, 1, "E309"), (13, 1, "E305")]),
    ),
    ("mt548-pwexamples-1.fin", Fin, Invalid(&[(14, 11, "E311")])),
    (
        "mt564-npmswiftparser-1.fin",
        Fin,
        Invalid(&[(12, 22, "E311")]),
    ),
    ("mt564-prowide-1.fin", Fin, Warnings(&["W502"])),
    ("mt564-prowide-2.fin", Fin, Warnings(&["W502"])),
    ("mt564-prowide-3.fin", Fin, Warnings(&["W502"])),
    ("mt564-prowide-4.fin", Fin, Invalid(&[(12, 22, "E311")])),
    ("mt564-prowide-5.fin", Fin, Warnings(&["W502"])),
    ("mt564-prowide-6.fin", Fin, Invalid(&[(22, 22, "E311")])),
    ("mt564-prowide-ack-1.fin", Fin, Warnings(&["W502"])),
    ("mt564-pwintegr-1.fin", Fin, Invalid(&[(11, 22, "E311")])),
    (
        "mt564-pwintegr-2.fin",
        Fin,
        Invalid(&[
            (8, 1, "E310"),
            (15, 22, "E311"),
            (26, 11, "E311"),
            (42, 11, "E311"),
            (61, 11, "E311"),
        ]),
    ),
    ("mt566-rosswift-1.fin", Text(Some(566)), Warnings(&["W502"])),
];

fn options(read: Read) -> ParseOptions {
    match read {
        Fin => ParseOptions::fin(),
        Text(message_type) => ParseOptions::text_only(message_type.map(MessageType)),
    }
}

/// The sample's text, leaked so borrowed messages can outlive the statement (tests only).
fn sample(name: &str) -> &'static str {
    Box::leak(
        std::fs::read_to_string(format!("{SAMPLES}/{name}"))
            .unwrap()
            .into_boxed_str(),
    )
}

fn to_lf(input: &str) -> String {
    input.replace("\r\n", "\n")
}

type Found = Vec<(u32, u32, String)>;

fn errors_and_warnings(input: &str, read: Read) -> (Found, Vec<String>) {
    let report = iso15022::check(input, options(read));
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for problem in &report.problems {
        match problem.severity() {
            Severity::Error => {
                errors.push((problem.line, problem.column, problem.code.to_string()))
            }
            Severity::Warning => warnings.push(problem.code.to_string()),
        }
    }
    (errors, warnings)
}

#[test]
fn every_sample_is_listed_with_its_outcome() {
    // Goal: no sample escapes the table. Method: compare the directory listing to the table.
    let mut files: Vec<String> = std::fs::read_dir(SAMPLES)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".fin"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = TABLE
        .iter()
        .map(|(name, _, _)| (*name).to_owned())
        .collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn samples_have_their_expected_outcome_in_every_line_ending() {
    // Goal: each sample is accepted or rejected with the right positions and codes, whatever its
    // line endings. Method: check the original, all-LF and all-CRLF forms against the table.
    for (name, read, outcome) in TABLE {
        let original = sample(name);
        let lf = to_lf(original);
        let crlf = iso15022::normalise_line_endings(&lf);
        for (form, input) in [
            ("original", original),
            ("lf", lf.as_str()),
            ("crlf", crlf.as_str()),
        ] {
            let (errors, warnings) = errors_and_warnings(input, *read);
            let expected = |list: &[(u32, u32, &str)]| -> Found {
                list.iter()
                    .map(|(line, column, code)| (*line, *column, (*code).to_owned()))
                    .collect()
            };
            match outcome {
                Valid => {
                    assert_eq!(errors, Found::new(), "{name} ({form})");
                    assert_eq!(warnings, Vec::<String>::new(), "{name} ({form})");
                }
                Warnings(codes) => {
                    assert_eq!(errors, Found::new(), "{name} ({form})");
                    assert_eq!(warnings, codes.to_vec(), "{name} ({form})");
                }
                Invalid(list) => assert_eq!(errors, expected(list), "{name} ({form})"),
                InvalidIncluding(list) => {
                    for item in expected(list) {
                        assert!(errors.contains(&item), "{name} ({form}): {item:?} missing");
                    }
                }
            }
        }
    }
}

#[test]
fn sound_samples_round_trip_byte_identically() {
    // Goal: fmt is the identity on canonical input. Method: every sample without syntax errors
    // is normalised to CRLF, parsed and written back.
    let mut checked = 0;
    for (name, read, _) in TABLE {
        let canonical = iso15022::normalise_line_endings(sample(name));
        let Ok(message) = iso15022::parse(&canonical, options(*read)) else {
            continue;
        };
        assert_eq!(iso15022::to_canonical(&message), canonical, "{name}");
        checked += 1;
    }
    assert!(checked >= 35, "only {checked} samples round-tripped");
}

#[test]
fn problems_map_to_nak_codes_or_reason_codes() {
    // Goal: every problem tells the gateway what to answer. Method: spot-check the mapping.
    let report = iso15022::check(sample("mt548-pwexamples-1.fin"), ParseOptions::fin());
    let isin = report
        .problems
        .iter()
        .find(|problem| problem.code == Code::InvalidIsin)
        .unwrap();
    assert_eq!(isin.disposition, Disposition::Reject(ReasonCode::Dsec));
    assert_eq!(isin.path, "SETTRAN/35B");
    let report = iso15022::check(sample("mt564-pwintegr-2.fin"), ParseOptions::fin());
    let date = report
        .problems
        .iter()
        .find(|problem| problem.code == Code::InvalidDate)
        .unwrap();
    assert_eq!(date.disposition, Disposition::Nak(NakCode::T50));
    assert_eq!(date.path, "GENL/98A::PREP");
    let report = iso15022::check(sample("mt535-prowide-4.fin"), ParseOptions::fin());
    let charset = report
        .problems
        .iter()
        .find(|problem| problem.code == Code::Charset)
        .unwrap();
    assert_eq!(charset.disposition, Disposition::Nak(NakCode::T32));
    let rejection =
        iso15022::parse(sample("mt541-prowide-1.fin"), ParseOptions::fin()).unwrap_err();
    let first = rejection.first_error().unwrap();
    assert_eq!((first.line, first.code), (14, Code::SequenceMismatch));
    assert_eq!(first.disposition, Disposition::Nak(NakCode::T56));
}

#[test]
fn rejections_answer_with_a_nak_before_a_business_reason() {
    // Goal: the gateway gets one answer per rejected message. Method: a syntax error wins over
    // a bad ISIN; a bad ISIN alone is a REJT with DSEC.
    let both = iso15022::check(sample("mt541-prowide-1.fin"), ParseOptions::fin())
        .into_result()
        .unwrap_err();
    assert_eq!(both.disposition(), Some(Disposition::Nak(NakCode::T56)));
    assert_eq!(both.reasons(), [ReasonCode::Dsec]);
    let business = iso15022::check(sample("mt541-prowide-2.fin"), ParseOptions::fin())
        .into_result()
        .unwrap_err();
    assert_eq!(
        business.disposition(),
        Some(Disposition::Reject(ReasonCode::Dsec))
    );
}

#[test]
fn lenient_hkex_status_reads_as_double_slash() {
    // Goal: the CCASS one-slash form is accepted and means what it says.
    let input = sample("mt548-hkex-1.fin");
    let message = iso15022::parse(input, ParseOptions::text_only(Some(MessageType(548)))).unwrap();
    let advice = StatusAdvice::from_message(&message).unwrap();
    assert_eq!(advice.reference, "PARTX12345");
    assert_eq!(advice.function.code, FunctionCode::Inst);
    assert_eq!(advice.related_reference(), Some("D20123456"));
    let settlement = advice.status(StatusQualifier::Sett).unwrap();
    assert_eq!(settlement.code, "PEND");
    assert_eq!(settlement.status, StatusCode::Pend);
    assert_eq!(settlement.reasons[0].qualifier, "DEND");
    assert_eq!(settlement.reasons[0].code, Some(ReasonCode::Narr));
    assert!(advice.transaction.is_none());
}

#[test]
fn service_messages_keep_their_status() {
    // Goal: an ACK/NAK in front of a message is parsed with its status and the message after.
    let nak = sample("mt535-prowide-ack-1.fin");
    let message = iso15022::parse(nak, ParseOptions::fin()).unwrap();
    let service = message.service.as_ref().unwrap();
    assert_eq!(service.status, AckStatus::Nak { code: "E66013" });
    assert_eq!(service.basic_header.service_id, "21");
    assert_eq!(message.message_type, Some(MessageType(535)));
    let ack = sample("mt564-prowide-ack-1.fin");
    let message = iso15022::parse(ack, ParseOptions::fin()).unwrap();
    assert_eq!(message.service.as_ref().unwrap().status, AckStatus::Ack);
    assert_eq!(message.user_header.as_ref().unwrap()[0].tag, "108");
}

#[test]
fn envelope_parts_are_typed() {
    // Goal: blocks 1, 2 (input, output, minimal), 3, 5 and S are read into their parts.
    let output = iso15022::parse(sample("mt540-prowide-1.fin"), ParseOptions::fin()).unwrap();
    let basic = output.basic_header.unwrap();
    assert_eq!(basic.logical_terminal, "AAAAFRPPAGSS");
    assert_eq!((basic.session, basic.sequence), ("0000", "000000"));
    match output.application_header.unwrap().direction {
        iso15022::Direction::Output {
            input_time,
            output_date,
            priority,
            ..
        } => assert_eq!(
            (input_time, output_date, priority),
            ("1445", "211216", Some("N"))
        ),
        other => panic!("expected output header, got {other:?}"),
    }
    let minimal = iso15022::parse(sample("mt564-prowide-1.fin"), ParseOptions::fin()).unwrap();
    match minimal.application_header.unwrap().direction {
        iso15022::Direction::Input {
            receiver, priority, ..
        } => assert_eq!((receiver, priority), (None, Some("N"))),
        other => panic!("expected input header, got {other:?}"),
    }
    let trailers = iso15022::parse(sample("mt535-prowide-1.fin"), ParseOptions::fin()).unwrap();
    let trailer: Vec<_> = trailers
        .trailer
        .unwrap()
        .iter()
        .map(|item| (item.tag, item.value))
        .collect();
    assert_eq!(trailer, [("MAC", "8A1FADA1"), ("CHK", "B018C2CA74CD")]);
    assert_eq!(
        trailers.local_trailer.unwrap()[0].value,
        "I20070328.386482886.out/1/1"
    );
    let empty =
        "{1:F01BANKBEBBAXXX0000000000}{2:I540BANKDEFFXXXXN}{3:{113:}}{4:\r\n:16R:GENL\r\n-}";
    let (message, _) = iso15022::parse_with_problems(empty, ParseOptions::fin());
    assert_eq!(message.user_header.unwrap()[0].value, "");
    let refused = iso15022::parse(sample("mt540-midclear-1.fin"), ParseOptions::fin()).unwrap_err();
    assert_eq!(refused.first_error().unwrap().code, Code::HeaderMissing);
}

#[test]
fn sequences_are_addressed_by_path_and_continuations_kept() {
    // Goal: STAT/REAS at several depths and continuation lines are reachable as written.
    let input = sample("mt547-clearstream-1.fin");
    let message = iso15022::parse(input, ParseOptions::text_only(Some(MessageType(547)))).unwrap();
    let root = message.text.root();
    let trade = root.sequence("TRADDET").unwrap();
    let instrument = trade.field_by_number("35").unwrap();
    assert_eq!(
        instrument.lines().collect::<Vec<_>>(),
        ["ISIN DE0001141828", "BUNDESOBL.V.20/25 S.182", "10OKT"]
    );
    let links: Vec<_> = root.sequence("GENL").unwrap().sequences("LINK").collect();
    assert_eq!(links.len(), 5);
    assert_eq!(links[3].path(), "GENL/LINK[4]");
    let thirteen = links[0].field("13", "LINK").unwrap().generic().unwrap();
    assert_eq!(
        (thirteen.scheme, thirteen.value),
        (Some("DAKV"), "TESTBANKXXX")
    );
    let declaration = root
        .sequence("SETDET")
        .unwrap()
        .sequences("SETPRTY")
        .find_map(|party| party.field("70", "DECL"))
        .unwrap();
    assert_eq!(
        declaration.generic().unwrap().value,
        "/ISST N/STBL N/ISTR TRAD"
    );
}

struct ViewCase {
    file: &'static str,
    read: Read,
    reference: &'static str,
    isin: &'static str,
    quantity: (QuantityKind, &'static str),
    settlement_date: time::Date,
    trade_date: Option<time::Date>,
    counterparty: (&'static str, &'static str),
    account: &'static str,
    amount: Option<(&'static str, &'static str)>,
    link: Option<(&'static str, &'static str)>,
}

type Outcomes = (
    &'static str,
    Option<(&'static str, &'static str)>,
    Option<(&'static str, &'static str)>,
);

const fn case(
    (file, read): (&'static str, Read),
    (reference, isin): (&'static str, &'static str),
    quantity: (QuantityKind, &'static str),
    (settlement_date, trade_date): (time::Date, Option<time::Date>),
    counterparty: (&'static str, &'static str),
    (account, amount, link): Outcomes,
) -> ViewCase {
    ViewCase {
        file,
        read,
        reference,
        isin,
        quantity,
        settlement_date,
        trade_date,
        counterparty,
        account,
        amount,
        link,
    }
}

fn party_text(id: PartyId<'_>) -> String {
    match id {
        PartyId::Bic(bic) => format!("P {bic}"),
        PartyId::NameAndAddress(name) => format!("Q {name}"),
        PartyId::Proprietary { scheme, id } => format!("R {scheme}/{id}"),
        PartyId::Country(country) => format!("C {country}"),
        PartyId::Alternate(value) => format!("S {value}"),
    }
}

use QuantityKind::{FaceAmount, Unit};

const VIEWS: &[ViewCase] = &[
    case(
        ("mt540-midclear-1.fin", Text(Some(540))),
        ("MESSAGE-REFERENC", "LB0000011215"),
        (Unit, "1"),
        (date!(2008 - 05 - 29), Some(date!(2008 - 05 - 26))),
        ("DEAG", "R MIDR/5678"),
        ("9100/1234/123/123456789", None, None),
    ),
    case(
        ("mt540-midclear-2.fin", Text(Some(540))),
        ("MESG-REF", "LB0000011215"),
        (Unit, "1"),
        (date!(2008 - 05 - 29), Some(date!(2008 - 05 - 26))),
        ("DEAG", "R MIDR/5678"),
        (
            "9100/1234/123/123456789",
            None,
            Some(("PREV", "MESSAGE-REFERENC")),
        ),
    ),
    case(
        ("mt540-prowide-1.fin", Fin),
        ("TFH5436259-999", "FR0099001N99"),
        (FaceAmount, "31000000"),
        (date!(2021 - 12 - 16), Some(date!(2021 - 12 - 16))),
        ("DEAG", "P CCCCBEBEECL"),
        ("0528808067001999", None, Some(("PREV", "TFH5436259-999"))),
    ),
    case(
        ("mt540-prowide-2.fin", Fin),
        ("GC899999", "AAA222341223"),
        (Unit, "1"),
        (date!(2017 - 07 - 29), None),
        ("DEAG", "Q Other party name and address"),
        ("AS11/123456", None, Some(("COMM", "CMID2233"))),
    ),
    case(
        ("mt540-pwintegr-1.fin", Fin),
        ("00000000000007", "IT0009999001"),
        (Unit, "100000"),
        (date!(2009 - 01 - 09), Some(date!(2009 - 01 - 09))),
        ("DEAG", "Q FOOEITM0"),
        ("AAA01", None, None),
    ),
    case(
        ("mt541-prowide-1.fin", Fin),
        ("2005080800000944", "FR1234567111"),
        (Unit, "1000"),
        (date!(2005 - 08 - 08), Some(date!(2005 - 08 - 03))),
        ("DEAG", "R FOOV/1234"),
        ("123456789", Some(("EUR", "123456.50")), None),
    ),
    case(
        ("mt541-prowide-2.fin", Fin),
        ("2002071500000614", "FR1234567890"),
        (Unit, "321"),
        (date!(2002 - 07 - 18), Some(date!(2002 - 07 - 13))),
        ("DEAG", "R SICV/4042"),
        ("123456789", Some(("EUR", "123456.78")), None),
    ),
    case(
        ("mt541-prowide-3.fin", Fin),
        ("2007071800000923", "FR1234567890"),
        (Unit, "222.22"),
        (date!(2007 - 07 - 19), Some(date!(2007 - 07 - 14))),
        ("DEAG", "R SICV/4321"),
        ("123456789", Some(("EUR", "123456.78")), None),
    ),
    case(
        ("mt541-prowide-4.fin", Fin),
        ("2001071800001228", "DE1234567890"),
        (Unit, "6666.66"),
        (date!(2001 - 07 - 15), Some(date!(2001 - 07 - 13))),
        ("DEAG", "R AAKV/9876"),
        ("123456789", Some(("EUR", "123456.78")), None),
    ),
    case(
        ("mt541-prowide-7.fin", Fin),
        ("2005070600000006", "GB0007192106"),
        (Unit, "5000"),
        (date!(2005 - 07 - 11), Some(date!(2005 - 07 - 06))),
        ("DEAG", "R CRST/382"),
        ("6990457647", Some(("GBP", "6958.31")), None),
    ),
    case(
        ("mt542-midclear-1.fin", Text(Some(542))),
        ("MESSAGE-REFERENC", "LB0000011215"),
        (Unit, "1"),
        (date!(2008 - 05 - 29), Some(date!(2008 - 05 - 26))),
        ("REAG", "R MIDR/5678"),
        ("9100/1234/123/123456789", None, None),
    ),
    case(
        ("mt543-midclear-1.fin", Text(Some(543))),
        ("MESSAGE-REFERENC", "LB0000011215"),
        (Unit, "1"),
        (date!(2008 - 05 - 29), Some(date!(2008 - 05 - 26))),
        ("REAG", "R MIDR/5678"),
        ("9100/1234/123/123456789", Some(("USD", "1")), None),
    ),
    case(
        ("mt543-prowide-1.fin", Fin),
        ("2008101900002890", "US1234567890"),
        (Unit, "123.45"),
        (date!(2008 - 10 - 19), Some(date!(2008 - 10 - 17))),
        ("REAG", "R DAKV/8888"),
        ("100948783600", Some(("EUR", "1234.56")), None),
    ),
    case(
        ("mt543-prowide-2.fin", Fin),
        ("2004080300000523", "FR1234567890"),
        (Unit, "1000"),
        (date!(2004 - 08 - 04), Some(date!(2004 - 08 - 01))),
        ("REAG", "R SICV/2222"),
        ("0655015035", Some(("EUR", "11111")), None),
    ),
    case(
        ("mt543-prowide-3.fin", Fin),
        ("2005071100000156", "AR1234567890"),
        (Unit, "333"),
        (date!(1111 - 11 - 11), Some(date!(1111 - 11 - 11))),
        ("REAG", "R SICV/444"),
        ("0655013333", Some(("EUR", "8888.88")), None),
    ),
    case(
        ("mt543-prowide-5.fin", Fin),
        ("B070905000173", "CA1234567890"),
        (Unit, "3666.66"),
        (date!(2002 - 09 - 09), Some(date!(2002 - 09 - 06))),
        ("REAG", "R DTCYID/050"),
        ("096373", Some(("USD", "12345.56")), None),
    ),
    case(
        ("mt544-kdd-1.fin", Text(Some(544))),
        ("00123", "SI1234567890"),
        (Unit, "123"),
        (date!(2010 - 09 - 03), Some(date!(2010 - 09 - 01))),
        ("DEAG", "P DEDESI22"),
        ("1234565", None, Some(("RELA", "123456789"))),
    ),
    case(
        ("mt546-kdd-1.fin", Text(Some(546))),
        ("00124", "SI1234567890"),
        (Unit, "123"),
        (date!(2010 - 09 - 03), Some(date!(2010 - 09 - 01))),
        ("REAG", "P RERESI22"),
        ("7777770", None, Some(("RELA", "ABCDEF"))),
    ),
    case(
        ("mt547-clearstream-1.fin", Text(Some(547))),
        ("C0A6001111043E3K", "DE0001141828"),
        (FaceAmount, "80909999.49"),
        (date!(2020 - 10 - 06), Some(date!(2020 - 10 - 02))),
        ("REAG", "P TESTDEFF123"),
        (
            "79300000",
            Some(("EUR", "89999199.99")),
            Some(("RELA", "EOC7300215201005")),
        ),
    ),
];

#[test]
fn settlement_views_answer_who_what_when_how_much_which_reference() {
    // Goal: for each MT540–547 sample, the typed view answers the settlement questions.
    // Method: compare with the values read off the sample files by hand.
    for case in VIEWS {
        let input = sample(case.file);
        let (message, _) = iso15022::parse_with_problems(input, options(case.read));
        let view = SettlementInstruction::from_message(&message)
            .unwrap_or_else(|error| panic!("{}: {error}", case.file));
        let file = case.file;
        assert_eq!(view.reference, case.reference, "{file}");
        assert_eq!(view.instrument.isin.unwrap().as_str(), case.isin, "{file}");
        assert_eq!(view.quantity.kind, case.quantity.0, "{file}");
        assert_eq!(
            view.quantity.value,
            case.quantity.1.parse::<Decimal>().unwrap(),
            "{file}"
        );
        assert_eq!(view.settlement_date.date(), case.settlement_date, "{file}");
        assert_eq!(
            view.trade_date.map(|date| date.date()),
            case.trade_date,
            "{file}"
        );
        let party = view.party(case.counterparty.0).unwrap();
        assert_eq!(party_text(party.id), case.counterparty.1, "{file}");
        assert_eq!(view.account, case.account, "{file}");
        let amount = view
            .settlement_amount
            .map(|amount| (amount.currency().to_owned(), amount.value));
        let expected = case
            .amount
            .map(|(currency, value)| (currency.to_owned(), value.parse::<Decimal>().unwrap()));
        assert_eq!(amount, expected, "{file}");
        if let Some((qualifier, reference)) = case.link {
            assert_eq!(view.link(qualifier), Some(reference), "{file}");
        }
        let number = message.message_type.unwrap().0;
        let receive = matches!(number, 540 | 541 | 544 | 545);
        assert_eq!(
            view.direction == SettlementDirection::Receive,
            receive,
            "{file}"
        );
        assert_eq!(
            view.payment == PaymentType::AgainstPayment,
            number % 2 == 1,
            "{file}"
        );
        assert_eq!(view.confirmation, number >= 544, "{file}");
        assert!(view.place_of_settlement().is_some(), "{file}");
    }
}

#[test]
fn cancellation_view_has_function_and_previous_reference() {
    // Goal: a CANC instruction says what it cancels.
    let rejection = iso15022::check(sample("mt540-prowide-1.fin"), ParseOptions::fin())
        .into_result()
        .unwrap_err();
    assert!(
        rejection
            .problems
            .iter()
            .all(|problem| problem.code == Code::InvalidIsin)
    );
    let input = sample("mt540-prowide-1.fin");
    let (message, _) = iso15022::parse_with_problems(input, ParseOptions::fin());
    let view = SettlementInstruction::from_message(&message).unwrap();
    assert_eq!(view.function.code, FunctionCode::Canc);
    assert_eq!(view.previous_reference(), Some("TFH5436259-999"));
    assert_eq!(
        view.delivering_agent().unwrap().safekeeping_account,
        Some("94999")
    );
    let input = sample("mt540-prowide-2.fin");
    let (message, _) = iso15022::parse_with_problems(input, ParseOptions::fin());
    let view = SettlementInstruction::from_message(&message).unwrap();
    assert_eq!(view.function.subfunction, Some(Subfunction::Copy));
    assert_eq!(
        view.settlement_date,
        iso15022::fields::DateOrDateTime::DateTime(datetime!(2017-07-29 10:52:44))
    );
}

#[test]
fn status_advice_views_give_statuses_reasons_and_transaction() {
    let input = sample("mt548-pwexamples-1.fin");
    let (message, _) = iso15022::parse_with_problems(input, ParseOptions::fin());
    let advice = StatusAdvice::from_message(&message).unwrap();
    assert_eq!(advice.reference, "REFERENCE123");
    assert_eq!(advice.related_reference(), Some("FRTJ123DEL2"));
    assert_eq!(advice.status(StatusQualifier::Iprc).unwrap().code, "CAND");
    let transaction = advice.transaction.unwrap();
    assert_eq!(
        transaction.instrument.isin, None,
        "malformed isin reads as none"
    );
    assert!(transaction.instrument.raw.starts_with("ISIN A1234567890"));
    assert_eq!(transaction.quantity.unwrap().value, Decimal::ONE);
    assert_eq!(transaction.account, Some("54321"));
    assert_eq!(
        transaction.settlement_date.unwrap().date(),
        date!(2017 - 08 - 12)
    );
}

#[test]
fn statement_views_give_paging_account_and_holdings() {
    let read = |name: &str, read: Read| sample(name).pipe(|input| (input, read));
    let (input, how) = read("mt535-prowide-2.fin", Fin);
    let (message, _) = iso15022::parse_with_problems(input, options(how));
    let statement = Statement::from_message(&message).unwrap();
    assert_eq!(
        statement.page,
        Page {
            number: 5,
            continuation: Continuation::More
        }
    );
    assert_eq!(statement.account, "F275");
    assert_eq!(
        statement.statement_date.unwrap().date(),
        date!(2006 - 09 - 13)
    );
    assert_eq!(statement.holdings.len(), 2);
    assert_eq!(
        statement.holdings[0].aggregate.unwrap().value,
        Decimal::from(35_732_656)
    );
    assert_eq!(
        statement.holdings[1].available.unwrap().value,
        Decimal::from(-990_692)
    );
    assert_eq!(statement.holdings[1].instrument.isin, None);

    for (name, how, page, account, activity) in [
        (
            "mt535-prowide-1.fin",
            Fin,
            (1, Continuation::Only),
            "ABC",
            true,
        ),
        (
            "mt535-pwintegr-2.fin",
            Fin,
            (5, Continuation::More),
            "F275",
            true,
        ),
        (
            "mt536-eurex-1.fin",
            Text(Some(536)),
            (1, Continuation::Last),
            "00000000",
            false,
        ),
        (
            "mt537-pwexamples-1.fin",
            Fin,
            (1, Continuation::Only),
            "222S",
            true,
        ),
    ] {
        let input = sample(name);
        let (message, _) = iso15022::parse_with_problems(input, options(how));
        let statement = Statement::from_message(&message).unwrap();
        assert_eq!(
            (statement.page.number, statement.page.continuation),
            page,
            "{name}"
        );
        assert_eq!(statement.account, account, "{name}");
        assert_eq!(statement.activity, activity, "{name}");
    }
    let input = sample("mt536-eurex-1.fin");
    let (message, _) = iso15022::parse_with_problems(input, options(Text(Some(536))));
    let statement = Statement::from_message(&message).unwrap();
    assert_eq!(
        statement.period,
        Some((date!(2002 - 12 - 18), date!(2002 - 12 - 18)))
    );
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

fn isin_from(body: &str) -> Isin {
    let digit = isin_check_digit(body.as_bytes());
    Isin::parse(&format!("{body}{digit}")).unwrap()
}

const ENVELOPE: Envelope<'static> = Envelope {
    sender: "CCASHKHHAXXX",
    receiver: "PARTHKHHXXXX",
    session: 1,
    sequence: 42,
};

#[test]
fn builders_produce_valid_messages_of_every_type() {
    // Goal: what the workers and the terminal emit passes our validator and reads back.
    let isin = isin_from("HK000000700");
    let parties = [
        Party {
            role: "DEAG",
            id: PartyId::Proprietary {
                scheme: "CCAS",
                id: "B01234",
            },
            safekeeping_account: None,
        },
        Party {
            role: "PSET",
            id: PartyId::Bic("CCASHKHH"),
            safekeeping_account: None,
        },
    ];
    for number in 540..=547u16 {
        let deliver = matches!(number, 542 | 543 | 546 | 547);
        let mut roles = parties;
        if deliver {
            roles[0].role = "REAG";
        }
        let links = [Linkage {
            qualifier: "RELA",
            reference: "ORIG0001",
        }];
        let spec = SettlementInstructionSpec {
            message_type: MessageType(number),
            function: Function {
                code: FunctionCode::Newm,
                subfunction: None,
            },
            reference: "SEME0001",
            links: if number >= 544 { &links } else { &[] },
            prepared: Some(datetime!(2026-11-24 09:30:00)),
            trade_date: Some(date!(2026 - 11 - 24)),
            settlement_date: date!(2026 - 11 - 26),
            isin,
            description: Some("TENCENT HOLDINGS"),
            quantity: Quantity {
                kind: QuantityKind::Unit,
                value: Decimal::new(1_000, 0),
            },
            account: "B01234-001",
            transaction_type: "TRAD",
            parties: &roles,
            settlement_amount: (number % 2 == 1).then_some(Amount {
                currency: *b"HKD",
                value: Decimal::new(41_250_050, 2),
            }),
        };
        let text = build::settlement_instruction(Some(&ENVELOPE), &spec).unwrap();
        let message = iso15022::check(&text, ParseOptions::fin())
            .into_result()
            .unwrap();
        assert_eq!(iso15022::to_canonical(&message), text);
        let view = SettlementInstruction::from_message(&message).unwrap();
        assert_eq!(view.instrument.isin, Some(isin));
        assert_eq!(
            view.settlement_amount.map(|amount| amount.value),
            spec.settlement_amount.map(|amount| amount.value)
        );
        assert_eq!(view.quantity, spec.quantity);
        assert_eq!(view.parties, roles);
    }
    let cancel = SettlementInstructionSpec {
        message_type: MessageType(540),
        function: Function {
            code: FunctionCode::Canc,
            subfunction: None,
        },
        reference: "SEME0002",
        links: &[],
        prepared: None,
        trade_date: None,
        settlement_date: date!(2026 - 11 - 26),
        isin,
        description: None,
        quantity: Quantity {
            kind: QuantityKind::Unit,
            value: Decimal::ONE,
        },
        account: "A1",
        transaction_type: "TRAD",
        parties: &parties,
        settlement_amount: None,
    };
    let previous = [Linkage {
        qualifier: "PREV",
        reference: "SEME0001",
    }];
    let linked = SettlementInstructionSpec {
        links: &previous,
        ..cancel
    };
    let text = build::settlement_instruction(None, &linked).unwrap();
    let message = iso15022::parse(&text, ParseOptions::text_only(Some(MessageType(540)))).unwrap();
    let view = SettlementInstruction::from_message(&message).unwrap();
    assert_eq!(view.function.code, FunctionCode::Canc);
    assert_eq!(view.previous_reference(), Some("SEME0001"));
    match build::settlement_instruction(None, &cancel) {
        Err(build::BuildError::Invalid(rejection)) => {
            assert_eq!(
                rejection.first_error().unwrap().code,
                Code::CancelLinkMissing
            );
        }
        other => panic!("a cancellation without PREV must not build: {other:?}"),
    }

    let advice = StatusAdviceSpec {
        reference: "STAT0001",
        function: Function {
            code: FunctionCode::Inst,
            subfunction: None,
        },
        prepared: None,
        related_reference: "SEME0001",
        statuses: &[
            StatusSpec {
                qualifier: "IPRC",
                code: "PACK",
                reasons: &[],
            },
            StatusSpec {
                qualifier: "MTCH",
                code: "NMAT",
                reasons: &[ReasonSpec {
                    qualifier: "NMAT",
                    code: ReasonCode::Cmis,
                    narrative: None,
                }],
            },
            StatusSpec {
                qualifier: "SETT",
                code: "PEND",
                reasons: &[ReasonSpec {
                    qualifier: "PEND",
                    code: ReasonCode::Lack,
                    narrative: Some("AWAITING SECURITIES"),
                }],
            },
        ],
        transaction: Some(StatusTransactionSpec {
            isin,
            quantity: Quantity {
                kind: QuantityKind::Unit,
                value: Decimal::new(1_000, 0),
            },
            account: "B01234-001",
            transaction_type: "TRAD",
            receive_deliver: "RECE",
            payment: "APMT",
            settlement_date: date!(2026 - 11 - 26),
            settlement_amount: Some(Amount {
                currency: *b"HKD",
                value: Decimal::new(-5, 1),
            }),
        }),
    };
    let text = build::status_advice(Some(&ENVELOPE), &advice).unwrap();
    let message = iso15022::parse(&text, ParseOptions::fin()).unwrap();
    let view = StatusAdvice::from_message(&message).unwrap();
    assert_eq!(view.statuses.len(), 3);
    assert_eq!(
        view.status(StatusQualifier::Sett).unwrap().reasons[0].code,
        Some(ReasonCode::Lack)
    );
    assert_eq!(
        view.status(StatusQualifier::Sett).unwrap().reasons[0].narrative,
        Some("AWAITING SECURITIES")
    );
    assert_eq!(
        view.transaction.unwrap().settlement_amount.unwrap().value,
        Decimal::new(-5, 1)
    );

    let holdings = [HoldingSpec {
        isin,
        description: None,
        aggregate: Quantity {
            kind: QuantityKind::Unit,
            value: Decimal::new(5_000, 0),
        },
        available: None,
    }];
    let transactions = [TransactionSpec {
        related_reference: "SEME0001",
        isin,
        quantity: Quantity {
            kind: QuantityKind::Unit,
            value: Decimal::new(1_000, 0),
        },
        receive_deliver: "RECE",
        payment: "APMT",
        settlement_date: date!(2026 - 11 - 26),
    }];
    for number in 535..=537u16 {
        let spec = StatementSpec {
            message_type: MessageType(number),
            page: Page {
                number: 1,
                continuation: Continuation::Only,
            },
            reference: "STMT0001",
            function: Function {
                code: FunctionCode::Newm,
                subfunction: None,
            },
            statement_date: date!(2026 - 11 - 24),
            period: None,
            frequency: "DAIL",
            update_type: "COMP",
            account: "B01234-001",
            holdings: &holdings,
            transactions: &transactions,
        };
        let text = build::statement(None, &spec).unwrap();
        let message =
            iso15022::parse(&text, ParseOptions::text_only(Some(MessageType(number)))).unwrap();
        let view = Statement::from_message(&message).unwrap();
        assert_eq!(view.account, "B01234-001");
        if number == 535 {
            assert_eq!(view.holdings[0].aggregate, Some(holdings[0].aggregate));
        } else {
            assert_eq!(view.transactions.len(), 1, "MT{number}");
            assert_eq!(view.transactions[0].reference, Some("SEME0001"));
            assert_eq!(
                view.transactions[0].quantity,
                Some(transactions[0].quantity)
            );
        }
    }
}

#[test]
fn builder_values_cannot_inject_fields() {
    // Goal: a value cannot smuggle in a field. Method: a party name whose second line is a field
    // that would be valid where it lands (20C::PROC in SETPRTY).
    let parties = [
        Party {
            role: "DEAG",
            id: PartyId::NameAndAddress("BANK NAME\n:20C::PROC//FORGED"),
            safekeeping_account: None,
        },
        Party {
            role: "PSET",
            id: PartyId::Bic("CCASHKHH"),
            safekeeping_account: None,
        },
    ];
    let spec = SettlementInstructionSpec {
        message_type: MessageType(540),
        function: Function {
            code: FunctionCode::Newm,
            subfunction: None,
        },
        reference: "SEME0003",
        links: &[],
        prepared: None,
        trade_date: None,
        settlement_date: date!(2026 - 11 - 26),
        isin: isin_from("HK000000700"),
        description: None,
        quantity: Quantity {
            kind: QuantityKind::Unit,
            value: Decimal::ONE,
        },
        account: "A1",
        transaction_type: "TRAD",
        parties: &parties,
        settlement_amount: None,
    };
    match build::settlement_instruction(None, &spec) {
        Err(build::BuildError::FieldInjection { written, found }) => {
            assert_eq!(found, written + 1);
        }
        other => panic!("injected field must be refused: {other:?}"),
    }
}

#[test]
fn cli_validate_parse_and_fmt() {
    // Goal: the three subcommands behave as documented. Method: run them on samples.
    let mut out = Vec::new();
    let code = run(
        &FinCommand::Validate {
            files: vec![
                format!("{SAMPLES}/mt541-prowide-7.fin").into(),
                format!("{SAMPLES}/mt541-prowide-1.fin").into(),
            ],
            mt: None,
        },
        &mut out,
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(code, std::process::ExitCode::FAILURE);
    assert!(text.contains("mt541-prowide-7.fin: OK"), "{text}");
    assert!(
        text.contains("14:1 E203 16S:TRADFOO: '16S:TRADFOO' closes '16R:TRADDET'"),
        "{text}"
    );

    let mut out = Vec::new();
    let code = run(
        &FinCommand::Fmt {
            file: format!("{SAMPLES}/mt548-hkex-1.fin").into(),
            mt: Some(548),
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        iso15022::normalise_line_endings(sample("mt548-hkex-1.fin"))
    );

    let mut out = Vec::new();
    run(
        &FinCommand::Parse {
            file: format!("{SAMPLES}/mt540-midclear-1.fin").into(),
            mt: Some(540),
        },
        &mut out,
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["message_type"], 540);
    let party = &json["block4"][3]["items"][1]["items"][0];
    assert_eq!(party["tag"], "95R");
    assert_eq!(party["qualifier"], "DEAG");
    assert_eq!(party["scheme"], "MIDR");
    assert_eq!(party["value"], "5678");
}

fn valid_isin() -> impl Strategy<Value = Isin> {
    "[A-Z]{2}[A-Z0-9]{9}".prop_map(|body| isin_from(&body))
}

fn quantity() -> impl Strategy<Value = Quantity> {
    (1i64..1_000_000_000_000, 0u32..4).prop_map(|(mantissa, scale)| Quantity {
        kind: QuantityKind::Unit,
        value: Decimal::new(mantissa, scale),
    })
}

fn day() -> impl Strategy<Value = time::Date> {
    (1990i32..2100, 1u16..=365)
        .prop_map(|(year, ordinal)| time::Date::from_ordinal_date(year, ordinal).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn parse_write_is_identity_on_built_settlement_messages(
        number in 540u16..=547,
        reference in "[A-Z0-9]{1,16}",
        isin in valid_isin(),
        quantity in quantity(),
        settlement_date in day(),
        account in "[A-Z0-9]{1,20}",
        amount in 1i64..1_000_000_000_000,
        description in proptest::option::of("[A-Z ]{1,35}"),
    ) {
        let counterparty = if matches!(number, 540 | 541 | 544 | 545) { "DEAG" } else { "REAG" };
        let parties = [
            Party { role: counterparty, id: PartyId::Bic("BANKHKHH"), safekeeping_account: Some("X1") },
            Party { role: "PSET", id: PartyId::Bic("CCASHKHHXXX"), safekeeping_account: None },
        ];
        let links = [Linkage { qualifier: "RELA", reference: "R1" }];
        let spec = SettlementInstructionSpec {
            message_type: MessageType(number),
            function: Function { code: FunctionCode::Newm, subfunction: None },
            reference: &reference,
            links: &links,
            prepared: None,
            trade_date: Some(settlement_date),
            settlement_date,
            isin,
            description: description.as_deref(),
            quantity,
            account: &account,
            transaction_type: "TRAD",
            parties: &parties,
            settlement_amount: (number % 2 == 1).then_some(Amount { currency: *b"HKD", value: Decimal::new(amount, 2) }),
        };
        let text = build::settlement_instruction(Some(&ENVELOPE), &spec).unwrap();
        let message = iso15022::parse(&text, ParseOptions::fin()).unwrap();
        prop_assert_eq!(iso15022::to_canonical(&message), text.clone());
        let lf = to_lf(&text);
        let message = iso15022::parse(&lf, ParseOptions::fin()).unwrap();
        prop_assert_eq!(iso15022::to_canonical(&message), text);
        let view = SettlementInstruction::from_message(&message).unwrap();
        prop_assert_eq!(view.quantity.value, quantity.value);
        prop_assert_eq!(view.settlement_date.date(), settlement_date);
    }

    #[test]
    fn parse_write_is_identity_on_built_status_and_statements(
        reference in "[A-Z0-9]{1,16}",
        isin in valid_isin(),
        quantity in quantity(),
        statement_date in day(),
        number in 535u16..=538,
        page in 1u32..99_999,
    ) {
        let text = if number == 538 {
            build::status_advice(Some(&ENVELOPE), &StatusAdviceSpec {
                reference: &reference,
                function: Function { code: FunctionCode::Inst, subfunction: None },
                prepared: None,
                related_reference: "SEME1",
                statuses: &[StatusSpec { qualifier: "IPRC", code: "REJT", reasons: &[ReasonSpec { qualifier: "REJT", code: ReasonCode::Dsec, narrative: None }] }],
                transaction: None,
            }).unwrap()
        } else {
            let holdings = [HoldingSpec { isin, description: None, aggregate: quantity, available: Some(quantity) }];
            let transactions = [TransactionSpec { related_reference: &reference, isin, quantity, receive_deliver: "DELI", payment: "FREE", settlement_date: statement_date }];
            build::statement(Some(&ENVELOPE), &StatementSpec {
                message_type: MessageType(number),
                page: Page { number: page, continuation: Continuation::More },
                reference: &reference,
                function: Function { code: FunctionCode::Newm, subfunction: None },
                statement_date,
                period: None,
                frequency: "DAIL",
                update_type: "DELT",
                account: "ACC1",
                holdings: &holdings,
                transactions: &transactions,
            }).unwrap()
        };
        let message = iso15022::parse(&text, ParseOptions::fin()).unwrap();
        prop_assert_eq!(iso15022::to_canonical(&message), text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = iso15022::parse_bytes(&bytes, ParseOptions::fin());
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let report = iso15022::check(text, ParseOptions::text_only(Some(MessageType(540))));
            let _ = SettlementInstruction::from_message(&report.message);
        }
    }

    #[test]
    fn envelope_shaped_text_with_any_characters_never_panics(
        block1 in ".{0,30}",
        block2 in ".{0,50}",
        fields in proptest::collection::vec((":[0-9]{2}[A-Z]?:", ".{0,40}"), 0..12),
        tail in ".{0,20}",
    ) {
        let mut text = format!("{{1:{block1}}}{{2:{block2}}}{{4:\r\n");
        for (tag, value) in &fields {
            text.push_str(tag);
            text.push_str(value);
            text.push_str("\r\n");
        }
        text.push_str("-}");
        text.push_str(&tail);
        for options in [ParseOptions::fin(), ParseOptions::text_only(Some(MessageType(548)))] {
            let report = iso15022::check(&text, options);
            let _ = iso15022::to_canonical(&report.message);
            let _ = StatusAdvice::from_message(&report.message);
        }
    }

    #[test]
    fn mutated_samples_never_panic(
        index in 0usize..TABLE.len(),
        position in any::<prop::sample::Index>(),
        insert in "[{}:\r\n/A-Z0-9-]{0,8}",
        cut in 0usize..16,
    ) {
        let (name, read, _) = TABLE[index];
        let input = sample(name);
        let at = position.index(input.len() + 1);
        let at = (0..=at).rev().find(|&i| input.is_char_boundary(i)).unwrap_or(0);
        let end = (at + cut).min(input.len());
        let end = (end..=input.len()).find(|&i| input.is_char_boundary(i)).unwrap_or(input.len());
        let mutated = format!("{}{}{}", &input[..at], insert, &input[end..]);
        let report = iso15022::check(&mutated, options(read));
        let _ = SettlementInstruction::from_message(&report.message);
        let _ = StatusAdvice::from_message(&report.message);
        let _ = Statement::from_message(&report.message);
        if report.is_valid() {
            let canonical = iso15022::to_canonical(&report.message);
            let again = iso15022::parse(&canonical, options(read));
            prop_assert!(again.is_ok());
        }
    }
}
