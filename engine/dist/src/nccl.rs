//! NCCL on CUDA hosts, opened at run time so that swift-dist builds and runs without CUDA:
//! [`load_torch_cuda`] opens the wheel's `libtorch_cuda.so` (which registers libtorch's CUDA
//! kernels, so tch's CUDA tensors work in a binary linked against libtorch's CPU half, as
//! `swift_model::cuda` does for `--device cuda`), and [`Nccl::open`] opens `libnccl.so.2` (the
//! one `libtorch_cuda.so` depends on: the wheel's `nvidia/nccl/lib`) and binds the handful of
//! functions of NCCL's stable C API a data-parallel step needs. The wheel's
//! `ProcessGroupNCCL.hpp` needs CUDA's and NCCL's headers, which the wheel does not ship, so
//! c10d's NCCL class cannot be compiled here the way the Gloo one is; NCCL's own C API is small
//! and its ABI stable across 2.x, which is why it is bound directly.
//!
//! What runs today is `scripts/check_nccl.sh` (the `check_nccl` example): a one-rank
//! communicator and one data-parallel step on device 0 with timings. Training over NCCL is not
//! wired yet (`check_device` refuses CUDA tensors with a message).

use std::ffi::{c_char, c_int, c_void, CStr};

use libloading::os::unix::{Library, Symbol, RTLD_GLOBAL, RTLD_NOW};
use tch::{Kind, Tensor};

use crate::DistError;

/// NCCL's `ncclUniqueId`: 128 opaque bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    pub internal: [c_char; 128],
}

type Comm = *mut c_void;
type GetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type GetUniqueId = unsafe extern "C" fn(*mut UniqueId) -> c_int;
type CommInitRank = unsafe extern "C" fn(*mut Comm, c_int, UniqueId, c_int) -> c_int;
type AllReduce = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    c_int,
    c_int,
    Comm,
    *mut c_void,
) -> c_int;
type CommDestroy = unsafe extern "C" fn(Comm) -> c_int;
type GetErrorString = unsafe extern "C" fn(c_int) -> *const c_char;

/// Whether this machine has an NVIDIA driver.
pub fn driver_present() -> bool {
    std::path::Path::new("/proc/driver/nvidia/version").exists()
        || std::path::Path::new("/dev/nvidiactl").exists()
}

/// Opens libtorch's CUDA half into the process (global symbols, never closed).
pub fn load_torch_cuda() -> Result<(), DistError> {
    // SAFETY: its initialisers register CUDA kernels with the libtorch this process runs.
    let lib = unsafe { Library::open(Some("libtorch_cuda.so"), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| {
            DistError::Tensor(format!(
                "libtorch's CUDA library could not be loaded ({e}); this libtorch may be a CPU-only build"
            ))
        })?;
    std::mem::forget(lib);
    Ok(())
}

/// The bound NCCL functions.
pub struct Nccl {
    _lib: Library,
    get_version: GetVersion,
    get_unique_id: GetUniqueId,
    comm_init_rank: CommInitRank,
    all_reduce: AllReduce,
    comm_destroy: CommDestroy,
    error_string: GetErrorString,
}

impl Nccl {
    /// Opens `libnccl.so.2` (already in the process when `libtorch_cuda.so` is).
    pub fn open() -> Result<Self, DistError> {
        let err = |e: libloading::Error| DistError::Tensor(format!("NCCL: {e}"));
        // SAFETY: NCCL's library has no initialisers with preconditions; the symbols below are
        // bound with the types of nccl.h (2.x).
        unsafe {
            let lib = Library::open(Some("libnccl.so.2"), RTLD_NOW).map_err(err)?;
            let get = |name: &[u8]| -> Result<Symbol<*mut c_void>, DistError> {
                lib.get::<*mut c_void>(name).map_err(err)
            };
            macro_rules! bind {
                ($name:literal, $ty:ty) => {
                    std::mem::transmute::<*mut c_void, $ty>(*get($name)?)
                };
            }
            Ok(Self {
                get_version: bind!(b"ncclGetVersion\0", GetVersion),
                get_unique_id: bind!(b"ncclGetUniqueId\0", GetUniqueId),
                comm_init_rank: bind!(b"ncclCommInitRank\0", CommInitRank),
                all_reduce: bind!(b"ncclAllReduce\0", AllReduce),
                comm_destroy: bind!(b"ncclCommDestroy\0", CommDestroy),
                error_string: bind!(b"ncclGetErrorString\0", GetErrorString),
                _lib: lib,
            })
        }
    }

    fn check(&self, what: &str, code: c_int) -> Result<(), DistError> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: NCCL returns a static string for any code.
        let msg = unsafe { CStr::from_ptr((self.error_string)(code)) }.to_string_lossy();
        Err(DistError::Tensor(format!(
            "NCCL {what}: {msg} (code {code})"
        )))
    }

    /// NCCL's version (e.g. 22703 for 2.27.3).
    pub fn version(&self) -> Result<i32, DistError> {
        let mut v = 0;
        // SAFETY: writes one int.
        self.check("version", unsafe { (self.get_version)(&mut v) })?;
        Ok(v)
    }

    /// A new id for a communicator (rank 0 makes it; the others receive it through the store).
    pub fn unique_id(&self) -> Result<UniqueId, DistError> {
        let mut id = UniqueId { internal: [0; 128] };
        // SAFETY: writes the 128-byte id.
        self.check("unique id", unsafe { (self.get_unique_id)(&mut id) })?;
        Ok(id)
    }

    /// Joins the communicator `id` as `rank` of `world`, on the current CUDA device.
    pub fn communicator(
        &self,
        id: UniqueId,
        rank: usize,
        world: usize,
    ) -> Result<Communicator<'_>, DistError> {
        let mut comm: Comm = std::ptr::null_mut();
        // SAFETY: comm receives the communicator; id is the one every rank holds.
        self.check("init", unsafe {
            (self.comm_init_rank)(&mut comm, world as c_int, id, rank as c_int)
        })?;
        Ok(Communicator { nccl: self, comm })
    }
}

/// An NCCL communicator.
pub struct Communicator<'a> {
    nccl: &'a Nccl,
    comm: Comm,
}

impl Drop for Communicator<'_> {
    fn drop(&mut self) {
        // SAFETY: created by ncclCommInitRank, destroyed once.
        unsafe { (self.nccl.comm_destroy)(self.comm) };
    }
}

/// nccl.h's `ncclDataType_t` of a tensor kind.
fn data_type(kind: Kind) -> Option<c_int> {
    Some(match kind {
        Kind::Int8 => 0,
        Kind::Uint8 => 1,
        Kind::Int => 2,
        Kind::Int64 => 4,
        Kind::Half => 6,
        Kind::Float => 7,
        Kind::Double => 8,
        Kind::BFloat16 => 9,
        _ => return None,
    })
}

impl Communicator<'_> {
    /// Sums a contiguous CUDA tensor over the ranks in place, on the default stream (the one
    /// tch's kernels run on); returns once it is queued.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<(), DistError> {
        if !t.device().is_cuda() || !t.is_contiguous() {
            return Err(DistError::Tensor(
                "NCCL reduces contiguous CUDA tensors".into(),
            ));
        }
        let ty = data_type(t.kind()).ok_or_else(|| {
            DistError::Tensor(format!("NCCL has no data type for {:?}", t.kind()))
        })?;
        let ptr = t.data_ptr();
        // SAFETY: ptr points at numel elements of the tensor's kind on the communicator's
        // device; ncclSum is 0; a null stream is CUDA's default stream.
        self.nccl.check("all-reduce", unsafe {
            (self.nccl.all_reduce)(ptr, ptr, t.numel(), ty, 0, self.comm, std::ptr::null_mut())
        })
    }
}
