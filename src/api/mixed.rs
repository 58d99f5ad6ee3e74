//! Many prompts, one frozen model: prediction over rows that each name their job (a task and
//! its prompt), batches mixing jobs.
// What a user hands the library never panics it. See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::model::{bind, on_engine, Engine, Model};
use super::prompt::Prompt;
use super::task::Task;
use crate::error::Result;
use crate::train::encode::Row;
use crate::train::{self, Prediction};

impl Model {
    /// Every row's prediction, in input order, where each row names the job it belongs to: an
    /// index into `jobs`, each a task with its prompt. Jobs may differ in task (template,
    /// labels, verbalizer, `cls` head) on this one model; encode each row with its own job's
    /// task ([`Model::encode`]). Batches of up to `batch_size` rows mix jobs: on BERT (`pet`,
    /// `cls`) the rows of every job with a prompt of one length share batches, each row
    /// reading its own prompt from a table on the device and scored by its own job; `seq2seq`
    /// and `causal` jobs are predicted one job at a time. The scores equal those of
    /// [`Model::predict`] on each job's rows alone within 1e-5 relative (the make-up of a
    /// batch changes the last bits). A row naming no job is an error naming the row.
    pub fn predict_mixed(
        &self,
        jobs: &[(&Task, &Prompt)],
        rows: &[(usize, Row)],
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        on_engine!(&self.engine, |be, m| {
            let params = (jobs.iter())
                .map(|(task, prompt)| bind(be, m, task, prompt))
                .collect::<Result<Vec<_>>>()?;
            let mixed: Vec<_> = (jobs.iter().zip(&params))
                .map(|((task, _), params)| (&task.inner, params))
                .collect();
            train::mixed::predict_mixed(be, m, &mixed, rows, batch_size)
        })
    }
}
