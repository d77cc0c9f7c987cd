//! `shmlease man`: the whole manual as one page, for users who have the tool but not the
//! repository's docs/cli.md. clap_mangen renders the top-level command's page (whose
//! SUBCOMMANDS section points to pages `shmlease-run(1)` etc. that nobody installs);
//! here each command gets a section of its own page instead: synopsis, description,
//! options and notes, as its `--help` shows them.

use std::io::Write;

/// Renders the page (roff) into `out`.
pub fn render(mut cmd: clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    // Fills in each subcommand's bin name ("shmlease run") for its synopsis.
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    let commands: Vec<_> =
        cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help").collect();
    for sub in &commands {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        writeln!(out, ".TP\n\\fBshmlease {}\\fR\n{}", sub.get_name(), escape(&about))?;
    }
    for sub in commands {
        writeln!(out, ".SH \"SHMLEASE {}\"", sub.get_name().to_uppercase())?;
        // The global options are the page's own OPTIONS: not repeated for every command.
        let globals: Vec<clap::Id> =
            sub.get_arguments().filter(|a| a.is_global_set()).map(|a| a.get_id().clone()).collect();
        let mut sub = sub.clone();
        for id in globals {
            sub = sub.mut_arg(id, |a| a.hide(true));
        }
        let man = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        man.render_synopsis_section(&mut part)?;
        man.render_description_section(&mut part)?;
        man.render_options_section(&mut part)?;
        if sub.get_after_help().is_some() || sub.get_after_long_help().is_some() {
            man.render_extra_section(&mut part)?;
        }
        // The command's own sections become subsections of its section.
        for line in String::from_utf8_lossy(&part).lines() {
            match line.strip_prefix(".SH ") {
                Some("EXTRA") => writeln!(out, ".SS NOTES")?,
                Some(heading) => writeln!(out, ".SS {heading}")?,
                None => writeln!(out, "{line}")?,
            }
        }
    }
    // The top-level notes: exit codes, where the table is, durations and limits.
    let mut extra = Vec::new();
    man.render_extra_section(&mut extra)?;
    out.extend(String::from_utf8_lossy(&extra).replace(".SH EXTRA", ".SH \"EXIT STATUS\"").bytes());
    man.render_version_section(out)?;
    Ok(())
}

/// `text` safe as a line of roff text (no leading control character, backslashes kept).
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}
