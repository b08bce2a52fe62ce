//! The one training loop (`swift_train::train`) on a toy objective without a model: resuming
//! repeats the uninterrupted run, evaluation (even one that draws from libtorch's generator)
//! changes nothing of the training, learning-rate factors and LISA act on the named tensors,
//! checkpoints rotate, and a loss that is not finite stops the run. The tests share libtorch's
//! global generator, so they take turns ([`LOCK`]); they live in their own test binary so that
//! the library's unit tests cannot draw from it meanwhile.

use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Map, Value};
use swift_train::optim::OptimizerSetting;
use swift_train::schedule::ScheduleKind;
use swift_train::trainer::LisaConfig;
use swift_train::{
    train, Objective, RunDir, StepInfo, StepOutput, TrainConfig, TrainError, TrainHooks,
    TrainSummary,
};
use tch::{Kind, Tensor};

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The built-in `adamw` (betas 0.9/0.999, eps 1e-8, no weight decay).
fn adamw() -> OptimizerSetting {
    OptimizerSetting {
        name: "adamw".into(),
        options: json!({"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8, "weight_decay": 0.0}),
        kind: swift_plugin_optimizers::kind("adamw").expect("adamw"),
    }
}

fn cfg(batch: usize, accum: usize, shuffle: bool) -> TrainConfig {
    TrainConfig {
        learning_rate: 1e-4,
        lr_scheduler: ScheduleKind::Constant,
        warmup_ratio: 0.0,
        warmup_steps: None,
        num_train_epochs: 1.0,
        max_steps: None,
        batch_size: batch,
        grad_accum: accum,
        max_grad_norm: 1.0,
        optimizer: adamw(),
        seed: 42,
        shuffle,
        logging_steps: 1,
        save_steps: 0,
        save_total_limit: None,
        pad_id: 0,
        lr_factors: Vec::new(),
        lisa: None,
        resume_from: None,
        eval_steps: 0,
        eval_on_start: false,
        rows_per_pass: 0,
        max_pass_tokens: 0,
        packing: None,
        gradient_checkpointing: false,
        zero: None,
    }
}

/// A toy objective without a model: units are target vectors, the loss of a micro-batch is
/// the mean of ‖w₀ + w₁ − t‖² times a random factor drawn from libtorch's generator (the
/// stand-in for dropout), and evaluation draws from the generator too, so the tests see
/// whether the loop's seeding keeps steps independent of what ran before them.
struct Toy {
    w: Vec<Tensor>,
    targets: Vec<Tensor>,
    eval: Vec<Tensor>,
    loss_scale: f64,
}

impl Toy {
    fn new(units: usize, eval: usize) -> (Self, Vec<(String, Tensor)>) {
        let opts = (Kind::Float, tch::Device::Cpu);
        let w: Vec<Tensor> = (0..2)
            .map(|_| Tensor::zeros([4], opts).set_requires_grad(true))
            .collect();
        let t = |i: usize| Tensor::full([4], i as f64 * 0.25 - 1.0, opts);
        let trainable = vec![
            ("model.layers.0.w".to_string(), w[0].shallow_clone()),
            ("model.layers.1.w".to_string(), w[1].shallow_clone()),
        ];
        let toy = Toy {
            w,
            targets: (0..units).map(t).collect(),
            eval: (0..eval).map(|i| t(i * 3)).collect(),
            loss_scale: 1.0,
        };
        (toy, trainable)
    }

    fn loss_of(&self, t: &Tensor) -> Tensor {
        (&self.w[0] + &self.w[1] - t).square().sum(Kind::Float)
    }
}

impl Objective for Toy {
    type Window = (f64, u64);

    fn units(&self) -> usize {
        self.targets.len()
    }

    fn step(
        &mut self,
        _step: u64,
        micro: &[Vec<usize>],
    ) -> Result<StepOutput<(f64, u64)>, TrainError> {
        let mut loss = 0.0;
        for idx in micro {
            for &k in idx {
                let noise = Tensor::rand([1], (Kind::Float, tch::Device::Cpu)).sum(Kind::Float);
                let l = self.loss_of(&self.targets[k]) * (noise * 0.2 + 0.9) * self.loss_scale
                    / (idx.len() * micro.len()) as f64;
                loss += f64::try_from(&l)?;
                l.f_backward()?;
            }
        }
        Ok(StepOutput {
            loss,
            tokens: 4,
            units: micro.iter().map(Vec::len).sum(),
            window: (loss, 1),
        })
    }

    fn merge(&self, into: &mut (f64, u64), step: &(f64, u64)) {
        into.0 += step.0;
        into.1 += step.1;
    }

    fn metrics(&self, w: &(f64, u64)) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("loss".into(), json!(w.0 / w.1.max(1) as f64));
        m
    }

    fn has_validation(&self) -> bool {
        !self.eval.is_empty()
    }

    fn evaluate(&mut self) -> Result<Map<String, Value>, TrainError> {
        let _g = tch::no_grad_guard();
        // Draws from the generator, as a careless evaluation might.
        let _ = Tensor::rand([16], (Kind::Float, tch::Device::Cpu));
        let sum: f64 = self
            .eval
            .iter()
            .map(|t| f64::try_from(self.loss_of(t)).unwrap())
            .sum();
        let mut m = Map::new();
        m.insert("loss".into(), json!(sum / self.eval.len() as f64));
        Ok(m)
    }
}

struct NoHooks(Vec<bool>);

impl TrainHooks for NoHooks {
    fn on_step(&mut self, _info: &StepInfo) {}
    fn save(&mut self, _step: u64, _dir: &Path) -> Result<(), TrainError> {
        Ok(())
    }
    fn set_training(&mut self, on: bool) {
        self.0.push(on);
    }
}

fn records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("logging.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn losses(recs: &[Value]) -> Vec<(u64, f64)> {
    recs.iter()
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get("loss")?.as_f64()?)))
        .collect()
}

fn toy_run(
    dir: &Path,
    eval: usize,
    cfg: &TrainConfig,
) -> Result<(TrainSummary, Vec<bool>), TrainError> {
    let (mut toy, trainable) = Toy::new(7, eval);
    let mut run = RunDir::open(dir, false, true).unwrap();
    let mut hooks = NoHooks(Vec::new());
    let s = train(&mut toy, &trainable, cfg, &mut run, &mut hooks)?;
    Ok((s, hooks.0))
}

fn toy_cfg() -> TrainConfig {
    TrainConfig {
        max_steps: Some(8),
        learning_rate: 0.05,
        max_grad_norm: 0.0,
        ..cfg(2, 1, true)
    }
}

#[test]
fn validation_changes_nothing_of_training_and_is_logged_when_asked() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let plain = toy_run(&tmp.path().join("plain"), 0, &toy_cfg()).unwrap().0;
    let cfg = TrainConfig {
        eval_steps: 3,
        eval_on_start: true,
        ..toy_cfg()
    };
    let (with_eval, training) = toy_run(&tmp.path().join("eval"), 2, &cfg).unwrap();
    assert_eq!(
        plain.losses, with_eval.losses,
        "evaluation changed the training"
    );
    assert_eq!(
        training,
        [false, true].repeat(4),
        "dropout off around each evaluation"
    );
    let recs = records(&tmp.path().join("eval"));
    let evals: Vec<(u64, f64)> = recs
        .iter()
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("eval_loss")?.as_f64()?)))
        .collect();
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 3, 6, 8]);
    // At step 0 the weights are zero: the mean of ‖t‖² over the validation targets.
    let want = [0, 3]
        .iter()
        .map(|&i| 4.0 * (i as f64 * 0.25 - 1.0).powi(2))
        .sum::<f64>()
        / 2.0;
    assert!((evals[0].1 - want).abs() < 1e-6, "{evals:?}");
    assert!(evals[3].1 < evals[0].1, "{evals:?}");
}

#[test]
fn a_resumed_run_repeats_the_uninterrupted_one() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        save_steps: 3,
        ..toy_cfg()
    };
    let whole = toy_run(&tmp.path().join("whole"), 0, &cfg).unwrap().0;
    let ck3 = tmp.path().join("whole/checkpoint-3");
    assert!(ck3.join("trainer_state.json").is_file());
    assert!(ck3.join("optimizer.safetensors").is_file());
    let resumed = toy_run(
        &tmp.path().join("resumed"),
        0,
        &TrainConfig {
            resume_from: Some(ck3),
            ..cfg.clone()
        },
    )
    .unwrap()
    .0;
    // 7 units, batch 2: the epoch boundary (a reshuffle) is crossed after step 4.
    assert_eq!(&whole.losses[3..], &resumed.losses[..], "resumed losses");
    assert_eq!(
        losses(&records(&tmp.path().join("resumed")))
            .first()
            .map(|x| x.0),
        Some(4)
    );
    // The draws matter: another seed gives other losses.
    let other = toy_run(
        &tmp.path().join("other"),
        0,
        &TrainConfig {
            seed: 7,
            ..cfg.clone()
        },
    )
    .unwrap()
    .0;
    assert_ne!(other.losses, whole.losses);
    // Rotation keeps the newest checkpoints.
    let rotated = tmp.path().join("rotated");
    toy_run(
        &rotated,
        0,
        &TrainConfig {
            save_total_limit: Some(2),
            ..cfg
        },
    )
    .unwrap();
    let mut kept: Vec<String> = std::fs::read_dir(&rotated)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    kept.sort();
    assert_eq!(kept, ["checkpoint-6", "checkpoint-8"]);
}

#[test]
fn lr_factors_and_lisa_act_on_the_named_tensors() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        max_steps: Some(1),
        lr_factors: vec![(".layers.1.".into(), 4.0)],
        ..toy_cfg()
    };
    let (mut toy, trainable) = Toy::new(7, 0);
    let mut run = RunDir::open(tmp.path(), false, true).unwrap();
    train(
        &mut toy,
        &trainable,
        &cfg,
        &mut run,
        &mut NoHooks(Vec::new()),
    )
    .unwrap();
    let norm = |t: &Tensor| f64::try_from(t.norm()).unwrap();
    let ratio = norm(&trainable[1].1) / norm(&trainable[0].1);
    assert!((ratio - 4.0).abs() < 1e-4, "{ratio}");

    let dir = tmp.path().join("lisa");
    let cfg = TrainConfig {
        max_steps: Some(2),
        lisa: Some(LisaConfig {
            activated_layers: 1,
            step_interval: 10,
        }),
        ..toy_cfg()
    };
    let (mut toy, trainable) = Toy::new(7, 0);
    let mut run = RunDir::open(&dir, false, true).unwrap();
    train(
        &mut toy,
        &trainable,
        &cfg,
        &mut run,
        &mut NoHooks(Vec::new()),
    )
    .unwrap();
    let active = records(&dir)[0]["lisa_layers"].as_array().unwrap()[0]
        .as_u64()
        .unwrap() as usize;
    for (k, (_, t)) in trainable.iter().enumerate() {
        assert_eq!(norm(t) > 0.0, k == active, "layer {k}, active {active}");
    }
}

#[test]
fn a_loss_that_is_not_finite_stops_the_run() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let (mut toy, trainable) = Toy::new(7, 0);
    toy.loss_scale = f64::NAN;
    let mut run = RunDir::open(tmp.path(), false, true).unwrap();
    let e = train(
        &mut toy,
        &trainable,
        &toy_cfg(),
        &mut run,
        &mut NoHooks(Vec::new()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("step 1: the loss is NaN (try a lower --learning_rate)"),
        "{e}"
    );
}
