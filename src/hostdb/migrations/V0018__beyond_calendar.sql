-- Capture refuses a trade whose settlement date is after cns.holidays_known_through (the
-- holiday list may not cover it): a new exception reason.
ALTER TABLE cns_trade_exceptions DROP CONSTRAINT cns_trade_exceptions_reason_code_check;
ALTER TABLE cns_trade_exceptions ADD CONSTRAINT cns_trade_exceptions_reason_code_check
    CHECK (reason_code IN (
        'malformed_field', 'unknown_participant', 'participant_not_active', 'ccp_as_party',
        'unknown_security', 'security_not_active', 'currency_mismatch', 'not_board_lot',
        'bad_price', 'not_business_day', 'beyond_calendar', 'duplicate_trade',
        'settlement_date_closed'));
