//! Process groups for data-parallel training, on libtorch's own c10d: the ranks meet at a
//! `c10d::TCPStore` (hosted by rank 0, or by torchrun's agent) and talk through a
//! `c10d::ProcessGroupGloo`, both the compiled classes of the `libtorch_cpu.so` that tch links,
//! reached through a small C++ shim (`src/shim.cpp`, C ABI, exceptions turned into messages).
//!
//! * **Rendezvous** from the standard environment ([`DistEnv::from_env`]): `RANK`, `WORLD_SIZE`,
//!   `LOCAL_RANK`, `MASTER_ADDR` (default `127.0.0.1`), `MASTER_PORT` (default 29500), so
//!   `torchrun --no-python swift …`, Slurm or Kubernetes' PyTorchJob launch `swift` unchanged
//!   (under torchrun's agent store, `TORCHELASTIC_USE_AGENT_STORE=True`, rank 0 joins as a
//!   client). `GLOO_SOCKET_IFNAME` picks the network interface, as in PyTorch.
//! * **Collectives** ([`ProcessGroup`]): a bucketed all-reduce (sum or mean) of a list of tensors
//!   (one flattened buffer per dtype, one collective each), broadcast, all-gather, gather to one
//!   rank, reduce to one rank, reduce-scatter, barrier; and `drop_grad` (no collective). Each
//!   waits at most the group's timeout (`--ddp_timeout`).
//! * **Failures**: when a collective fails (a peer's connection closed, or the timeout passed),
//!   the surviving ranks report to each other through the store and the error names the ranks
//!   that did not report ([`DistError::Collective`]); when rank 0, which holds the store, is
//!   the one gone, the error says so.
//! * One group per process ([`init`], [`current`]), as `torch.distributed`'s default group.
//!
//! **Why declarations stand in for gloo's headers.** The PyPI wheel ships
//! `ProcessGroupGloo.hpp` but not the five gloo headers it includes. The shim compiles the
//! wheel's own c10d headers (so every c10d class it allocates has the exact layout of the
//! library's), with `gloo-decl/` declaring only the gloo names those headers mention. That is
//! sound because every gloo object in those classes sits behind a `shared_ptr`/`unique_ptr`
//! (gloo layouts never enter a c10d layout) and the shim calls only functions `libtorch_cpu.so`
//! exports (`nm -DC libtorch_cpu.so | grep ProcessGroupGloo` lists the constructor,
//! `Options::Options`, `createDefaultDevice`, `createDeviceForInterface`; the link fails on
//! anything else). Debian's `libgloo-dev` was the alternative: an older gloo snapshot than the
//! one compiled into torch 2.13, with class layouts that could differ, for no gain, since no
//! gloo layout is needed. NCCL lives in `libtorch_cuda.so`, which swift-rs opens only on CUDA
//! hosts; CUDA process groups are refused with a message ([`check_device`]). [`nccl`] opens
//! NCCL at run time for `scripts/check_nccl.sh` (a one-rank communicator and one step).

pub mod nccl;

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

mod ffi {
    use super::*;
    extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn swift_dist_new(
            addr: *const c_char,
            port: c_int,
            rank: c_int,
            world: c_int,
            is_server: c_int,
            timeout_ms: i64,
            prefix: *const c_char,
            iface: *const c_char,
            err: *mut *mut c_char,
        ) -> *mut c_void;
        pub fn swift_dist_free(group: *mut c_void);
        pub fn swift_dist_free_error(err: *mut c_char);
        pub fn swift_dist_all_reduce_sum(
            group: *mut c_void,
            t: *mut c_void,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn swift_dist_broadcast(
            group: *mut c_void,
            t: *mut c_void,
            root: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn swift_dist_all_gather(
            group: *mut c_void,
            input: *mut c_void,
            outs: *const *mut c_void,
            n: usize,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn swift_dist_barrier(group: *mut c_void, err: *mut *mut c_char) -> c_int;
        pub fn swift_dist_reduce_sum(
            group: *mut c_void,
            t: *mut c_void,
            root: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn swift_dist_gather(
            group: *mut c_void,
            input: *mut c_void,
            outs: *const *mut c_void,
            n: usize,
            root: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn swift_dist_reduce_scatter_sum(
            group: *mut c_void,
            output: *mut c_void,
            input: *mut c_void,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn swift_dist_drop_grad(t: *mut c_void, err: *mut *mut c_char) -> c_int;
        pub fn swift_dist_store_set(
            group: *mut c_void,
            key: *const c_char,
            value: *const c_char,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn swift_dist_store_get(
            group: *mut c_void,
            key: *const c_char,
            out: *mut *mut c_char,
            len: *mut usize,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn swift_dist_store_has(
            group: *mut c_void,
            key: *const c_char,
            err: *mut *mut c_char,
        ) -> c_int;
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The launch environment is incomplete or inconsistent.
    #[error("{0}")]
    Env(String),
    /// The ranks could not meet.
    #[error("rank {rank} of {world} could not join the process group at {addr}:{port} within {timeout:?}: {message} (check that every rank was started with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, or raise --ddp_timeout)")]
    Init {
        rank: usize,
        world: usize,
        addr: String,
        port: u16,
        timeout: Duration,
        message: String,
    },
    /// A collective failed; `diagnosis` names the ranks that stopped.
    #[error("data parallel: {op} failed on rank {rank}: {diagnosis} (c10d: {message})")]
    Collective {
        op: &'static str,
        rank: usize,
        diagnosis: String,
        message: String,
    },
    /// A tensor the group cannot take.
    #[error("data parallel: {0}")]
    Tensor(String),
    #[error(transparent)]
    Tch(#[from] tch::TchError),
}

/// Where this process stands in the launch, from the standard environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// Whether this process hosts the store (rank 0, unless torchrun's agent does).
    pub hosts_store: bool,
    /// Store keys live under this prefix (one per torchrun restart).
    pub prefix: String,
}

impl DistEnv {
    /// The launch this process is part of; `None` when it runs alone (`WORLD_SIZE` unset or 1).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`DistEnv::from_env`] over any variable lookup.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let num = |k: &str| -> Result<Option<usize>, DistError> {
            match var(k) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    DistError::Env(format!("{k}={v:?} is not a whole number of 0 or more"))
                }),
            }
        };
        let Some(world) = num("WORLD_SIZE")? else {
            return Ok(None);
        };
        if world == 0 {
            return Err(DistError::Env(
                "WORLD_SIZE=0: it counts the ranks, 1 or more".into(),
            ));
        }
        if world == 1 {
            return Ok(None);
        }
        let rank = num("RANK")?.ok_or_else(|| {
            DistError::Env(format!(
                "WORLD_SIZE={world} but RANK is not set: start each process with its RANK (0..{world}), or launch through torchrun or NPROC_PER_NODE"
            ))
        })?;
        if rank >= world {
            return Err(DistError::Env(format!(
                "RANK={rank} is out of range for WORLD_SIZE={world} (0..={})",
                world - 1
            )));
        }
        let local_rank = num("LOCAL_RANK")?.unwrap_or(rank);
        let master_port = match var("MASTER_PORT") {
            None => 29500,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| {
                    DistError::Env(format!("MASTER_PORT={p:?} is not a port (1..=65535)"))
                })?,
        };
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let agent = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True");
        let restart = var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
        Ok(Some(Self {
            rank,
            world,
            local_rank,
            master_addr,
            master_port,
            hosts_store: rank == 0 && !agent,
            prefix: format!("swift_rs/attempt_{restart}/"),
        }))
    }
}

/// A Gloo process group (CPU tensors). Collectives are serialised: one runs at a time.
pub struct ProcessGroup {
    raw: Mutex<*mut c_void>,
    env: DistEnv,
    timeout: Duration,
}

// SAFETY: the c10d group is only used under the mutex, one call at a time; c10d's own threads
// are internal to it.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Ok(raw) = self.raw.lock() {
            // SAFETY: created by swift_dist_new, freed once.
            unsafe { ffi::swift_dist_free(*raw) };
        }
    }
}

/// Takes the message out of a shim error.
fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error".into();
    }
    // SAFETY: a NUL-terminated string malloc'd by the shim.
    let s = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { ffi::swift_dist_free_error(err) };
    s
}

fn cstring(s: &str) -> Result<CString, DistError> {
    CString::new(s).map_err(|_| DistError::Env(format!("{s:?} contains a NUL byte")))
}

/// Refuses tensors on devices this build cannot reduce over: Gloo reduces CPU tensors; NCCL
/// (for CUDA) lives in `libtorch_cuda.so` and is not wired into swift-rs yet.
pub fn check_device(device: Device) -> Result<(), DistError> {
    match device {
        Device::Cpu => Ok(()),
        other => Err(DistError::Tensor(format!(
            "the model is on {other:?}, but this build forms Gloo groups over CPU tensors only (NCCL for CUDA is not wired yet): train with --device cpu"
        ))),
    }
}

impl ProcessGroup {
    /// Joins the group `env` describes, waiting at most `timeout` for the others (and for every
    /// collective later).
    pub fn join(env: DistEnv, timeout: Duration) -> Result<Self, DistError> {
        let addr = cstring(&env.master_addr)?;
        let prefix = cstring(&env.prefix)?;
        let iface = cstring(&std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_default())?;
        let mut err = std::ptr::null_mut();
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        // SAFETY: valid C strings for the call's duration; err receives a malloc'd message.
        let raw = unsafe {
            ffi::swift_dist_new(
                addr.as_ptr(),
                c_int::from(env.master_port),
                env.rank as c_int,
                env.world as c_int,
                c_int::from(env.hosts_store),
                timeout_ms,
                prefix.as_ptr(),
                iface.as_ptr(),
                &mut err,
            )
        };
        if raw.is_null() {
            return Err(DistError::Init {
                rank: env.rank,
                world: env.world,
                addr: env.master_addr.clone(),
                port: env.master_port,
                timeout,
                message: take_error(err),
            });
        }
        tracing::info!(
            "data parallel: rank {} of {} joined the Gloo group at {}:{}",
            env.rank,
            env.world,
            env.master_addr,
            env.master_port
        );
        Ok(Self {
            raw: Mutex::new(raw),
            env,
            timeout,
        })
    }

    pub fn rank(&self) -> usize {
        self.env.rank
    }

    pub fn world(&self) -> usize {
        self.env.world
    }

    pub fn env(&self) -> &DistEnv {
        &self.env
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one shim call under the lock; a failure becomes [`DistError::Collective`] with the
    /// ranks that stopped named.
    fn call(
        &self,
        op: &'static str,
        f: impl FnOnce(*mut c_void, *mut *mut c_char) -> c_int,
    ) -> Result<(), DistError> {
        let raw = self
            .raw
            .lock()
            .map_err(|_| DistError::Tensor("the process group was poisoned by a panic".into()))?;
        let mut err = std::ptr::null_mut();
        if f(*raw, &mut err) == 0 {
            return Ok(());
        }
        let message = take_error(err);
        let diagnosis = self.diagnose(*raw);
        Err(DistError::Collective {
            op,
            rank: self.env.rank,
            diagnosis,
            message,
        })
    }

    /// After a failed collective: reports this rank alive through the store and waits a little
    /// for the other survivors' reports; names the ranks that do not report.
    fn diagnose(&self, raw: *mut c_void) -> String {
        let key = |r: usize| format!("failure_report/{r}");
        let Ok(own) = cstring(&key(self.env.rank)) else {
            return "could not report".into();
        };
        let value = c"alive";
        let mut err = std::ptr::null_mut();
        // SAFETY: valid strings; raw is the live group (the caller holds the lock).
        if unsafe { ffi::swift_dist_store_set(raw, own.as_ptr(), value.as_ptr(), &mut err) } != 0 {
            let m = take_error(err);
            return format!(
                "rank 0, which hosts the rendezvous store at {}:{}, is gone (crashed, killed or stopped), so the run cannot go on ({m})",
                self.env.master_addr, self.env.master_port
            );
        }
        let grace = self.timeout.min(Duration::from_secs(3));
        let start = Instant::now();
        loop {
            let mut missing = Vec::new();
            for r in (0..self.env.world).filter(|&r| r != self.env.rank) {
                let Ok(k) = cstring(&key(r)) else { continue };
                let mut err = std::ptr::null_mut();
                // SAFETY: as above.
                match unsafe { ffi::swift_dist_store_has(raw, k.as_ptr(), &mut err) } {
                    1 => {}
                    0 => missing.push(r),
                    _ => {
                        let m = take_error(err);
                        return format!(
                            "rank 0, which hosts the rendezvous store at {}:{}, is gone (crashed, killed or stopped) ({m})",
                            self.env.master_addr, self.env.master_port
                        );
                    }
                }
            }
            if missing.is_empty() {
                return "every other rank is still running: the ranks fell out of step (different data or settings per rank?)".into();
            }
            // A rank that ended with an error left its message ([`ProcessGroup::report_failure`]).
            let messages: Vec<String> = missing
                .iter()
                .filter_map(|&r| {
                    let m = self.failure_message(raw, r)?;
                    Some(format!("rank {r} stopped with an error: {m}"))
                })
                .collect();
            if !messages.is_empty() {
                return messages.join("; ");
            }
            if start.elapsed() >= grace {
                let names: Vec<String> = missing.iter().map(|r| format!("rank {r}")).collect();
                return format!(
                    "{} stopped (crashed, killed, or stuck past --ddp_timeout {:?}); see its own output",
                    names.join(", "),
                    self.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Rank `r`'s failure message, if it left one (`raw` is the live group, under the lock).
    fn failure_message(&self, raw: *mut c_void, r: usize) -> Option<String> {
        let key = cstring(&format!("failure_message/{r}")).ok()?;
        let mut err = std::ptr::null_mut();
        // SAFETY: valid strings; raw is the live group.
        if unsafe { ffi::swift_dist_store_has(raw, key.as_ptr(), &mut err) } != 1 {
            if !err.is_null() {
                take_error(err);
            }
            return None;
        }
        let (mut out, mut len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: as above; out receives a malloc'd buffer of len bytes (NUL-terminated).
        if unsafe { ffi::swift_dist_store_get(raw, key.as_ptr(), &mut out, &mut len, &mut err) }
            != 0
        {
            take_error(err);
            return None;
        }
        Some(take_error(out))
    }

    /// Leaves this rank's error message in the store, so the ranks whose next collective fails
    /// because this one ended name it with its message (best effort: a store that is gone is
    /// ignored, the run is failing anyway).
    pub fn report_failure(&self, message: &str) {
        let Ok(raw) = self.raw.lock() else { return };
        let (Ok(key), Ok(value)) = (
            cstring(&format!("failure_message/{}", self.env.rank)),
            cstring(&message.replace('\0', " ")),
        ) else {
            return;
        };
        let mut err = std::ptr::null_mut();
        // SAFETY: valid strings; raw is the live group.
        if unsafe { ffi::swift_dist_store_set(*raw, key.as_ptr(), value.as_ptr(), &mut err) } != 0 {
            take_error(err);
        }
    }

    /// Sums `tensors` over the ranks, in place: one flattened buffer per dtype, one collective
    /// each.
    pub fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        let mut kinds: Vec<Kind> = Vec::new();
        for t in tensors {
            check_device(t.device())?;
            if !kinds.contains(&t.kind()) {
                kinds.push(t.kind());
            }
        }
        for kind in kinds {
            let group: Vec<&Tensor> = tensors.iter().filter(|t| t.kind() == kind).collect();
            let flat = Tensor::f_cat(
                &group
                    .iter()
                    .map(|t| t.f_reshape([-1]))
                    .collect::<Result<Vec<_>, _>>()?,
                0,
            )?;
            self.call("all-reduce", |raw, err| {
                // SAFETY: flat is a live at::Tensor for the call.
                unsafe { ffi::swift_dist_all_reduce_sum(raw, flat.as_ptr() as *mut c_void, err) }
            })?;
            let mut off = 0i64;
            for t in group {
                let n = t.numel() as i64;
                let mut dst = t.shallow_clone();
                dst.f_copy_(&flat.f_narrow(0, off, n)?.f_view(t.size().as_slice())?)?;
                off += n;
            }
        }
        Ok(())
    }

    /// The mean of `tensors` over the ranks, in place (Gloo has no mean: a sum, then a division).
    pub fn all_reduce_mean(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        self.all_reduce_sum(tensors)?;
        for t in tensors {
            let _ = t.shallow_clone().f_div_scalar_(self.env.world as f64)?;
        }
        Ok(())
    }

    /// Sums a few numbers over the ranks (as one float64 all-reduce).
    pub fn sum_f64(&self, values: &[f64]) -> Result<Vec<f64>, DistError> {
        let t = Tensor::from_slice(values);
        self.all_reduce_sum(std::slice::from_ref(&t))?;
        Ok(Vec::<f64>::try_from(&t)?)
    }

    /// Overwrites `tensor` on every rank with rank `root`'s.
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<(), DistError> {
        check_device(tensor.device())?;
        let t = tensor.f_contiguous()?;
        self.call("broadcast", |raw, err| {
            // SAFETY: t is a live at::Tensor for the call.
            unsafe { ffi::swift_dist_broadcast(raw, t.as_ptr() as *mut c_void, root as c_int, err) }
        })?;
        if t.data_ptr() != tensor.data_ptr() {
            tensor.shallow_clone().f_copy_(&t)?;
        }
        Ok(())
    }

    /// Every rank's `tensor`, in rank order.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>, DistError> {
        check_device(tensor.device())?;
        let input = tensor.f_contiguous()?;
        let outs: Vec<Tensor> = (0..self.env.world)
            .map(|_| input.f_empty_like())
            .collect::<Result<_, _>>()?;
        let ptrs: Vec<*mut c_void> = outs.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        self.call("all-gather", |raw, err| {
            // SAFETY: input and outs stay alive for the call.
            unsafe {
                ffi::swift_dist_all_gather(
                    raw,
                    input.as_ptr() as *mut c_void,
                    ptrs.as_ptr(),
                    ptrs.len(),
                    err,
                )
            }
        })?;
        Ok(outs)
    }

    /// The sum of `tensor` over the ranks into rank `root`'s `tensor`, in place (the others'
    /// values are left unspecified: Gloo may use them as scratch).
    pub fn reduce_sum(&self, tensor: &Tensor, root: usize) -> Result<(), DistError> {
        check_device(tensor.device())?;
        let t = tensor.f_contiguous()?;
        self.call("reduce", |raw, err| {
            // SAFETY: t is a live at::Tensor for the call.
            unsafe {
                ffi::swift_dist_reduce_sum(raw, t.as_ptr() as *mut c_void, root as c_int, err)
            }
        })?;
        if t.data_ptr() != tensor.data_ptr() {
            tensor.shallow_clone().f_copy_(&t)?;
        }
        Ok(())
    }

    /// Every rank's `tensor`, in rank order, on rank `root` only (the others get an empty list).
    pub fn gather(&self, tensor: &Tensor, root: usize) -> Result<Vec<Tensor>, DistError> {
        check_device(tensor.device())?;
        let input = tensor.f_contiguous()?;
        let outs: Vec<Tensor> = if self.env.rank == root {
            (0..self.env.world)
                .map(|_| input.f_empty_like())
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let ptrs: Vec<*mut c_void> = outs.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        self.call("gather", |raw, err| {
            // SAFETY: input and outs stay alive for the call.
            unsafe {
                ffi::swift_dist_gather(
                    raw,
                    input.as_ptr() as *mut c_void,
                    ptrs.as_ptr(),
                    ptrs.len(),
                    root as c_int,
                    err,
                )
            }
        })?;
        Ok(outs)
    }

    /// The sum over the ranks of chunk `rank` of `input` (a 1-D tensor of `world × n`
    /// elements, chunk `r` being elements `[r·n, (r+1)·n)`). ZeRO-2 reduces each gradient
    /// into its owner's instead ([`ProcessGroup::reduce_sum`]), which copies nothing.
    pub fn reduce_scatter_sum(&self, input: &Tensor) -> Result<Tensor, DistError> {
        check_device(input.device())?;
        let input = input.f_contiguous()?;
        let total = input.numel() as i64;
        let world = self.env.world as i64;
        if input.dim() != 1 || total % world != 0 {
            return Err(DistError::Tensor(format!(
                "reduce-scatter takes a 1-D tensor of world × n elements, got shape {:?} for {world} ranks",
                input.size()
            )));
        }
        let output = input.f_new_empty([total / world], (input.kind(), input.device()))?;
        self.call("reduce-scatter", |raw, err| {
            // SAFETY: input and output stay alive for the call.
            unsafe {
                ffi::swift_dist_reduce_scatter_sum(
                    raw,
                    output.as_ptr() as *mut c_void,
                    input.as_ptr() as *mut c_void,
                    err,
                )
            }
        })?;
        Ok(output)
    }

    /// Waits until every rank reaches this point.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: raw is the live group.
        self.call("barrier", |raw, err| unsafe {
            ffi::swift_dist_barrier(raw, err)
        })
    }
}

/// Frees `t`'s gradient (undefined afterwards; tch can only zero it): ZeRO-2 keeps the
/// gradients of its own shard only. No collective.
pub fn drop_grad(t: &Tensor) -> Result<(), DistError> {
    let mut err = std::ptr::null_mut();
    // SAFETY: t is a live at::Tensor for the call; err receives a malloc'd message.
    if unsafe { ffi::swift_dist_drop_grad(t.as_ptr() as *mut c_void, &mut err) } != 0 {
        return Err(DistError::Tensor(take_error(err)));
    }
    Ok(())
}

static GROUP: OnceLock<ProcessGroup> = OnceLock::new();

/// Joins the process group of this launch (from the environment) once per process; `None` when
/// the process runs alone. A second call returns the group the first joined.
pub fn init(timeout: Duration) -> Result<Option<&'static ProcessGroup>, DistError> {
    if let Some(g) = GROUP.get() {
        return Ok(Some(g));
    }
    let Some(env) = DistEnv::from_env()? else {
        return Ok(None);
    };
    let group = ProcessGroup::join(env, timeout)?;
    Ok(Some(GROUP.get_or_init(|| group)))
}

/// The group [`init`] joined, if any.
pub fn current() -> Option<&'static ProcessGroup> {
    GROUP.get()
}

/// Whether this process writes the run's files (logs, charts, checkpoints): rank 0, or a
/// process running alone.
pub fn is_writer() -> bool {
    current().is_none_or(|g| g.rank() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Option<DistEnv>, DistError> {
        let map: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn the_environment_is_read_and_checked() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        let e = env(&[("WORLD_SIZE", "2"), ("RANK", "1")]).unwrap().unwrap();
        assert_eq!((e.rank, e.world, e.local_rank), (1, 2, 1));
        assert_eq!(
            (e.master_addr.as_str(), e.master_port),
            ("127.0.0.1", 29500)
        );
        assert!(!e.hosts_store);
        let e = env(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert!(!e.hosts_store, "torchrun's agent hosts the store");
        let msg = |v: &[(&str, &str)]| env(v).unwrap_err().to_string();
        assert!(msg(&[("WORLD_SIZE", "2")]).contains("RANK is not set"));
        assert!(msg(&[("WORLD_SIZE", "2"), ("RANK", "2")]).contains("(0..=1)"));
        assert!(msg(&[("WORLD_SIZE", "x")]).contains("WORLD_SIZE=\"x\""));
        assert!(
            msg(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "0")]).contains("1..=65535")
        );
    }
}
