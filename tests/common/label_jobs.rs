//! The labelled rows the mixed-batch tests (tests/mixed.rs, tests/mixed_prefix.rs) share.

use softprompt::prelude::Dataset;

/// A dataset of (text, label) rows named "mem".
pub fn pairs(items: &[(&str, &str)]) -> Dataset {
    Dataset::from_pairs("mem", items.iter().map(|&(t, l)| (t, Some(l))))
}

/// One of two label jobs: three topics whose target texts have different token lengths, or two
/// sentiments; its rows, its (label, target text) pairs and its template.
pub fn label_job(three: bool) -> (Dataset, Vec<(&'static str, &'static str)>, &'static str) {
    if three {
        let data = pairs(&[
            ("the striker scored twice", "sport"),
            ("rates rose again this quarter and then once more", "money"),
            ("a telescope", "science"),
        ]);
        let verbalizer = vec![
            ("sport", "football match"),
            ("money", "bank"),
            ("science", "the stars above us"),
        ];
        (data, verbalizer, "topic: {text} answer:")
    } else {
        let data = pairs(&[
            ("a great film with a warm heart", "positive"),
            ("bad", "negative"),
            ("the plot drags and the actors look tired of it", "negative"),
            ("quite good", "positive"),
        ]);
        let verbalizer = vec![("negative", "terrible film"), ("positive", "great")];
        (data, verbalizer, "review: {text}")
    }
}
