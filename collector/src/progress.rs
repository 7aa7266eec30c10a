//! A progress bar on stderr for long command-line work, drawn only when
//! stderr is a terminal: piped or redirected output gets nothing.

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

/// Redraws at most this often: a bar is for eyes, not a load.
const REDRAW: Duration = Duration::from_millis(100);
const WIDTH: u64 = 30;

pub struct Bar {
    label: &'static str,
    drawn: Option<Instant>,
}

impl Bar {
    /// A bar labelled `label`, or none when stderr is not a terminal.
    pub fn on_terminal(label: &'static str) -> Option<Self> {
        std::io::stderr()
            .is_terminal()
            .then_some(Self { label, drawn: None })
    }

    pub fn update(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        if self
            .drawn
            .is_some_and(|at| now - at < REDRAW && done < total)
        {
            return;
        }
        self.drawn = Some(now);
        let _ = write!(std::io::stderr(), "\r{}", line(self.label, done, total));
    }
}

impl Drop for Bar {
    /// Leaves the line empty for what is printed next.
    fn drop(&mut self) {
        if self.drawn.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

/// `reading [###########-------------------]  37%`.
fn line(label: &str, done: u64, total: u64) -> String {
    let total = total.max(1);
    let done = done.min(total);
    let filled = (done * WIDTH / total) as usize;
    format!(
        "{label} [{}{}] {:3}%",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        done * 100 / total
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_in_proportion() {
        assert_eq!(
            line("reading", 0, 50),
            format!("reading [{}]   0%", "-".repeat(30))
        );
        assert_eq!(
            line("reading", 25, 50),
            format!("reading [{}{}]  50%", "#".repeat(15), "-".repeat(15))
        );
        assert_eq!(
            line("reading", 50, 50),
            format!("reading [{}] 100%", "#".repeat(30))
        );
        assert_eq!(
            line("x", 3, 0),
            format!("x [{}] 100%", "#".repeat(30)),
            "no total"
        );
    }
}
