//! Two processes on loopback form a Gloo group through c10d and check every collective against
//! hand-computed values; then one rank dies and the other's next collective fails naming it.
//! The test runs its own executable again as the ranks (`SWIFT_DIST_TEST_ROLE`).

use std::process::Command;
use std::time::{Duration, Instant};

use swift_dist::{DistEnv, ProcessGroup};
use tch::{Kind, Tensor};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

fn join() -> ProcessGroup {
    let env = DistEnv::from_env().expect("env").expect("WORLD_SIZE=2");
    ProcessGroup::join(env, Duration::from_secs(20)).expect("join")
}

fn collectives() {
    let g = join();
    let r = g.rank() as f64;
    // all-reduce: ranks hold [1, 10, 100]·(r+1) and [r]; the sums are [3, 30, 300] and [1].
    let a = Tensor::from_slice(&[1.0f32, 10.0, 100.0]) * (r + 1.0);
    let b = Tensor::from_slice(&[g.rank() as i64]);
    let c = Tensor::from_slice(&[0.5f32, 2.0]).reshape([2, 1]) * (r + 1.0);
    g.all_reduce_sum(&[a.shallow_clone(), b.shallow_clone(), c.shallow_clone()])
        .expect("all-reduce");
    assert_eq!(Vec::<f32>::try_from(&a).unwrap(), vec![3.0, 30.0, 300.0]);
    assert_eq!(Vec::<i64>::try_from(&b).unwrap(), vec![1]);
    assert_eq!(c.size(), vec![2, 1]);
    assert_eq!(
        Vec::<f32>::try_from(&c.reshape([-1])).unwrap(),
        vec![1.5, 6.0]
    );
    // mean: (2 + 4) / 2.
    let m = Tensor::from_slice(&[2.0f64 * (r + 1.0)]);
    g.all_reduce_mean(std::slice::from_ref(&m)).expect("mean");
    assert_eq!(Vec::<f64>::try_from(&m).unwrap(), vec![3.0]);
    assert_eq!(g.sum_f64(&[r, 1.0]).unwrap(), vec![1.0, 2.0]);
    // broadcast from rank 1: [7, 8] everywhere.
    let t = if g.rank() == 1 {
        Tensor::from_slice(&[7.0f32, 8.0])
    } else {
        Tensor::zeros([2], (Kind::Float, tch::Device::Cpu))
    };
    g.broadcast(&t, 1).expect("broadcast");
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![7.0, 8.0]);
    // all-gather: [[0, 0], [1, 2]].
    let mine = Tensor::from_slice(&[r as i64, 2 * r as i64]);
    let all = g.all_gather(&mine).expect("all-gather");
    let got: Vec<Vec<i64>> = all
        .iter()
        .map(|t| Vec::<i64>::try_from(t).unwrap())
        .collect();
    assert_eq!(got, vec![vec![0, 0], vec![1, 2]]);
    // gather to rank 1: [[0, 0], [1, 2]] there, nothing on rank 0.
    let got = g.gather(&mine, 1).expect("gather");
    let got: Vec<Vec<i64>> = got
        .iter()
        .map(|t| Vec::<i64>::try_from(t).unwrap())
        .collect();
    if g.rank() == 1 {
        assert_eq!(got, vec![vec![0, 0], vec![1, 2]]);
    } else {
        assert!(got.is_empty());
    }
    // reduce to rank 0: [1, 2]·(r+1) sums to [3, 6] there.
    let red = Tensor::from_slice(&[1.0f32, 2.0]) * (r + 1.0);
    g.reduce_sum(&red, 0).expect("reduce");
    if g.rank() == 0 {
        assert_eq!(Vec::<f32>::try_from(&red).unwrap(), vec![3.0, 6.0]);
    }
    // reduce-scatter: ranks hold [1, 2, 3, 4]·(r+1); chunk r of the sum [3, 6, 9, 12].
    let rs = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]) * (r + 1.0);
    let mine = g.reduce_scatter_sum(&rs).expect("reduce-scatter");
    let want = if g.rank() == 0 {
        [3.0, 6.0]
    } else {
        [9.0, 12.0]
    };
    assert_eq!(Vec::<f32>::try_from(&mine).unwrap(), want.to_vec());
    assert!(g
        .reduce_scatter_sum(&Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)))
        .is_err());
    // drop_grad frees a gradient (tch can only zero one).
    let w = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
    (&w * 2.0).sum(Kind::Float).backward();
    assert!(w.grad().defined());
    swift_dist::drop_grad(&w).expect("drop");
    assert!(!w.grad().defined());
    g.barrier().expect("barrier");
    println!("rank {} ok", g.rank());
}

fn one_dies() {
    let g = join();
    g.barrier().expect("barrier");
    if g.rank() == 1 {
        // Dies without a word, as a killed process would.
        std::process::exit(9);
    }
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let err = g
        .all_reduce_sum(&[Tensor::from_slice(&[1.0f32])])
        .expect_err("the peer is gone");
    let msg = err.to_string();
    assert!(msg.contains("rank 1 stopped"), "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    println!("rank 0 saw: {msg}");
}

fn run_pair(role: &str, expect_ok: [bool; 2]) {
    let exe = std::env::current_exe().expect("own path");
    let port = free_port().to_string();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .env("SWIFT_DIST_TEST_ROLE", role)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("OMP_NUM_THREADS", "1")
                .spawn()
                .expect("spawn a rank")
        })
        .collect();
    for (rank, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.success(),
            expect_ok[rank],
            "{role}: rank {rank} ended with {:?}",
            out.status
        );
    }
}

fn main() {
    match std::env::var("SWIFT_DIST_TEST_ROLE").as_deref() {
        Ok("collectives") => collectives(),
        Ok("one_dies") => one_dies(),
        Ok(other) => panic!("unknown role {other}"),
        Err(_) => {
            let t = Instant::now();
            run_pair("collectives", [true, true]);
            run_pair("one_dies", [true, false]);
            println!("two_ranks: ok in {:.1}s", t.elapsed().as_secs_f64());
        }
    }
}
