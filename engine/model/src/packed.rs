//! No-grad passes over several rows laid end to end after a shared cached prefix
//! ([`LoadedModel::forward_blocks`]): `swift eval` scores many questions per pass this way,
//! without padding and without a copy of the prefix's keys and values per row.

use tch::Tensor;

use crate::{DecodingStep, KvCache, LoadedModel, ModelError};

impl LoadedModel {
    /// Runs the family's forward over rows laid end to end (`ids`, their lengths `blocks` in
    /// order) after what `cache` (one row, no padding; empty for none) holds: each row attends
    /// to the cached positions and causally to its own tokens only, its positions restarting
    /// after the cached ones, so it computes what [`LoadedModel::forward`] computes for it alone
    /// after the cached prefix. `cache` still holds the prefix alone afterwards, ready for the
    /// next pass. Returns the hidden states `[1, sum(blocks), hidden]`.
    pub fn forward_blocks(
        &self,
        ids: &[i64],
        blocks: &[i64],
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let _guard = tch::no_grad_guard();
        let ids = Tensor::from_slice(ids)
            .f_view([1, -1])?
            .f_to_device(self.device)?;
        let _step = DecodingStep::enter(&ids);
        let mut step = cache.begin_blocks(&ids, blocks)?;
        step.float_activations = self.float_activations();
        self.shift_positions(cache, &mut step)?;
        self.run_family(&ids, cache, &step)
    }
}
