//! Brendan Gregg's collapsed ("folded") stacks: `comm;root;...;leaf count`, one line per distinct
//! stack, what `flamegraph.pl`, inferno and speedscope read.
//!
//! Conventions, following Linux perf's `stackcollapse-perf` and inferno's palettes:
//! - the first element is the process's comm (`[pid N]` when it has none); threads of a process
//!   are merged, as `perf script | stackcollapse-perf` does without `--tid`;
//! - kernel frames end in `_[k]`;
//! - a function inlined into its caller is an element of its own, after the caller, ending in
//!   `_[i]` (as `stackcollapse-perf --inline` writes it), so inlining stays visible and the
//!   java palette colours it apart;
//! - a frame the symbolizer could not name shows as `module+0xoffset`;
//! - `;` inside a name (Rust's `[u8; 4]`) would split the frame, so it becomes `:`; line breaks
//!   become spaces.
//!
//! Lines are sorted, which inferno's `from_lines` expects, and identical stacks are summed.

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::OutputError;
use crate::profile::{Frame, SymbolizedProfile};

/// The folded lines of `profile`, sorted, identical stacks summed, without line terminators.
///
/// A frame or process id out of range (a malformed profile) shows as a placeholder rather than
/// failing: [`super::write`] refuses such profiles before it gets here.
pub fn lines(profile: &SymbolizedProfile) -> Vec<String> {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    let mut stack = String::new();
    for sample in &profile.samples {
        stack.clear();
        match profile.processes.get(sample.process as usize) {
            Some(process) if !process.comm.is_empty() => push_sanitized(&mut stack, &process.comm),
            Some(process) => stack.push_str(&format!("[pid {}]", process.pid)),
            None => stack.push_str("[unknown process]"),
        }
        for &id in sample.stack.iter().rev() {
            stack.push(';');
            match profile.frames.get(id as usize) {
                Some(frame) => push_frame(&mut stack, frame),
                None => stack.push_str(&format!("[unknown frame {id}]")),
            }
        }
        *stacks.entry(stack.clone()).or_default() += sample.count;
    }
    stacks
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect()
}

/// Writes [`lines`] to `out`, each terminated by a newline.
pub(super) fn write(
    profile: &SymbolizedProfile,
    out: &mut dyn io::Write,
) -> Result<(), OutputError> {
    let mut out = io::BufWriter::new(out);
    for line in lines(profile) {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

fn push_frame(stack: &mut String, frame: &Frame) {
    push_sanitized(stack, &frame.function);
    if frame.kernel {
        stack.push_str("_[k]");
    } else if frame.inlined {
        stack.push_str("_[i]");
    }
}

/// Appends `name` with the characters that carry meaning in the format replaced.
fn push_sanitized(stack: &mut String, name: &str) {
    stack.extend(name.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixture;

    /// The fixture folds to exactly these lines: comm first, root first, `_[k]`/`_[i]` suffixes,
    /// threads of one process summed, sorted.
    #[test]
    fn fixture_lines_are_exact() {
        let lines = lines(&fixture::profile());
        assert_eq!(
            lines,
            vec![
                "myworkload;main;/usr/lib/libc.so.6+0x2abc 5",
                "myworkload;main;hot_loop;step;compute_[i] 42",
                "myworkload;main;hot_loop;write;entry_SYSCALL_64_[k];do_syscall_64_[k] 8",
                "other;other_main 3",
            ]
        );
    }

    /// A `;` in a name or comm cannot split a frame, and a process without comm is named by pid.
    #[test]
    fn separators_in_names_are_replaced() {
        let mut profile = fixture::profile();
        profile.frames[8].function = "<[u8; 4] as Debug>::fmt".to_owned();
        profile.processes[1].comm = String::new();
        let lines = lines(&profile);
        assert_eq!(lines[0], "[pid 200];<[u8: 4] as Debug>::fmt 3");
    }

    /// `write` emits one newline-terminated line per distinct stack.
    #[test]
    fn write_terminates_lines() {
        let mut out = Vec::new();
        write(&fixture::profile(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 4);
        assert!(text.ends_with("other;other_main 3\n"), "{text}");
    }
}
