//! Batch collation: encoded rows in, rectangular batches out.
//!
//! * Padding (the default): each batch is padded on the right to its longest row; padding has
//!   label -100, loss scale 0 and attention mask 0.
//! * Packing (`--packing`): rows are laid end to end into sequences of exactly `max_length`
//!   tokens (the last one padded); position ids restart at each row and `seq_ids` tell the
//!   attention which row a token belongs to, so packed rows never attend to each other.
//!
//! Every batch reports its number of labelled tokens: the loss is the sum of per-token losses
//! divided by the labelled tokens of the whole accumulated step (as ms-swift does), which is what
//! makes gradient accumulation over rows of unequal length equal to one big batch.

/// One row as the template encoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRow {
    pub input_ids: Vec<u32>,
    /// -100 where the token is not trained.
    pub labels: Vec<i64>,
    /// Per-token loss weight (1.0 for ordinary trained tokens).
    pub loss_scale: Vec<f32>,
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
            b.place(i, 0, r, (i + 1) as i64);
        }
        b
    }

    /// Packs rows into sequences of `max_length` tokens, in order, starting a new sequence when
    /// the next row does not fit. Rows longer than `max_length` are an error (truncate first).
    pub fn pack(&self, rows: &[EncodedRow]) -> Result<Vec<Batch>, String> {
        let mut packs: Vec<Vec<&EncodedRow>> = Vec::new();
        let mut used = usize::MAX;
        for (i, r) in rows.iter().enumerate() {
            let n = r.input_ids.len();
            if n > self.max_length {
                return Err(format!(
                    "row {i} has {n} tokens, more than max_length {}; truncate it first",
                    self.max_length
                ));
            }
            if used.saturating_add(n) > self.max_length {
                packs.push(Vec::new());
                used = 0;
            }
            if let Some(p) = packs.last_mut() {
                p.push(r);
            }
            used += n;
        }
        Ok(packs
            .into_iter()
            .map(|pack| {
                let mut b = Batch::empty(1, self.max_length, self.pad_id);
                let mut offset = 0;
                for (j, r) in pack.into_iter().enumerate() {
                    b.place(0, offset, r, (j + 1) as i64);
                    offset += r.input_ids.len();
                }
                b
            })
            .collect())
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
        }
    }

    fn place(&mut self, row: usize, offset: usize, r: &EncodedRow, seq_id: i64) {
        let base = row * self.seq_len + offset;
        for (t, &id) in r.input_ids.iter().enumerate() {
            let k = base + t;
            self.input_ids[k] = id as i64;
            self.labels[k] = r.labels.get(t).copied().unwrap_or(-100);
            self.loss_scale[k] = r.loss_scale.get(t).copied().unwrap_or(1.0);
            self.attention_mask[k] = 1;
            self.position_ids[k] = t as i64;
            self.seq_ids[k] = seq_id;
        }
        self.num_tokens += r.input_ids.len();
        self.num_label_tokens += r.labels.iter().filter(|&&l| l != -100).count();
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
        assert_eq!(packs[0].labels, [1, 2, -100, 4, 5]);
        assert_eq!(packs[1].input_ids, [6, 7, 9, 9, 9]);
        assert_eq!(packs[1].attention_mask, [1, 1, 0, 0, 0]);
        assert!(c
            .pack(&[row(&[1; 6], 0)])
            .unwrap_err()
            .contains("max_length 5"));
    }
}
