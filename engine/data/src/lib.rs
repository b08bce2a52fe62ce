//! # swift-data: datasets in, standard rows out
//!
//! The first stage of the data path (ARCHITECTURE.md §4): a `--dataset` spec is resolved to a file
//! (a path, or a dataset registered by a plugin, with an optional `#N` sample size), the file is
//! read row by row ([`read`]: `.jsonl`, `.json`, `.csv`/`.tsv`, `.parquet`, `.txt`), columns are
//! renamed, and each row goes through a registered preprocessor (chosen by the dataset record,
//! or by `auto` from the row's columns) into a [`StandardRow`](swift_plugin_api::StandardRow).
//! Everything streams: memory does not grow with the file.
//!
//! ```no_run
//! # use swift_data::{open_dataset, DatasetOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let regs = swift_registry::PluginLoader::new(vec![]).load(&[])?.registries;
//! let opts = DatasetOptions { model_name: Some("Swifty".into()), model_author: Some("ACME".into()), ..Default::default() };
//! let mut ds = open_dataset("identity#10", &regs, &opts)?;
//! for row in &mut ds {
//!     let row = row?;
//!     println!("{}:{} {:?}", row.file.display(), row.line, row.row.messages);
//! }
//! println!("{:?}", ds.stats());
//! # Ok(()) }
//! ```
//!
//! SPEC resolution: a path that exists is read as a file (it wins over a registered name of the
//! same spelling); otherwise the registry is asked, and an unknown name is an error listing close
//! names. `#N` samples with a seed derived from `data_seed` and the spec's position among
//! `--dataset` values (so `a#100 a#100` gives two different samples); the picked rows come in
//! file order (the trainer shuffles). [`SourcedRow::line`] is the 1-based line a row starts on
//! (the row number for Parquet), so errors and `swift encode` can point at it.
//!
//! Splits: [`split_dataset`] splits collected rows exactly (`ceil(ratio * len)` validation rows);
//! [`is_validation_row`] decides row by row from a running index, for streams.
//!
//! `auto`: for each row (after renames), the registered preprocessors whose `detect_columns` the
//! row has (non-null) are candidates; the highest `priority` wins, then the one with more detect
//! columns, then the first by name. A `detect_columns` entry `a|b` is satisfied by either column.
//! The choice is cached per set of columns.
//!
//! `{{name}}`/`{{author}}`: filled from `model_name`/`model_author` in every row when given. When
//! not given, a row of a *registered* dataset that contains one is an error naming the flag to
//! pass (`identity`, `v1-sft-demo`); a plain file keeps the text as is (with one warning).

mod dataset;
mod error;
pub mod read;
pub mod sample;

pub use dataset::{
    open_dataset, open_datasets, parse_spec, Dataset, DatasetOptions, DatasetStats, SourcedRow,
};
pub use error::DataError;
pub use sample::{is_validation_row, split_dataset};
