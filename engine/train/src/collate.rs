//! Batch collation: encoded rows in, rectangular batches out.
//!
//! * Padding (the default): each batch is padded on the right to its longest row; padding has
//!   label -100, loss scale 0 and attention mask 0.
//! * Packing (`--packing`): rows are laid end to end into sequences of at most `max_length`
//!   tokens (padded to `max_length`); position ids restart at each row and `seq_ids` tell the
//!   attention which row a token belongs to, so packed rows never attend to each other
//!   (`LoadedModel::forward_train_packed`). Which rows share a sequence follows ms-swift's
//!   `--packing_strategy`: `binpack` (longest rows first, each into the emptiest sequence it
//!   fits in: the `binpacking` package's `to_constant_volume`, which ms-swift calls) or
//!   `sequential` (next-fit, in row order). The
//!   first token of every packed row gets label -100: the token before it belongs to another row
//!   and must not learn to predict it (alone, a row's first token is never a target either).
//!
//! * One training pass over several rows of a micro-batch (`--rows_per_pass` other than 1):
//!   the rows are laid end to end in one sequence with no padding (`Collator::concat`), the
//!   same layout as packing, so each row still attends only to itself.
//!
//! Every batch reports its number of labelled tokens: the loss is the sum of per-token losses
//! divided by the labelled tokens of the whole accumulated step (as ms-swift does), which is what
//! makes gradient accumulation over rows of unequal length equal to one big batch.

/// A batch's `input_ids`, `labels`, `loss_scale` and `attention_mask` as `[batch, seq_len]`
/// tensors on `device`.
pub(crate) fn tensors(
    batch: &Batch,
    device: tch::Device,
) -> Result<(tch::Tensor, tch::Tensor, tch::Tensor, tch::Tensor), crate::checkpoint::TrainError> {
    use tch::Tensor;
    let shape = [batch.batch as i64, batch.seq_len as i64];
    let ids = Tensor::from_slice(&batch.input_ids)
        .f_view(shape)?
        .f_to_device(device)?;
    let labels = Tensor::from_slice(&batch.labels)
        .f_view(shape)?
        .f_to_device(device)?;
    let scale = Tensor::from_slice(&batch.loss_scale)
        .f_view(shape)?
        .f_to_device(device)?;
    let mask = Tensor::from_slice(&batch.attention_mask)
        .f_view(shape)?
        .f_to_device(device)?;
    Ok((ids, labels, scale, mask))
}

/// One row as the template encoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRow {
    pub input_ids: Vec<u32>,
    /// -100 where the token is not trained.
    pub labels: Vec<i64>,
    /// Per-token loss weight (1.0 for ordinary trained tokens).
    pub loss_scale: Vec<f32>,
    /// The row's images in order of their placeholders (vision-language models; empty else).
    pub images: Vec<RowImage>,
}

/// One image of a row as its image processor gave it (swift-vision): plain numbers, shared
/// between the copies of a row; batches turn them into the model's `ImageBatch`.
#[derive(Debug, Clone, PartialEq)]
pub struct RowImage {
    /// Row-major values of `shape` (CLIP `[3, H, W]`; Qwen2-VL `[patches, C·t·p·p]`).
    pub pixel_values: std::sync::Arc<Vec<f32>>,
    pub shape: Vec<i64>,
    /// The patch grid `(t, h, w)` (`[1, 1, 1]` for a fixed-size processor such as CLIP's).
    pub grid_thw: [i64; 3],
}

/// The images of a batch as the model reads them: CLIP images stacked `[n, 3, H, W]`, Qwen2-VL
/// patches concatenated `[Σ patches, C·t·p·p]`, grids `[n, 3]`; `None` without images.
pub fn image_batch(
    images: &[RowImage],
    device: tch::Device,
) -> Result<Option<swift_model::ImageBatch>, crate::checkpoint::TrainError> {
    use tch::Tensor;
    if images.is_empty() {
        return Ok(None);
    }
    let mut parts = Vec::with_capacity(images.len());
    for im in images {
        let t = Tensor::from_slice(im.pixel_values.as_slice()).f_view(im.shape.as_slice())?;
        parts.push(if im.shape.len() == 3 {
            t.f_unsqueeze(0)?
        } else {
            t
        });
    }
    let grids: Vec<i64> = images.iter().flat_map(|i| i.grid_thw).collect();
    Ok(Some(swift_model::ImageBatch {
        pixel_values: Tensor::f_cat(&parts, 0)?.f_to_device(device)?,
        grid_thw: Tensor::from_slice(&grids).f_view([images.len() as i64, 3])?,
    }))
}

/// A rectangular batch, row-major `[batch, seq_len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub batch: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub labels: Vec<i64>,
    pub loss_scale: Vec<f32>,
    pub attention_mask: Vec<i64>,
    pub position_ids: Vec<i64>,
    /// Which packed row each token belongs to (0 for padding; rows count from 1).
    pub seq_ids: Vec<i64>,
    /// Tokens whose label is not -100 (the label of token t is the target at t; callers shift).
    pub num_label_tokens: usize,
    /// Non-padding tokens (for tokens/s).
    pub num_tokens: usize,
    /// Rows laid end to end (the forward pass needs the block-diagonal mask of `seq_ids`).
    pub packed: bool,
    /// The rows' images, in the order of their placeholders in the batch (row by row).
    pub images: Vec<RowImage>,
}

/// How rows are grouped into packed sequences (ms-swift's `--packing_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PackingStrategy {
    /// Longest rows first, each into the emptiest sequence it fits in (binpacking's
    /// `to_constant_volume`).
    #[default]
    Binpack,
    /// Next-fit in row order: a new sequence starts when the next row does not fit.
    Sequential,
}

impl std::str::FromStr for PackingStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "binpack" => Ok(Self::Binpack),
            "sequential" => Ok(Self::Sequential),
            other => Err(format!(
                "--packing_strategy `{other}` is not one of binpack, sequential"
            )),
        }
    }
}

/// Groups rows of `lengths` into sequences of at most `max_length` tokens; returns each
/// sequence's row indices (within a sequence in the order they are laid out). Rows longer than
/// `max_length` are an error (truncate first).
pub fn pack_groups(
    lengths: &[usize],
    max_length: usize,
    strategy: PackingStrategy,
) -> Result<Vec<Vec<usize>>, String> {
    if let Some((i, n)) = lengths.iter().enumerate().find(|(_, &n)| n > max_length) {
        return Err(format!(
            "row {i} has {n} tokens, more than max_length {max_length}; truncate it first"
        ));
    }
    let mut packs: Vec<Vec<usize>> = Vec::new();
    let mut used: Vec<usize> = Vec::new();
    match strategy {
        PackingStrategy::Sequential => {
            for (i, &n) in lengths.iter().enumerate() {
                match used.last_mut() {
                    Some(u) if *u + n <= max_length => {
                        *u += n;
                        if let Some(p) = packs.last_mut() {
                            p.push(i);
                        }
                    }
                    _ => {
                        packs.push(vec![i]);
                        used.push(n);
                    }
                }
            }
        }
        PackingStrategy::Binpack => {
            // binpacking 2.0.1's to_constant_volume, which ms-swift calls: a stable sort by
            // decreasing length, then each row into the emptiest sequence with room (the first
            // such on ties), else a new one.
            let mut order: Vec<usize> = (0..lengths.len()).collect();
            order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
            for i in order {
                let n = lengths[i];
                let best = used
                    .iter()
                    .enumerate()
                    .filter(|(_, &u)| u + n <= max_length)
                    .fold(None, |best: Option<(usize, usize)>, (k, &u)| match best {
                        Some((_, bu)) if bu <= u => best,
                        _ => Some((k, u)),
                    });
                match best {
                    Some((k, _)) => {
                        packs[k].push(i);
                        used[k] += n;
                    }
                    None => {
                        packs.push(vec![i]);
                        used.push(n);
                    }
                }
            }
        }
    }
    Ok(packs)
}

/// How rows become batches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Collator {
    pub pad_id: u32,
    pub packing: bool,
    pub max_length: usize,
}

impl Collator {
    /// Pads a group of rows into one batch.
    pub fn pad(&self, rows: &[EncodedRow]) -> Batch {
        let seq_len = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
        let mut b = Batch::empty(rows.len(), seq_len, self.pad_id);
        for (i, r) in rows.iter().enumerate() {
            b.place(i, 0, r, (i + 1) as i64, false);
        }
        b
    }

    /// Packs rows into sequences of `max_length` tokens, in order, starting a new sequence when
    /// the next row does not fit (`--packing_strategy sequential`). Rows longer than
    /// `max_length` are an error (truncate first).
    pub fn pack(&self, rows: &[EncodedRow]) -> Result<Vec<Batch>, String> {
        self.pack_with(rows, PackingStrategy::Sequential)
    }

    /// Packs rows into sequences of `max_length` tokens grouped by `strategy`
    /// ([`pack_groups`]), each padded to `max_length`.
    pub fn pack_with(
        &self,
        rows: &[EncodedRow],
        strategy: PackingStrategy,
    ) -> Result<Vec<Batch>, String> {
        let lengths: Vec<usize> = rows.iter().map(|r| r.input_ids.len()).collect();
        Ok(pack_groups(&lengths, self.max_length, strategy)?
            .into_iter()
            .map(|pack| {
                let chosen: Vec<&EncodedRow> = pack.iter().map(|&i| &rows[i]).collect();
                Batch::end_to_end(&chosen, self.max_length, self.pad_id)
            })
            .collect())
    }

    /// Lays `rows` end to end in one sequence without padding: one training pass over several
    /// rows in which each row attends only to itself, as with packing, so the pass computes
    /// exactly what the rows compute alone, without the tokens padding would add.
    pub fn concat(&self, rows: &[EncodedRow]) -> Batch {
        let chosen: Vec<&EncodedRow> = rows.iter().collect();
        let len = rows.iter().map(|r| r.input_ids.len()).sum();
        Batch::end_to_end(&chosen, len, self.pad_id)
    }
}

impl Batch {
    fn empty(batch: usize, seq_len: usize, pad_id: u32) -> Self {
        let n = batch * seq_len;
        Self {
            batch,
            seq_len,
            input_ids: vec![pad_id as i64; n],
            labels: vec![-100; n],
            loss_scale: vec![0.0; n],
            attention_mask: vec![0; n],
            position_ids: vec![0; n],
            seq_ids: vec![0; n],
            num_label_tokens: 0,
            num_tokens: 0,
            packed: false,
            images: Vec::new(),
        }
    }

    /// One packed sequence of `len` tokens holding `rows` end to end, padded after them.
    fn end_to_end(rows: &[&EncodedRow], len: usize, pad_id: u32) -> Self {
        let mut b = Batch::empty(1, len, pad_id);
        b.packed = true;
        let mut offset = 0;
        for (j, r) in rows.iter().enumerate() {
            b.place(0, offset, r, (j + 1) as i64, true);
            offset += r.input_ids.len();
        }
        b
    }

    /// Stacks batches of one sequence each (packed sequences) into one `[n, len]` batch, `len`
    /// the longest of their used lengths (trailing padding that every sequence has is dropped;
    /// shorter parts are padded with `pad_id`).
    pub fn stack(parts: &[Batch], pad_id: u32) -> Batch {
        let used = |b: &Batch| {
            (0..b.batch)
                .map(|r| {
                    let row = &b.attention_mask[r * b.seq_len..(r + 1) * b.seq_len];
                    row.iter().rposition(|&m| m != 0).map_or(0, |p| p + 1)
                })
                .max()
                .unwrap_or(0)
        };
        let seq_len = parts.iter().map(used).max().unwrap_or(0);
        let rows: usize = parts.iter().map(|b| b.batch).sum();
        let mut out = Batch::empty(rows, seq_len, pad_id);
        out.packed = parts.iter().any(|b| b.packed);
        let mut r_out = 0;
        for b in parts {
            for r in 0..b.batch {
                let (src, dst) = (r * b.seq_len, r_out * seq_len);
                let n = seq_len.min(b.seq_len);
                out.input_ids[dst..dst + n].copy_from_slice(&b.input_ids[src..src + n]);
                out.labels[dst..dst + n].copy_from_slice(&b.labels[src..src + n]);
                out.loss_scale[dst..dst + n].copy_from_slice(&b.loss_scale[src..src + n]);
                out.attention_mask[dst..dst + n].copy_from_slice(&b.attention_mask[src..src + n]);
                out.position_ids[dst..dst + n].copy_from_slice(&b.position_ids[src..src + n]);
                out.seq_ids[dst..dst + n].copy_from_slice(&b.seq_ids[src..src + n]);
                r_out += 1;
            }
            out.num_label_tokens += b.num_label_tokens;
            out.num_tokens += b.num_tokens;
            out.images.extend(b.images.iter().cloned());
        }
        out
    }

    /// Writes row `r` at `offset` of batch row `row`; `packed`: the row's first token is no
    /// target (the token before it belongs to another row).
    fn place(&mut self, row: usize, offset: usize, r: &EncodedRow, seq_id: i64, packed: bool) {
        let base = row * self.seq_len + offset;
        for (t, &id) in r.input_ids.iter().enumerate() {
            let k = base + t;
            self.input_ids[k] = id as i64;
            self.labels[k] = if packed && t == 0 {
                -100
            } else {
                r.labels.get(t).copied().unwrap_or(-100)
            };
            self.loss_scale[k] = r.loss_scale.get(t).copied().unwrap_or(1.0);
            self.attention_mask[k] = 1;
            self.position_ids[k] = t as i64;
            self.seq_ids[k] = seq_id;
        }
        self.num_tokens += r.input_ids.len();
        self.images.extend(r.images.iter().cloned());
        let skip = usize::from(packed);
        self.num_label_tokens += r.labels.iter().skip(skip).filter(|&&l| l != -100).count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ids: &[u32], trained_from: usize) -> EncodedRow {
        EncodedRow {
            input_ids: ids.to_vec(),
            labels: ids
                .iter()
                .enumerate()
                .map(|(i, &t)| if i >= trained_from { t as i64 } else { -100 })
                .collect(),
            loss_scale: vec![1.0; ids.len()],
            images: Vec::new(),
        }
    }

    #[test]
    fn padding_to_the_longest_row() {
        let c = Collator {
            pad_id: 0,
            packing: false,
            max_length: 16,
        };
        let b = c.pad(&[row(&[5, 6, 7], 1), row(&[8], 0)]);
        assert_eq!((b.batch, b.seq_len), (2, 3));
        assert_eq!(b.input_ids, [5, 6, 7, 8, 0, 0]);
        assert_eq!(b.labels, [-100, 6, 7, 8, -100, -100]);
        assert_eq!(b.attention_mask, [1, 1, 1, 1, 0, 0]);
        assert_eq!(b.position_ids, [0, 1, 2, 0, 0, 0]);
        assert_eq!(b.loss_scale, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!((b.num_label_tokens, b.num_tokens), (3, 4));
    }

    #[test]
    fn packing_restarts_positions_and_separates_rows() {
        let c = Collator {
            pad_id: 9,
            packing: true,
            max_length: 5,
        };
        let packs = c
            .pack(&[row(&[1, 2], 0), row(&[3, 4, 5], 1), row(&[6, 7], 0)])
            .unwrap();
        assert_eq!(packs.len(), 2);
        assert_eq!(packs[0].input_ids, [1, 2, 3, 4, 5]);
        assert_eq!(packs[0].position_ids, [0, 1, 0, 1, 2]);
        assert_eq!(packs[0].seq_ids, [1, 1, 2, 2, 2]);
        // Every packed row's first token is no target.
        assert_eq!(packs[0].labels, [-100, 2, -100, 4, 5]);
        assert_eq!(packs[0].num_label_tokens, 3);
        assert!(packs[0].packed);
        assert_eq!(packs[1].input_ids, [6, 7, 9, 9, 9]);
        assert_eq!(packs[1].attention_mask, [1, 1, 0, 0, 0]);
        assert!(c
            .pack(&[row(&[1; 6], 0)])
            .unwrap_err()
            .contains("max_length 5"));
    }

    #[test]
    fn a_pass_lays_its_rows_end_to_end_without_padding() {
        let c = Collator {
            pad_id: 9,
            packing: false,
            max_length: usize::MAX,
        };
        let b = c.concat(&[row(&[1, 2, 3], 1), row(&[4, 5], 0)]);
        assert_eq!((b.batch, b.seq_len), (1, 5));
        assert_eq!(b.input_ids, [1, 2, 3, 4, 5]);
        assert_eq!(b.position_ids, [0, 1, 2, 0, 1]);
        assert_eq!(b.seq_ids, [1, 1, 1, 2, 2]);
        assert_eq!(b.attention_mask, [1; 5]);
        // The labels the rows have alone after the shift: a row's first token is never a target.
        assert_eq!(b.labels, [-100, 2, 3, -100, 5]);
        assert_eq!((b.num_label_tokens, b.num_tokens), (3, 5));
        assert_eq!(
            crate::loss::shifted_label_count(&b.labels, 1, 5),
            crate::loss::shifted_label_count(&[-100, 2, 3], 1, 3)
                + crate::loss::shifted_label_count(&[4, 5], 1, 2)
        );
        assert!(b.packed);
    }

    #[test]
    fn binpack_matches_the_binpacking_package() {
        // Recorded with binpacking 2.0.1 (ms-swift's dependency):
        // to_constant_volume(list(enumerate(lengths)), V, weight_pos=1).
        let groups = pack_groups(&[2, 3, 2, 4, 1], 5, PackingStrategy::Binpack).unwrap();
        assert_eq!(groups, vec![vec![3], vec![1, 0], vec![2, 4]]);
        let groups =
            pack_groups(&[3, 3, 2, 2, 1, 5, 4, 1, 1], 6, PackingStrategy::Binpack).unwrap();
        assert_eq!(
            groups,
            vec![vec![5], vec![6, 2], vec![0, 1], vec![3, 4, 7, 8]]
        );
        let groups = pack_groups(&[2, 3, 2, 4, 1], 5, PackingStrategy::Sequential).unwrap();
        assert_eq!(groups, vec![vec![0, 1], vec![2], vec![3, 4]]);
        assert!("nope".parse::<PackingStrategy>().is_err());
    }

    #[test]
    fn stacking_packs_drops_the_padding_they_share() {
        let c = Collator {
            pad_id: 9,
            packing: true,
            max_length: 8,
        };
        let packs = c
            .pack(&[
                row(&[1, 2, 3, 4, 5], 0),
                row(&[6, 7, 8, 1], 0),
                row(&[2, 3], 0),
            ])
            .unwrap();
        assert_eq!(packs.len(), 2);
        let b = Batch::stack(&packs, 9);
        assert_eq!((b.batch, b.seq_len), (2, 6));
        assert_eq!(b.input_ids, [1, 2, 3, 4, 5, 9, 6, 7, 8, 1, 2, 3]);
        assert_eq!(b.seq_ids, [1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 2, 2]);
        assert_eq!(b.position_ids, [0, 1, 2, 3, 4, 0, 0, 1, 2, 3, 0, 1]);
        assert_eq!(b.labels, [-100, 2, 3, 4, 5, -100, -100, 7, 8, 1, -100, 3]);
        assert_eq!((b.num_label_tokens, b.num_tokens), (8, 11));
        assert!(b.packed);
    }
}
