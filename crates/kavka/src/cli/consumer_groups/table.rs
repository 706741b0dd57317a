//! Kafka's column layout for the consumer-groups tables: left-aligned columns, each as
//! wide as its minimum or its widest cell, one space apart, the last one unpadded.

/// The header and rows, one line each, every line ending in `\n`.
pub fn render(header: &[&str], rows: &[Vec<String>], min_widths: &[usize]) -> String {
    debug_assert_eq!(header.len(), min_widths.len());
    let columns = header.len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let cells = rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count());
            cells
                .chain([header[c].len(), min_widths.get(c).copied().unwrap_or(0)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (c, width) in widths.iter().enumerate() {
            let cell = row.get(c).map(String::as_str).unwrap_or("");
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = width.saturating_sub(cell.chars().count()) + 1;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An optional value as Kafka prints it: the value, or `-`.
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_grow_to_fit_and_keep_minimums() {
        let rows = vec![
            vec!["a-long-group-name".to_string(), "1".into(), "x".into()],
            vec!["g".to_string(), "22".into(), "".into()],
        ];
        let out = render(&["GROUP", "N", "LAST"], &rows, &[5, 4, 0]);
        assert_eq!(
            out,
            "GROUP             N    LAST\n\
             a-long-group-name 1    x\n\
             g                 22\n"
        );
        assert_eq!(or_dash(Some(5)), "5");
        assert_eq!(or_dash(None::<i64>), "-");
    }
}
