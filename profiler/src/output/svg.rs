//! An SVG flame graph of the folded stacks ([`super::folded::lines`]), drawn by inferno.
//!
//! The java palette is used because it is the one that reads the `_[k]` (orange) and `_[i]`
//! (aqua) suffixes the folded lines carry; colours are chosen by name hash so that the same
//! function has the same colour in every graph.

use std::io;

use inferno::flamegraph::color::{MultiPalette, Palette};
use inferno::flamegraph::{self, Options};

use super::{OutputError, folded};
use crate::profile::SymbolizedProfile;

/// How many process names the title lists before summarizing the rest.
const TITLE_PROCESSES: usize = 3;

/// Draws `profile` as an SVG flame graph into `out`.
///
/// Fails with [`OutputError::NoSamples`] when there is nothing to draw.
pub(super) fn write(
    profile: &SymbolizedProfile,
    out: &mut dyn io::Write,
) -> Result<(), OutputError> {
    let lines = folded::lines(profile);
    if lines.is_empty() {
        return Err(OutputError::NoSamples);
    }
    let mut options = Options::default();
    options.title = title(profile);
    options.subtitle = subtitle(profile);
    options.colors = Palette::Multi(MultiPalette::Java);
    options.deterministic = true;
    options.count_name = "samples".to_owned();
    // inferno writes through many small calls; buffer them.
    let mut out = io::BufWriter::new(out);
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut out)
        .map_err(OutputError::FlameGraph)?;
    io::Write::flush(&mut out)?;
    Ok(())
}

/// "fleetprof: myworkload, other — 58 samples at 19 Hz over 5.0 s": what was profiled and how much.
fn title(profile: &SymbolizedProfile) -> String {
    let mut names: Vec<&str> = Vec::new();
    for sample in &profile.samples {
        if let Some(process) = profile.processes.get(sample.process as usize)
            && !names.contains(&process.comm.as_str())
        {
            names.push(&process.comm);
        }
    }
    let what = match names.len() {
        0 => "nothing".to_owned(),
        n if n <= TITLE_PROCESSES => names.join(", "),
        n => format!(
            "{} and {} more processes",
            names[..TITLE_PROCESSES].join(", "),
            n - TITLE_PROCESSES
        ),
    };
    format!(
        "fleetprof: {what} — {} samples at {} Hz over {:.1} s",
        profile.total_samples(),
        profile.frequency_hz,
        profile.duration.as_secs_f64()
    )
}

/// Losses worth knowing about while reading the graph, if any.
fn subtitle(profile: &SymbolizedProfile) -> Option<String> {
    let l = &profile.losses;
    let parts: Vec<String> = [
        ("samples lost (full map)", l.samples_lost()),
        ("stacks lost to collisions", l.stack_collisions),
        ("stacks lost to errors", l.stack_other_errors),
        ("unsymbolized frames", l.unsymbolized_frames),
    ]
    .into_iter()
    .filter(|&(_, n)| n > 0)
    .map(|(what, n)| format!("{what}: {n}"))
    .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::fixture;

    fn svg(profile: &SymbolizedProfile) -> String {
        let mut out = Vec::new();
        write(profile, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The flame graph is an SVG document naming the functions, the processes and the count.
    #[test]
    fn draws_an_svg_with_the_functions() {
        let text = svg(&fixture::profile());
        assert!(text.starts_with("<?xml"), "{}", &text[..80.min(text.len())]);
        assert!(text.contains("<svg"));
        assert!(text.trim_end().ends_with("</svg>"));
        // inferno shows names without the `_[k]`/`_[i]` annotations it colours by.
        for name in ["main", "hot_loop", "compute", "do_syscall_64", "other_main"] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(text.contains("fleetprof: myworkload, other — 58 samples at 19 Hz over 5.0 s"));
        assert!(text.contains("stacks lost to collisions: 1"));
    }

    /// Names with XML metacharacters are escaped, so the document stays well-formed.
    #[test]
    fn escapes_names() {
        let mut profile = fixture::profile();
        profile.frames[8].function = "<Vec<u8> as Drop>::drop&co".to_owned();
        let text = svg(&profile);
        assert!(text.contains("&lt;Vec&lt;u8&gt; as Drop&gt;::drop&amp;co"));
        assert!(!text.contains("<Vec<u8>"));
    }

    /// An empty profile is refused rather than drawn as an error picture.
    #[test]
    fn empty_profile_is_refused() {
        let mut profile = fixture::profile();
        profile.samples.clear();
        let err = write(&profile, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, OutputError::NoSamples), "{err:?}");
    }

    /// The title summarizes many processes instead of listing them all.
    #[test]
    fn title_summarizes_many_processes() {
        let mut profile = fixture::profile();
        for (i, comm) in ["a", "b", "c"].into_iter().enumerate() {
            profile.processes.push(crate::profile::Process {
                comm: comm.to_owned(),
                ..Default::default()
            });
            let mut sample = profile.samples[4].clone();
            sample.process = 2 + i as u32;
            profile.samples.push(sample);
        }
        assert!(
            title(&profile)
                .starts_with("fleetprof: myworkload, other, a and 2 more processes — 67 samples")
        );
    }
}
