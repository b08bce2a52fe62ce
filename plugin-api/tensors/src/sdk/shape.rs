//! A tensor's sizes without an allocation: tch's `Tensor::size` returns a `Vec` (and its
//! `numel` builds one to multiply), and a batch-1 decoding step asked for sizes a few thousand
//! times per token, each a `malloc` and a `free` (about 2.4 % of a Q4_0 token's instructions,
//! callgrind). [`shape`] reads them into an array on the stack instead.

use std::ops::Deref;

use tch::Tensor;

/// The most dimensions kept on the stack; a tensor with more keeps tch's `Vec` (never on a
/// decoding step's path).
const MOST: usize = 8;

/// A tensor's sizes, as a slice (`&shape[..]`, `shape.last()`, `shape == [2, 3]`).
#[derive(Clone)]
pub struct Shape(Dims);

#[derive(Clone)]
enum Dims {
    /// Up to [`MOST`] sizes on the stack: the first `len` of `dims`.
    Inline { dims: [i64; MOST], len: usize },
    /// More: tch's own `Vec`.
    Heap(Vec<i64>),
}

impl Default for Shape {
    /// No dimensions (a scalar's sizes).
    fn default() -> Self {
        Shape(Dims::Inline {
            dims: [0; MOST],
            len: 0,
        })
    }
}

impl Shape {
    /// The sizes as a slice.
    pub fn as_slice(&self) -> &[i64] {
        self
    }
}

impl Deref for Shape {
    type Target = [i64];

    fn deref(&self) -> &[i64] {
        match &self.0 {
            Dims::Inline { dims, len } => &dims[..*len],
            Dims::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for Shape {
    fn deref_mut(&mut self) -> &mut [i64] {
        match &mut self.0 {
            Dims::Inline { dims, len } => &mut dims[..*len],
            Dims::Heap(v) => v,
        }
    }
}

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl PartialEq for Shape {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<const N: usize> PartialEq<[i64; N]> for Shape {
    fn eq(&self, other: &[i64; N]) -> bool {
        **self == other[..]
    }
}

impl PartialEq<Vec<i64>> for Shape {
    fn eq(&self, other: &Vec<i64>) -> bool {
        **self == other[..]
    }
}

/// `t.size()`, without the `Vec`.
pub fn shape(t: &Tensor) -> Shape {
    // SAFETY: `t` is a live tensor for the whole call and `at_dim` only reads it.
    let dim = unsafe { torch_sys::at_dim(t.as_ptr() as *mut _) };
    if dim > MOST {
        // More dimensions than kept here, or an error (an undefined tensor: `at_dim` returns
        // −1): tch's own call, which reports the error as it always did.
        return Shape(Dims::Heap(t.size()));
    }
    let mut dims = [0i64; MOST];
    // SAFETY: `at_shape` writes exactly `dim` sizes, and `dims` holds `MOST >= dim`.
    unsafe { torch_sys::at_shape(t.as_ptr() as *mut _, dims.as_mut_ptr()) };
    Shape(Dims::Inline { dims, len: dim })
}

/// `t.numel()`, without the `Vec`.
pub fn numel(t: &Tensor) -> usize {
    shape(t).iter().product::<i64>() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_tchs_sizes() {
        for size in [
            vec![],
            vec![0],
            vec![7],
            vec![2, 3],
            vec![1, 9, 1, 64],
            vec![2, 1, 1, 1, 1, 1, 1, 3],
            vec![1, 2, 1, 1, 1, 1, 1, 1, 3],
        ] {
            let t = Tensor::zeros(size.as_slice(), (tch::Kind::Float, tch::Device::Cpu));
            assert_eq!(&shape(&t)[..], t.size().as_slice());
            assert_eq!(numel(&t), t.numel());
        }
        let t = Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        assert!(shape(&t) == [2, 3] && shape(&t.transpose(0, 1)) == vec![3, 2]);
        assert_eq!(shape(&t.view([6])).last(), Some(&6));
    }
}
