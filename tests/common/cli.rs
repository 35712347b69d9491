//! Running the `sopflow` binary on a data directory, for the command-line tests.

use std::process::{Command, Output};

/// `sopflow ARGS --data-dir DATA`, from the crate root (so `procedures/` and `org.toml`
/// are the shipped ones).
pub fn run(args: &[&str], data: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sopflow"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("sopflow runs")
}

/// Standard output then standard error, as one text.
pub fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The first `open task ID …` line's task id.
pub fn first_task(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("open task ")
                .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
        })
        .expect("an open task line")
}
