use ccass::iso15022::{self, MessageType, ParseOptions};

#[test]
fn dump() {
    let mut names: Vec<_> = std::fs::read_dir("tests/data/samples")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".fin"))
        .collect();
    names.sort();
    for name in names {
        let input = std::fs::read_to_string(format!("tests/data/samples/{name}")).unwrap();
        let mt: u16 = name[2..5].parse().unwrap_or(0);
        let report = iso15022::check(&input, ParseOptions::text_only(Some(MessageType(mt))));
        println!("== {name} valid={}", report.is_valid());
        for p in &report.problems {
            println!("   {p} {:?}", p.disposition);
        }
        let canon = iso15022::normalise_line_endings(&input);
        let out = iso15022::to_canonical(&report.message);
        if report.is_valid() && canon != out {
            println!("   ROUNDTRIP MISMATCH");
        }
    }
}

#[test]
fn cli_dump() {
    use ccass::iso15022::cli::{FinCommand, run};
    let mut out = Vec::new();
    let code = run(
        &FinCommand::Parse {
            file: "tests/data/samples/mt548-hkex-1.fin".into(),
            mt: Some(548),
        },
        &mut out,
    )
    .unwrap();
    println!("{code:?}\n{}", String::from_utf8(out).unwrap());
    let mut out = Vec::new();
    let code = run(
        &FinCommand::Validate {
            files: vec![
                "tests/data/samples/mt548-hkex-1.fin".into(),
                "tests/data/samples/mt535-prowide-ack-1.fin".into(),
            ],
            mt: None,
        },
        &mut out,
    )
    .unwrap();
    println!("{code:?}\n{}", String::from_utf8(out).unwrap());
}
