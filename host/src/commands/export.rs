//! `swift export`: for now, converting a GGUF file into a Hugging Face model folder
//! (`--from_gguf FILE --output_dir DIR`). Merging, quantizing and writing GGUF come later.

use anyhow::{bail, Context, Result};

use crate::cli::ExportArgs;
use crate::config::GlobalSettings;

pub fn run(args: &ExportArgs, settings: &GlobalSettings) -> Result<()> {
    if args.quant_method.is_some() {
        return super::quantize::run(args, settings);
    }
    let Some(gguf) = &args.from_gguf else {
        if args.rest.is_empty() {
            bail!("nothing to export: pass --from_gguf FILE --output_dir DIR");
        }
        return super::not_yet("export (merge, quantize, to GGUF)", "export");
    };
    if !args.rest.is_empty() {
        bail!(
            "--from_gguf takes only --output_dir; unexpected: {}",
            args.rest.join(" ")
        );
    }
    let out = match &args.output_dir {
        Some(o) => o.clone(),
        None => {
            let stem = gguf
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::path::PathBuf::from(format!("{stem}-hf"))
        }
    };
    let report = swift_gguf::convert_to_hf(gguf, &out)
        .with_context(|| format!("converting {} to a Hugging Face folder", gguf.display()))?;
    tracing::info!("{report}");
    println!("{}", out.display());
    Ok(())
}
