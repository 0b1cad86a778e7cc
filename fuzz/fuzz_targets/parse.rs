//! Fuzz the ISO 15022 parser, validator, writer and views: no input may panic, and a message
//! that validates must survive write → parse → write unchanged.

#![no_main]

use ccass::iso15022::views::{SettlementInstruction, Statement, StatusAdvice};
use ccass::iso15022::{self, MessageType, ParseOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = iso15022::parse_bytes(data, ParseOptions::fin());
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first byte picks the message type assumed for block-4-only input.
    let message_type = [535, 536, 537, 540, 541, 542, 543, 544, 547, 548, 564]
        [usize::from(data.first().copied().unwrap_or(0)) % 11];
    let options = ParseOptions::text_only(Some(MessageType(message_type)));
    let report = iso15022::check(text, options);
    let _ = SettlementInstruction::from_message(&report.message);
    let _ = StatusAdvice::from_message(&report.message);
    let _ = Statement::from_message(&report.message);
    if report.is_valid() {
        let canonical = iso15022::to_canonical(&report.message);
        let again =
            iso15022::parse(&canonical, options).expect("canonical form of a valid message parses");
        assert_eq!(iso15022::to_canonical(&again), canonical);
    }
});
