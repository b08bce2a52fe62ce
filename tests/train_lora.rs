//! LoRA training end to end (filled below).
