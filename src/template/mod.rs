//! Tera set-up.
