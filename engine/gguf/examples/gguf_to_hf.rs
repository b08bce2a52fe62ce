//! Command-line front end to `swift_gguf::convert_to_hf`, for manual checks:
//! `cargo run --release -p swift-gguf --example gguf_to_hf -- MODEL.gguf OUT_DIR`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: {} MODEL.gguf OUT_DIR", args[0]);
        return ExitCode::from(2);
    }
    match swift_gguf::convert_to_hf(Path::new(&args[1]), Path::new(&args[2])) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
