//! Measuring a process from outside, as an operator would: CPU and memory from
//! `/proc/<pid>/`, the machine as docs/benchmarks.md records it, latency percentiles,
//! and picking benchmarks by name. Shared by the benchmarks (`#[path]`), each using
//! some of it.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Whether a benchmark was asked for: every one when none is named on the command
/// line (`cargo bench` passes `--bench`; any other argument picks benchmarks by name).
pub fn wanted() -> impl Fn(&str) -> bool {
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    move |name| picked.is_empty() || picked.iter().any(|p| p == name)
}

/// The benchmarks' own runtime, for their etcd clients.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub struct Memory {
    pub rss_mb: f64,
    pub hwm_mb: f64,
}

pub fn proc_status(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb = |field: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a kB figure")
    };
    Memory {
        rss_mb: kb("VmRSS:") / 1024.0,
        hwm_mb: kb("VmHWM:") / 1024.0,
    }
}

/// Fields of `/proc/<pid>/stat`, numbered as in proc(5) (state is 3).
fn stat_field(pid: u32, n: usize) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The command name may hold spaces; the fields after it are space-separated.
    let after_name = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[n - 3].parse::<u64>().expect("a tick count")
}

/// utime + stime of a process (all its threads, live or gone), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    stat_field(pid, 14) + stat_field(pid, 15)
}

/// cutime + cstime: the CPU of the children the process has waited for, in clock ticks.
pub fn children_ticks(pid: u32) -> u64 {
    stat_field(pid, 16) + stat_field(pid, 17)
}

/// Nanoseconds on a CPU of every live thread of a process (`/proc/<pid>/task/*/
/// schedstat`): the resolution clock ticks lack. Threads that exited meanwhile are
/// not counted (their time is in [`cpu_ticks`]).
pub fn cpu_ns(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Milliseconds per clock tick.
pub fn tick_ms() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    1000.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn percentiles(what: &str, times: &mut [Duration]) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    println!(
        "   {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, min {:.2} ms",
        ms(at(0.50)),
        ms(at(0.99)),
        ms(times[times.len() - 1]),
        ms(times[0])
    );
}

/// The machine, as docs/benchmarks.md records it.
pub fn machine() {
    let cpu = read(Path::new("/proc/cpuinfo"))
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = read(Path::new("/proc/sys/kernel/osrelease")).unwrap_or_default();
    let etcd = Command::new("etcd")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let load = read(Path::new("/proc/loadavg")).unwrap_or_default();
    println!(
        "# machine: {cores} cores, {cpu}, kernel {}, {etcd}; load average at start: {}",
        kernel.trim(),
        load.trim()
    );
}
