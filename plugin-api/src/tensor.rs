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

/// The tensor side linked into this process: swift-plugin-tensors submits one (with
/// `inventory`), so any binary or plugin that links it, and only such a one, has one. It says
/// which libtorch and tch the process links (plugins with tensors are checked against them) and
/// how to free a tensor.
pub struct LinkedTensors {
    /// The libtorch version.
    pub libtorch: &'static str,
    /// The tch version.
    pub tch: &'static str,
    /// Frees an owned `at::Tensor*` (what dropping an unconverted [`OwnedTensor`] does).
    pub free: unsafe fn(*mut c_void),
}

inventory::collect!(LinkedTensors);

/// The tensor side linked into this process, if any (see [`LinkedTensors`]).
pub fn linked() -> Option<&'static LinkedTensors> {
    inventory::iter::<LinkedTensors>.into_iter().next()
}

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
}

impl Drop for OwnedTensor {
    fn drop(&mut self) {
        // Only a process with a tensor side can hold a real tensor.
        if let Some(linked) = linked() {
            // SAFETY: `ptr` is an owned at::Tensor* (OwnedTensor's contract) and `free` is
            // libtorch's.
            unsafe { (linked.free)(self.ptr) }
        }
    }
}
