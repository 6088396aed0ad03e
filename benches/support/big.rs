//! The large key space of the scale benchmarks: `n` keys `/big/backends/bNNNNNN`,
//! each with a value of about 100 bytes (a JSON backend record), about 126 bytes of
//! key and value per pair, as in the issue that set the goals (12.6 MB at 100,000).

/// The `i`th value: 104 bytes for every `i` below 16,777,216.
pub fn value(i: usize) -> String {
    format!(
        "{{\"host\":\"10.{:03}.{:03}.{:03}\",\"port\":8080,\"weight\":100,\"zone\":\"zone-{}\",\"rack\":\"r-{:04}\",\"tags\":[\"web\",\"blue\"]}}",
        i / 65536,
        (i / 256) % 256,
        i % 256,
        i % 7,
        i % 10_000
    )
}

pub fn key(i: usize) -> String {
    format!("/big/backends/b{i:06}")
}

pub fn pairs(n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (key(i), value(i))).collect()
}
