//! Prints the rows (or errors) of the datasets named on the command line, one line each, with the
//! counts at the end: `cargo run -p swift-data --example show_errors -- SPEC... [--skip_bad_rows]`.

use swift_data::{open_datasets, DatasetOptions};
use swift_plugin_datasets as _;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let skip = args.iter().any(|a| a == "--skip_bad_rows");
    let specs: Vec<String> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
    let regs = match swift_registry::PluginLoader::new(vec![]).load(&[]) {
        Ok(r) => r.registries,
        Err(e) => return eprintln!("error: {e}"),
    };
    let opts = DatasetOptions {
        skip_bad_rows: skip,
        ..Default::default()
    };
    let mut ds = match open_datasets(&specs, &regs, &opts) {
        Ok(ds) => ds,
        Err(e) => return eprintln!("error: {e}"),
    };
    for row in &mut ds {
        match row {
            Ok(r) => println!(
                "{}:{} {}",
                r.file.display(),
                r.line,
                serde_json::to_string(&r.row).unwrap_or_default()
            ),
            Err(e) => println!("error: {e}"),
        }
    }
    eprintln!("{:?}", ds.stats());
}
