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
//! The handle types are defined here, without libtorch, so the ABI is the same for every plugin
//! and a process without libtorch (the `swift` binary) can hold them; the conversions to and from
//! `tch::Tensor` are swift-plugin-tensors' (`TensorRefExt`, `OwnedTensorExt`).

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

impl TensorRef<'_> {
    /// Wraps a raw `at::Tensor*` that lives for `'a` (swift-plugin-tensors' conversions).
    #[doc(hidden)]
    pub fn from_raw(ptr: *mut c_void) -> Self {
        Self {
            ptr,
            _borrow: PhantomData,
        }
    }

    /// The raw `at::Tensor*`.
    #[doc(hidden)]
    pub fn as_raw(&self) -> *mut c_void {
        self.ptr
    }
}

/// Frees an `at::Tensor*` (registered by swift-plugin-tensors, which links libtorch).
type FreeFn = unsafe fn(*mut c_void);

static FREE: std::sync::OnceLock<FreeFn> = std::sync::OnceLock::new();

impl OwnedTensor {
    /// Takes ownership of a raw `at::Tensor*` (swift-plugin-tensors' conversions).
    #[doc(hidden)]
    pub fn from_raw(ptr: *mut c_void) -> Self {
        Self { ptr }
    }

    /// Gives up ownership of the raw `at::Tensor*` (it is not freed).
    #[doc(hidden)]
    pub fn into_raw(self) -> *mut c_void {
        let this = std::mem::ManuallyDrop::new(self);
        this.ptr
    }

    /// Declares how this process frees tensors that are dropped unconverted. swift-plugin-tensors
    /// calls it before it makes or takes any tensor; only a process that links libtorch can
    /// hold a real one.
    #[doc(hidden)]
    pub fn set_free(free: FreeFn) {
        let _ = FREE.set(free);
    }
}

impl Drop for OwnedTensor {
    fn drop(&mut self) {
        if let Some(free) = FREE.get() {
            // SAFETY: `ptr` is an owned at::Tensor* (OwnedTensor's contract) and `free` is
            // libtorch's, registered by swift-plugin-tensors.
            unsafe { free(self.ptr) }
        }
    }
}
