//! ms-swift's launch variables for the training commands: with `NPROC_PER_NODE` (or `NNODES`)
//! set and no `RANK`, `swift pt|sft|rlhf` starts its local ranks itself, as ms-swift hands
//! them to torchrun: `NPROC_PER_NODE` processes running the same command line, with `RANK`
//! (`NODE_RANK × NPROC_PER_NODE + local rank`), `LOCAL_RANK`, `WORLD_SIZE`
//! (`NNODES × NPROC_PER_NODE`), `LOCAL_WORLD_SIZE`, `GROUP_RANK`, `MASTER_ADDR` (default
//! 127.0.0.1), `MASTER_PORT` (default 29500) and, unless set, `OMP_NUM_THREADS=1` (as torchrun)
//! and, for ranks other than 0, `SWIFT_LOG_LEVEL=warn` (rank 0 tells the run).
//! The ranks then meet through swift-dist (the tensor engine). This process only waits: when a
//! rank fails, the others get a few seconds to end on their own (each names the rank that
//! stopped), then are killed, and the error names the rank that failed first.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The launch asked for, or `None` when this process is a rank itself or runs alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub nproc_per_node: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl Launch {
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        if var("RANK").is_some() {
            return Ok(None);
        }
        let nproc = var("NPROC_PER_NODE");
        let nnodes = var("NNODES");
        if nproc.is_none() && nnodes.is_none() {
            return Ok(None);
        }
        let count = |k: &str, v: Option<String>, default: usize| -> Result<usize> {
            match v {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .with_context(|| format!("{k}={v:?} is not a whole number of 1 or more")),
            }
        };
        let nproc_per_node = count("NPROC_PER_NODE", nproc, 1)?;
        let nnodes = count("NNODES", nnodes, 1)?;
        let node_rank = match var("NODE_RANK") {
            None => 0,
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .with_context(|| format!("NODE_RANK={v:?} is not a whole number"))?,
        };
        if node_rank >= nnodes {
            bail!(
                "NODE_RANK={node_rank} is out of range for NNODES={nnodes} (0..={})",
                nnodes - 1
            );
        }
        let master_port = match var("MASTER_PORT") {
            None => 29500,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .with_context(|| format!("MASTER_PORT={p:?} is not a port (1..=65535)"))?,
        };
        Ok(Some(Self {
            nproc_per_node,
            nnodes,
            node_rank,
            master_addr: var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
        }))
    }

    fn world(&self) -> usize {
        self.nproc_per_node * self.nnodes
    }
}

/// Whether this process is a rank other than 0 of a launch of several (`RANK` > 0 and
/// `WORLD_SIZE` > 1, as torchrun, Slurm or PyTorchJob set them): it then logs warnings and
/// errors only unless a level is given, as the ranks `swift` starts itself do.
pub fn is_follower_rank() -> bool {
    let num = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    matches!((num("RANK"), num("WORLD_SIZE")), (Some(r), Some(w)) if w > 1 && r > 0)
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended ({status})"),
    }
}

/// Starts the local ranks running this same command line and waits for them; returns the exit
/// status for this process.
pub fn run(launch: &Launch) -> Result<u8> {
    let exe =
        std::env::current_exe().context("cannot find the swift executable to start the ranks")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let world = launch.world();
    tracing::info!(
        "starting {} local ranks of {world} (node {} of {}), rendezvous at {}:{}",
        launch.nproc_per_node,
        launch.node_rank,
        launch.nnodes,
        launch.master_addr,
        launch.master_port
    );
    let mut children: Vec<(usize, Child)> = Vec::new();
    for local in 0..launch.nproc_per_node {
        let rank = launch.node_rank * launch.nproc_per_node + local;
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_WORLD_SIZE", launch.nproc_per_node.to_string())
            .env("GROUP_RANK", launch.node_rank.to_string())
            .env("MASTER_ADDR", &launch.master_addr)
            .env("MASTER_PORT", launch.master_port.to_string());
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env("OMP_NUM_THREADS", "1");
        }
        if rank != 0 && std::env::var_os("SWIFT_LOG_LEVEL").is_none() {
            // Rank 0 tells the run; the others speak up for warnings and errors only (a
            // `--log_level` flag still wins).
            cmd.env("SWIFT_LOG_LEVEL", "warn");
        }
        match cmd.spawn() {
            Ok(child) => children.push((rank, child)),
            Err(e) => {
                for (_, c) in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(e).with_context(|| format!("cannot start rank {rank}"));
            }
        }
    }
    let mut failed: Option<(usize, u32, ExitStatus)> = None;
    let mut failed_at = Instant::now();
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            let (rank, child) = &mut children[i];
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() && failed.is_none() {
                        failed = Some((*rank, child.id(), status));
                        failed_at = Instant::now();
                    }
                    children.remove(i);
                }
                Ok(None) => i += 1,
                Err(e) => return Err(e).context("cannot wait for a rank"),
            }
        }
        if failed.is_some() && failed_at.elapsed() > Duration::from_secs(5) {
            // The others had their chance to end (and name the rank) themselves.
            for (_, c) in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            children.clear();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match failed {
        None => Ok(0),
        Some((rank, pid, status)) => {
            eprintln!(
                "error: rank {rank} (pid {pid}) {}; the other local ranks were ended",
                describe(status)
            );
            Ok(status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(1)
                .max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let map: std::collections::HashMap<&str, &str> = vars.iter().copied().collect();
        Launch::from_vars(|k| map.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn the_launch_variables_are_read_and_checked() {
        assert_eq!(launch(&[]).unwrap(), None);
        assert_eq!(
            launch(&[("NPROC_PER_NODE", "2"), ("RANK", "0")]).unwrap(),
            None,
            "a rank does not launch again"
        );
        let l = launch(&[("NPROC_PER_NODE", "2"), ("NNODES", "2"), ("NODE_RANK", "1")])
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.nproc_per_node, l.nnodes, l.node_rank, l.world()),
            (2, 2, 1, 4)
        );
        assert_eq!(
            (l.master_addr.as_str(), l.master_port),
            ("127.0.0.1", 29500)
        );
        let err = |v: &[(&str, &str)]| launch(v).unwrap_err().to_string();
        assert!(err(&[("NPROC_PER_NODE", "0")]).contains("NPROC_PER_NODE=\"0\""));
        assert!(err(&[("NNODES", "2"), ("NODE_RANK", "2")]).contains("(0..=1)"));
        assert!(err(&[("NPROC_PER_NODE", "2"), ("MASTER_PORT", "x")]).contains("1..=65535"));
    }
}
