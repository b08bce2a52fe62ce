//! Tensors crossing the boundary.
//!
//! Host and plugins link the same libtorch shared libraries (the manifest check guarantees it), so
//! a libtorch `at::Tensor*` is valid on both sides. Two `#[repr(C)]` handles carry one:
//!
//! * [`TensorRef<'a>`]: **borrowed**. The sender keeps ownership and guarantees the tensor lives
//!   for `'a`; the receiver may read it or make its own handle with
//!   [`TensorRef::shallow_clone`] (which shares storage and the autograd graph), never free it.
//! * [`OwnedTensor`]: **owned**. Ownership moves to the receiver, which turns it back into a
//!   `tch::Tensor` with [`OwnedTensor::into_tensor`] (freed when that is dropped). Dropping an
//!   `OwnedTensor` unconverted frees it too.
//!
//! The handle types exist with and without the `tensors` feature (so the ABI is the same for
//! every plugin); only the conversions to and from `tch::Tensor` need the feature.

use std::ffi::c_void;
use std::marker::PhantomData;

use abi_stable::StableAbi;

/// A borrowed libtorch tensor, valid for `'a`. See the module documentation.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct TensorRef<'a> {
    ptr: *mut c_void,
    _borrow: PhantomData<&'a ()>,
}

/// An owned libtorch tensor in transit. See the module documentation.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct OwnedTensor {
    ptr: *mut c_void,
}

// SAFETY: libtorch tensors may be moved between threads; the handles add no thread affinity.
unsafe impl Send for OwnedTensor {}

#[cfg(feature = "tensors")]
mod convert {
    use super::*;
    use std::mem::ManuallyDrop;
    use tch::Tensor;

    impl<'a> TensorRef<'a> {
        /// Borrows a tensor for the duration of a call.
        pub fn new(t: &'a Tensor) -> Self {
            Self {
                ptr: t.as_ptr() as *mut c_void,
                _borrow: PhantomData,
            }
        }

        /// A new `tch::Tensor` handle on the same storage and autograd node (no copy).
        pub fn shallow_clone(&self) -> Tensor {
            // SAFETY: ptr is a live at::Tensor* for 'a (TensorRef's contract). The temporary
            // wrapper is never dropped, so the sender's tensor is not freed.
            let borrowed = ManuallyDrop::new(unsafe { Tensor::from_ptr(self.ptr as *mut _) });
            borrowed.shallow_clone()
        }
    }

    impl OwnedTensor {
        /// Hands a tensor over to the other side.
        pub fn new(mut t: Tensor) -> Self {
            let ptr = t.as_mut_ptr() as *mut c_void;
            std::mem::forget(t);
            Self { ptr }
        }

        /// Takes ownership back as a `tch::Tensor`.
        pub fn into_tensor(self) -> Tensor {
            let this = ManuallyDrop::new(self);
            // SAFETY: ptr came from `OwnedTensor::new`, which gave up ownership of it.
            unsafe { Tensor::from_ptr(this.ptr as *mut _) }
        }
    }

    impl Drop for OwnedTensor {
        fn drop(&mut self) {
            // SAFETY: as in into_tensor; the tensor is freed when the wrapper drops.
            drop(unsafe { Tensor::from_ptr(self.ptr as *mut _) });
        }
    }
}
