//! Progress bars on stderr for the long commands. They are drawn only when stderr is a
//! terminal (a pipe or a log file gets no escape codes), and every log line and line of
//! output is written with the bars lifted off the screen, so the two never interleave.

use std::io::{IsTerminal, Write};
use std::sync::LazyLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// Every bar of the process hangs off this one, so one `suspend` hides them all.
static BARS: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(draw_target(std::io::stderr().is_terminal())));

fn draw_target(stderr_is_terminal: bool) -> ProgressDrawTarget {
    if stderr_is_terminal {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar for `len` known steps, e.g. `counter(12, "objects uploaded")`.
pub fn counter(len: u64, what: &str) -> ProgressBar {
    add(
        ProgressBar::new(len),
        &format!("{{bar:40}} {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left) {{wide_msg}}"),
    )
}

/// A spinner for work of unknown length, counting steps, e.g. `tally("keys listed")`.
pub fn tally(what: &str) -> ProgressBar {
    add(
        ProgressBar::new_spinner(),
        &format!("{{spinner}} {{pos}} {what} ({{elapsed}}) {{wide_msg}}"),
    )
}

fn add(bar: ProgressBar, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template).expect("progress templates are fixed");
    // Cleared however the command ends, an early `?` included, so an error prints on a clean line.
    let bar = BARS.add(bar.with_style(style).with_finish(ProgressFinish::AndClear));
    if !BARS.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    bar
}

/// Runs `write` (a `println!`, an `eprintln!`) with the bars lifted off the screen.
pub fn suspend<R>(write: impl FnOnce() -> R) -> R {
    BARS.suspend(write)
}

/// The tracing writer: each log event goes to stderr in one piece, with the bars lifted.
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One event's bytes, collected and written to stderr when the formatter is done with it.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            // Nowhere to report a failed write to stderr; the log line is lost either way.
            let _ = suspend(|| std::io::stderr().lock().write_all(&self.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stay_hidden_without_a_terminal() {
        let bars = MultiProgress::with_draw_target(draw_target(false));
        assert!(bars.is_hidden());
        assert!(bars.add(ProgressBar::new(3)).is_hidden());
    }

    #[test]
    fn a_log_line_is_collected_whole() {
        use tracing_subscriber::fmt::MakeWriter;
        let mut line = LogWriter.make_writer();
        line.write_all(b"INFO part one, ").unwrap();
        line.write_all(b"part two\n").unwrap();
        assert_eq!(line.0, b"INFO part one, part two\n");
        std::mem::forget(line); // keep the test's stderr clean
    }
}
