//! Tables of results, plain for the terminal and as GitHub Markdown for the README, and the
//! verdict of a goal.

/// Prints the headline, the table, notes and goals, then all of it again as Markdown (notes
/// as a list, after the table).
pub fn print_report(headline: &str, rows: &[Vec<String>], notes: &[String], goals: &[String]) {
    println!("\n{headline}\n");
    print!("{}", plain_table(rows));
    for note in notes {
        println!("  {note}");
    }
    println!("\ngoals (informational):");
    for goal in goals {
        println!("  {goal}");
    }
    println!("\nMarkdown:\n\n{headline}\n");
    print!("{}", markdown_table(rows));
    println!();
    for line in notes.iter().chain(goals) {
        println!("- {line}");
    }
}

/// The machine the figures come from: `2 CPUs, Linux 6.18.0`.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs, Linux {}", kernel.trim())
}

/// `PASS` or `MISS`.
pub fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

/// Columns padded to their widest cell; the first row is the header.
pub fn plain_table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, &w)| format!("{cell:<w$}"))
                .collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect()
}

/// A GitHub Markdown table; the first row is the header.
pub fn markdown_table(rows: &[Vec<String>]) -> String {
    let Some((header, body)) = rows.split_first() else {
        return String::new();
    };
    let line = |cells: &[String]| {
        let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = line(header);
    out += &line(&vec!["---".to_string(); header.len()]);
    for r in body {
        out += &line(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<String>> {
        vec![
            vec!["".into(), "measurement".into(), "ms".into()],
            vec!["(b)".into(), "a|b".into(), "1".into()],
        ]
    }

    #[test]
    fn markdown_escapes_pipes() {
        let table = markdown_table(&rows());
        assert!(table.starts_with("|  | measurement | ms |\n| --- | --- | --- |\n"));
        assert!(table.contains("| (b) | a\\|b | 1 |"), "{table}");
    }

    #[test]
    fn plain_columns_are_padded_to_the_widest_cell() {
        assert_eq!(
            plain_table(&rows()),
            "     measurement  ms\n(b)  a|b          1\n"
        );
    }
}
