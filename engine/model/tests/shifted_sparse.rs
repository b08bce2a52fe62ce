//! LongLoRA's shifted sparse attention (`swift_model::sparse`) against a direct transcription
//! of the paper's formula (Algorithm 1 of Chen et al. 2023, with ms-swift's head split), written
//! here query by query with explicit index arithmetic: heads `H/2..H` (integer division, as
//! ms-swift's `num_heads // 2:`) see the sequence rolled `G/2` positions towards the start
//! (rolled position `j` holds token `(j + G/2) mod L`), every head attends causally within
//! groups of `G` consecutive (rolled) positions, and each output goes back to its token (the
//! shift back). Key heads are shared by `H / KV` consecutive query heads. Past the paper:
//! keys of padding or of another packed row are masked, a query always sees itself. Forward
//! values and the gradients of q, k and v are compared, in float64.

use swift_model::sparse::{group_size, shifted_sparse_attention};
use tch::{Device, Kind, Tensor};

/// The direct formula: `[b, h, t, d]` out.
fn direct(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seg: &[Vec<i64>],
    group: i64,
    length: i64,
    scale: f64,
) -> Tensor {
    let s = q.size();
    let (b, h, t) = (s[0], s[1], s[2]);
    let kvh = k.size()[1];
    let mut rows = Vec::new();
    for bi in 0..b {
        let mut heads = Vec::new();
        for hi in 0..h {
            let shifted = hi >= h / 2;
            let kh = hi / (h / kvh);
            // Rolled position j holds token perm(j).
            let perm = |j: i64| if shifted { (j + group / 2) % length } else { j };
            let mut outs: Vec<Option<Tensor>> = (0..t).map(|_| None).collect();
            for i in 0..length {
                let oi = perm(i);
                if oi >= t {
                    continue; // a position past the sequence: its output is not kept
                }
                let start = (i / group) * group;
                let mut scores = Vec::new();
                let mut values = Vec::new();
                for j in start..=i {
                    let oj = perm(j);
                    let allowed = j == i
                        || (oj < t
                            && seg[bi as usize][oj as usize] != 0
                            && seg[bi as usize][oj as usize] == seg[bi as usize][oi as usize]);
                    if !allowed {
                        continue;
                    }
                    let qv = q.get(bi).get(hi).get(oi);
                    let kv = k.get(bi).get(kh).get(oj);
                    scores.push((qv * kv).sum(Kind::Double) * scale);
                    values.push(v.get(bi).get(kh).get(oj));
                }
                let w = Tensor::stack(&scores, 0).softmax(0, Kind::Double);
                let out = w.unsqueeze(1) * Tensor::stack(&values, 0);
                outs[oi as usize] =
                    Some(out.sum_dim_intlist([0i64].as_slice(), false, Kind::Double));
            }
            let outs: Vec<Tensor> = outs.into_iter().map(|o| o.unwrap()).collect();
            heads.push(Tensor::stack(&outs, 0));
        }
        rows.push(Tensor::stack(&heads, 0));
    }
    Tensor::stack(&rows, 0)
}

fn leaf(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Double, Device::Cpu)).set_requires_grad(true)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    f64::try_from((a - b).abs().max()).unwrap()
}

/// One case: `h` query heads over `kvh` key heads, `t` tokens, groups of `group` over
/// `length`, segments `seg` (`None`: one unpadded row each).
fn check(b: i64, h: i64, kvh: i64, t: i64, group: i64, length: i64, seg: Option<Vec<Vec<i64>>>) {
    tch::manual_seed(7);
    let d = 4;
    let (q, k, v) = (
        leaf(&[b, h, t, d]),
        leaf(&[b, kvh, t, d]),
        leaf(&[b, kvh, t, d]),
    );
    let weights = Tensor::randn([b, h, t, d], (Kind::Double, Device::Cpu));
    let scale = 0.5;
    let seg_rows = seg
        .clone()
        .unwrap_or_else(|| vec![vec![1; t as usize]; b as usize]);
    let seg_tensor = seg.map(|rows| {
        let flat: Vec<i64> = rows.concat();
        Tensor::from_slice(&flat).view([b, t])
    });

    let ours =
        shifted_sparse_attention(&q, &k, &v, seg_tensor.as_ref(), group, length, Some(scale))
            .unwrap();
    (&ours * &weights).sum(Kind::Double).backward();
    let grads_ours: Vec<Tensor> = [&q, &k, &v].iter().map(|x| x.grad().copy()).collect();
    for x in [&q, &k, &v] {
        let _ = x.grad().zero_();
    }
    let want = direct(&q, &k, &v, &seg_rows, group, length, scale);
    (&want * &weights).sum(Kind::Double).backward();

    assert_eq!(ours.size(), want.size());
    let fwd = max_diff(&ours, &want);
    assert!(fwd < 1e-12, "forward differs by {fwd}");
    for (name, (x, g)) in ["q", "k", "v"]
        .iter()
        .zip([&q, &k, &v].iter().zip(&grads_ours))
    {
        let diff = max_diff(g, &x.grad());
        assert!(diff < 1e-12, "d{name} differs by {diff}");
    }
    // Not plain causal attention: the groups and the shift matter.
    let full = Tensor::scaled_dot_product_attention(
        &q,
        &k.repeat_interleave_self_int(h / kvh, 1, None),
        &v.repeat_interleave_self_int(h / kvh, 1, None),
        None::<&Tensor>,
        0.0,
        true,
        Some(scale),
        false,
    );
    assert!(max_diff(&ours, &full) > 1e-3, "equal to full attention");
}

#[test]
fn shifted_sparse_attention_equals_the_papers_formula() {
    // The paper's case: no padding, the sequence three groups (rolling by ±G/2 makes the
    // same groups, so the direction cannot show); an odd head count
    // over one shared key head (heads 1 and 2 shifted, as ms-swift splits them).
    check(2, 3, 1, 12, 4, 12, None);
    // Grouped-query heads, a sequence padded to the length (as to --max_length), a padded row
    // and a packed one.
    check(
        2,
        4,
        2,
        10,
        4,
        12,
        Some(vec![
            vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
            vec![1, 1, 1, 2, 2, 2, 2, 2, 2, 0],
        ]),
    );
}

#[test]
fn group_sizes_follow_ms_swift_and_refuse_what_it_refuses() {
    assert_eq!(group_size(1024, 0.25), Ok(256));
    assert_eq!(group_size(8, 1.0), Ok(8));
    // int(10 × 0.25) = 2 divides 10; int(10 × 0.3) = 3 does not.
    assert_eq!(group_size(10, 0.25), Ok(2));
    let e = group_size(10, 0.3).unwrap_err();
    assert!(e.contains("--max_length 10") && e.contains("3"), "{e}");
    assert!(group_size(8, 0.0).unwrap_err().contains("(0, 1]"));
    assert!(group_size(8, 1.5).unwrap_err().contains("(0, 1]"));
    assert!(group_size(3, 0.25).is_err(), "a group of 0 tokens");
}
