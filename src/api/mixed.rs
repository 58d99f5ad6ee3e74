//! Many prompts, one frozen model: prediction over rows that each name their job (a task and
//! its prompt), batches mixing jobs.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::model::Model;
use super::prompt::Prompt;
use super::task::Task;
use crate::error::{Error, Result};
use crate::train::encode::{Encoded, Row};
use crate::train::Prediction;
use std::path::PathBuf;

impl Model {
    /// Every row's prediction, in input order, where each row names the job it belongs to: an
    /// index into `jobs`, each a task with its prompt. Jobs may differ in task (template,
    /// labels, verbalizer, `cls` head) on this one model; encode each row with its own job's
    /// task ([`Model::encode`]). Batches of up to `batch_size` rows mix jobs; the scores equal
    /// those of [`Model::predict`] on each job's rows alone within 1e-5 relative (the make-up
    /// of a batch changes the last bits).
    pub fn predict_mixed(
        &self,
        jobs: &[(&Task, &Prompt)],
        rows: &[(usize, Row)],
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        if batch_size == 0 {
            return Err(Error::arg("--batch-size", "is 0: expected at least 1"));
        }
        let by_job = split_by_job(jobs.len(), rows)?;
        let mut out: Vec<Option<Prediction>> = vec![None; rows.len()];
        for ((task, prompt), members) in jobs.iter().zip(&by_job) {
            if members.is_empty() {
                continue;
            }
            let enc = Encoded {
                path: PathBuf::from("the mixed rows"),
                rows: (members.iter())
                    .filter_map(|&i| rows.get(i).map(|r| r.1.clone()))
                    .collect(),
                truncated: 0,
                truncated_targets: 0,
            };
            let preds = self.predict(task, prompt, &enc, batch_size)?;
            for (&i, p) in members.iter().zip(preds) {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(p);
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}

/// The indices of `rows` per job, each in input order; a row naming no job is an error
/// naming the row.
fn split_by_job(jobs: usize, rows: &[(usize, Row)]) -> Result<Vec<Vec<usize>>> {
    let mut by_job = vec![Vec::new(); jobs];
    for (i, (job, _)) in rows.iter().enumerate() {
        match by_job.get_mut(*job) {
            Some(members) => members.push(i),
            None => {
                return Err(Error::arg(
                    "rows",
                    format!("row {i} names job {job} but there are {jobs} jobs"),
                ))
            }
        }
    }
    Ok(by_job)
}
