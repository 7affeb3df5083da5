//! The `cf2bq` binary as an operator meets it: usage errors exit 2, runtime failures exit 1
//! and name what failed, and progress bars stay off a stderr that is not a terminal. None of
//! these need the local stack.

use std::process::{Command, Output};

/// Runs `cf2bq` with a bare environment; stdout and stderr are pipes, never terminals.
fn cf2bq(args: &[&str]) -> Output {
    let path = cf2bq_tests::binary("cf2bq");
    Command::new(&path)
        .args(args)
        .env_clear()
        .env("CF2BQ_LOG_FORMAT", "text")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {}: {e} (make test builds it first)",
                path.display()
            )
        })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_date_is_a_usage_error() {
    let out = cf2bq(&[
        "replay",
        "--bucket",
        "b",
        "--queue",
        "q",
        "--from",
        "2026-02-30",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("2026-02-30") && err.contains("YYYY-MM-DD"),
        "{err}"
    );

    let out = cf2bq(&["gen", "--out", "unused", "--start-date", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_backwards_date_range_is_a_usage_error() {
    let out = cf2bq(&[
        "replay",
        "--bucket",
        "b",
        "--queue",
        "q",
        "--from",
        "2026-11-02",
        "--to",
        "2026-11-01",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--from 2026-11-02 is after --to 2026-11-01"),
        "{err}"
    );
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let out = cf2bq(&["ingest", "--no-such-flag", "a.gz"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
    let out = cf2bq(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn help_is_not_an_error() {
    let out = cf2bq(&["replay", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--from <FROM>") && help.contains("inclusive"),
        "{help}"
    );
}

#[test]
fn a_missing_local_file_fails_with_exit_1_naming_it() {
    let dir = std::env::temp_dir().join(cf2bq_tests::unique("cli-missing"));
    let missing = dir.join("E2QWRUHAPOMQZL.2026-11-20-07.gone.gz");
    let missing = missing.to_str().unwrap();
    let out = cf2bq(&["ingest", missing]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cf2bq: {missing}: No such file")),
        "{err}"
    );
}

#[test]
fn no_progress_bar_reaches_a_stderr_that_is_not_a_terminal() {
    let dir = std::env::temp_dir().join(cf2bq_tests::unique("cli-gen"));
    let dir_arg = dir.to_str().unwrap();
    let out = cf2bq(&["gen", "--out", dir_arg, "--objects", "5", "--lines", "200"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains('\x1b') && !err.contains('\r'),
        "escape codes on a piped stderr: {err:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("5 objects, 1000 rows"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
