pub mod config;
pub mod iso15022;
