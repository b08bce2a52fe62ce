//! `tch` conversions of the tensor handles that cross the boundary (swift-plugin-api's
//! [`TensorRef`] and [`OwnedTensor`], defined there without libtorch): see that module for the
//! ownership rules. Import [`TensorRefExt`] and [`OwnedTensorExt`] (both in the prelude) to call
//! `TensorRef::new`, `shallow_clone`, `OwnedTensor::new` and `into_tensor`.

use std::ffi::c_void;
use std::mem::ManuallyDrop;

use tch::Tensor;

pub use swift_plugin_api::tensor::{linked, LinkedTensors, OwnedTensor, TensorRef};

/// Frees an owned `at::Tensor*` (what dropping an unconverted [`OwnedTensor`] does).
unsafe fn free(ptr: *mut c_void) {
    // SAFETY: the caller passes an owned at::Tensor* (OwnedTensor's contract).
    drop(unsafe { Tensor::from_ptr(ptr as *mut _) });
}

// This process has a tensor side: its versions, and how swift-plugin-api's `OwnedTensor` frees.
swift_plugin_api::__private::inventory::submit! {
    swift_plugin_api::tensor::LinkedTensors {
        libtorch: env!("SWIFT_LIBTORCH_VERSION"),
        tch: crate::TCH,
        free,
    }
}

/// `tch` side of [`TensorRef`].
pub trait TensorRefExt<'a> {
    /// Borrows a tensor for the duration of a call.
    fn new(t: &'a Tensor) -> Self;
    /// A new `tch::Tensor` handle on the same storage and autograd node (no copy).
    fn shallow_clone(&self) -> Tensor;
}

impl<'a> TensorRefExt<'a> for TensorRef<'a> {
    fn new(t: &'a Tensor) -> Self {
        TensorRef::from_raw(t.as_ptr() as *mut c_void)
    }

    fn shallow_clone(&self) -> Tensor {
        // SAFETY: the pointer is a live at::Tensor* for 'a (TensorRef's contract). The temporary
        // wrapper is never dropped, so the sender's tensor is not freed.
        let borrowed = ManuallyDrop::new(unsafe { Tensor::from_ptr(self.as_raw() as *mut _) });
        borrowed.shallow_clone()
    }
}

/// `tch` side of [`OwnedTensor`].
pub trait OwnedTensorExt {
    /// Hands a tensor over to the other side.
    fn new(t: Tensor) -> Self;
    /// Takes ownership back as a `tch::Tensor`.
    fn into_tensor(self) -> Tensor;
}

impl OwnedTensorExt for OwnedTensor {
    fn new(mut t: Tensor) -> Self {
        let ptr = t.as_mut_ptr() as *mut c_void;
        std::mem::forget(t);
        OwnedTensor::from_raw(ptr)
    }

    fn into_tensor(self) -> Tensor {
        // SAFETY: the pointer came from `OwnedTensor::new` on one side or the other, which gave
        // up ownership of it; `into_raw` does not free it.
        unsafe { Tensor::from_ptr(self.into_raw() as *mut _) }
    }
}
