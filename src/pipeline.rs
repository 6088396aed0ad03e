//! One resource, one pass: render → compare → stage → check → swap → reload.
