//! `ccass bench settlement`.
