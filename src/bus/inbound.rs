//! Headers of the FIN messages on `ccass.v1.inbound.{participant}.{message_type}`
//! (`subjects/inbound.toml`), set by the producer that accepted the message.

/// The message's input sequence number in its PSS session (decimal).
pub const INPUT_SEQUENCE: &str = "Ccass-Input-Sequence";
/// The user whose certificate (or terminal login) sent it: `<participant>.<uid>`.
pub const USER: &str = "Ccass-User";
/// Which door it came through: [`CHANNEL_GATEWAY`] or the terminal.
pub const CHANNEL: &str = "Ccass-Channel";
/// `Ccass-Channel` of messages from the Participant Gateway.
pub const CHANNEL_GATEWAY: &str = "gateway";
/// `Ccass-Channel` of messages input in the terminal (published when a checker authorised
/// them; `Ccass-User` is then the maker).
pub const CHANNEL_TERMINAL: &str = "terminal";
