//! Labels that look alike and are not the same string: surrounding whitespace, or two
//! Unicode normalisations of one text (composed "é" and "e" with a combining accent, as macOS
//! and some editors write it; a singleton such as the ANGSTROM SIGN): they trained as two
//! classes without a word (hostile pass 33, F2; verification 30, F2a/F2b).

/// The key two labels share when they look alike: the text trimmed, in Unicode's composed
/// form (NFC).
pub fn look_alike_key(label: &str) -> String {
    let mut normalized = tokenizers::NormalizedString::from(label.trim());
    normalized.nfc();
    normalized.get().to_string()
}

/// Refuses a label of `labels` given twice, or two that look alike, which would train as two
/// classes (verification 30, F2a), naming `flag`, the option that listed them.
pub(crate) fn check_label_list(labels: &[String], flag: &str) -> crate::error::Result<()> {
    let mut seen = std::collections::HashMap::new();
    for l in labels {
        let twin = match seen.insert(look_alike_key(l), l) {
            None => continue,
            Some(first) if first == l => format!("label {l:?} appears twice"),
            // written in the labels' order (the code points of two that print alike told the
            // user the first was the second; verification 32, F2-c)
            Some(first) => format!(
                "labels {first:?} and {l:?} differ only by {}, so they would train as two \
                 classes: name one label once",
                twin_difference(first, l)
            ),
        };
        return Err(crate::error::Error::arg(flag, twin));
    }
    Ok(())
}

/// How labels `a` and `b`, of one `look_alike_key`, differ, for a message: by surrounding
/// whitespace, or by their normalisation, each then written code point by code point where
/// not ASCII (both printed alike).
pub fn twin_difference(a: &str, b: &str) -> String {
    let spaces = a.trim() != a || b.trim() != b;
    match (a.trim() == b.trim(), spaces) {
        (true, _) => "surrounding whitespace".into(),
        (false, spaces) => format!(
            "{}Unicode normalisation (canonically equivalent: {} and {})",
            if spaces {
                "surrounding whitespace and "
            } else {
                ""
            },
            code_points(a.trim()),
            code_points(b.trim())
        ),
    }
}

/// `s` quoted with every character past ASCII as `\u{...}`.
fn code_points(s: &str) -> String {
    let inner: String = (s.chars())
        .map(|c| match c.is_ascii() {
            true => c.to_string(),
            false => format!("\\u{{{:x}}}", c as u32),
        })
        .collect();
    format!("\"{inner}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twins_are_named_by_how_they_differ() {
        assert_eq!(look_alike_key("caf\u{e9} "), look_alike_key("cafe\u{301}"));
        assert_eq!(look_alike_key("\u{212b}"), look_alike_key("\u{c5}"));
        assert_ne!(look_alike_key("fi"), look_alike_key("\u{fb01}"));
        assert_eq!(twin_difference("pos", "pos "), "surrounding whitespace");
        assert_eq!(
            twin_difference("\u{212b}", "\u{c5}"),
            "Unicode normalisation (canonically equivalent: \"\\u{212b}\" and \"\\u{c5}\")"
        );
        assert_eq!(
            twin_difference("cafe\u{301} ", "caf\u{e9}"),
            "surrounding whitespace and Unicode normalisation (canonically equivalent: \
             \"cafe\\u{301}\" and \"caf\\u{e9}\")"
        );
    }
}
