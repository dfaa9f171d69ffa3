//! Pretrained backbones as encoders (`model.visual_encoder = "torchscript:PATH"`): modules built
//! here in Rust — traced (weights as graph constants: they serve frozen) or written as a
//! TorchScript archive with parameters, as `torch.jit.save` lays one out — loaded by the
//! learner in each training mode, refused with a reason when they cannot serve, exported from a
//! checkpoint, and run by the daemon end to end.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{make_clip, novelstream, Broker, Daemon};
use novelstream::assign::Assigner;
use novelstream::config::{EncoderInput, EncoderSource, EncoderTraining, ModelConfig, NovelClusters, TrainConfig};
use novelstream::decode::spans;
use novelstream::decode::Window;
use novelstream::model::Input;
use novelstream::sink::Assignment;
use novelstream::tools::read_topic;
use novelstream::train::{checkpoint, fingerprint::fingerprint, Learner};
use tch::{nn, nn::Module, CModule, Device, Kind, Tensor};

/// Width of `z` the test modules give.
const WIDTH: i64 = 12;

/// A traced module: `pool` of its input (of `example`'s shape), a linear layer from `inputs` to
/// `WIDTH` features, then `tail`.
fn traced_module(
    path: &Path,
    example: &[i64],
    inputs: i64,
    pool: impl Fn(&Tensor) -> Tensor,
    tail: impl Fn(Tensor) -> Tensor,
) {
    tch::manual_seed(0);
    let mut vars = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vars.root() / "fc", inputs, WIDTH, Default::default());
    vars.freeze();
    let example = Tensor::rand(example, (Kind::Float, Device::Cpu));
    CModule::create_by_tracing("Probe", "forward", &[example], &mut |x| vec![tail(linear.forward(&pool(&x[0])))])
        .unwrap()
        .save(path)
        .unwrap();
}

/// 4×4 average pooling of `[N, C, H, W]`, flattened.
fn pooled(x: &Tensor) -> Tensor {
    x.adaptive_avg_pool2d([4, 4]).flatten(1, -1)
}

/// A traced module: `[N, 3, H, W]` → 4×4 average pooling → linear → `[N, WIDTH]`, or whatever
/// `tail` makes of that (to build bad modules).
fn traced(path: &Path, tail: impl Fn(Tensor) -> Tensor) {
    traced_module(path, &[2, 3, 16, 16], 48, pooled, tail);
}

/// A TorchScript archive (a zip of `data.pkl`, `code/__torch__.py`, `constants.pkl`,
/// `data/<n>` and `version`) of a module with parameters `block0_*` and `block1_*`:
/// `[N, 3, H, W]` → 4×4 pooling → linear 48→16, ReLU → linear 16→`WIDTH`.
fn scripted(path: &Path) {
    tch::manual_seed(1);
    let opts = (Kind::Float, Device::Cpu);
    let params = [
        ("block0_weight", Tensor::randn([16, 48], opts) * 0.2),
        ("block0_bias", Tensor::zeros([16], opts)),
        ("block1_weight", Tensor::randn([WIDTH, 16], opts) * 0.3),
        ("block1_bias", Tensor::zeros([WIDTH], opts)),
    ];
    let names: String = params.iter().map(|(n, _)| format!("\"{n}\", ")).collect();
    let fields: String = params.iter().map(|(n, _)| format!("  {n} : Tensor\n")).collect();
    let source = format!(
        "class Probe(Module):\n  __parameters__ = [{names}]\n  __buffers__ = []\n{fields}  training : bool\n\
         \x20 def forward(self: __torch__.Probe,\n    x: Tensor) -> Tensor:\n\
         \x20   h = torch.flatten(torch.adaptive_avg_pool2d(x, [4, 4]), 1)\n\
         \x20   h = torch.relu(torch.linear(h, self.block0_weight, self.block0_bias))\n\
         \x20   return torch.linear(h, self.block1_weight, self.block1_bias)\n"
    );
    let mut pickle = Pickle(vec![0x80, 2]);
    pickle.global("__torch__", "Probe");
    pickle.0.extend([b')', 0x81, b'}', b'(']); // EMPTY_TUPLE NEWOBJ EMPTY_DICT MARK
    pickle.string("training");
    pickle.0.push(0x89); // NEWFALSE
    let mut records = Vec::new();
    for (key, (name, tensor)) in params.iter().enumerate() {
        pickle.string(name);
        pickle.tensor(key, tensor);
        let values = Vec::<f32>::try_from(tensor.flatten(0, -1)).unwrap();
        records.push((format!("data/{key}"), values.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    pickle.0.extend([b'u', b'b', b'.']); // SETITEMS BUILD STOP
    records.push(("data.pkl".into(), pickle.0));
    records.push(("code/__torch__.py".into(), source.into_bytes()));
    records.push(("constants.pkl".into(), vec![0x80, 2, b')', b'.']));
    records.push(("version".into(), b"3\n".to_vec()));
    std::fs::write(path, stored_zip(&records)).unwrap();
}

/// The pickle protocol 2 opcodes TorchScript's unpickler reads.
struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").bytes());
    }

    fn string(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.bytes());
    }

    fn int(&mut self, v: i64) {
        self.0.push(b'J');
        self.0.extend((v as i32).to_le_bytes());
    }

    fn ints(&mut self, values: &[i64]) {
        self.0.push(b'(');
        values.iter().for_each(|&v| self.int(v));
        self.0.push(b't');
    }

    /// `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, True, OrderedDict())`, the
    /// storage a persistent id naming record `data/<key>`.
    fn tensor(&mut self, key: usize, tensor: &Tensor) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.0.push(b'(');
        self.0.push(b'(');
        self.string("storage");
        self.global("torch", "FloatStorage");
        self.string(&key.to_string());
        self.string("cpu");
        self.int(tensor.numel() as i64);
        self.0.extend([b't', b'Q']); // TUPLE BINPERSID
        self.int(0);
        self.ints(&tensor.size());
        self.ints(&tensor.stride());
        self.0.push(0x88); // NEWTRUE: requires_grad
        self.global("collections", "OrderedDict");
        self.0.extend([b')', b'R', b't', b'R']); // EMPTY_TUPLE REDUCE TUPLE REDUCE
    }
}

/// A zip archive of `records` under `archive/`, stored without compression.
fn stored_zip(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in records {
        let name = format!("archive/{name}");
        let (offset, crc, size) = (out.len() as u32, crc32fast::hash(data), data.len() as u32);
        let common = |header: &mut Vec<u8>| {
            header.extend([20u8, 0, 0, 0, 0, 0, 0, 0, 0x21, 0]); // version 2.0, flags, stored, time, date
            header.extend(crc.to_le_bytes());
            header.extend(size.to_le_bytes());
            header.extend(size.to_le_bytes());
            header.extend((name.len() as u16).to_le_bytes());
            header.extend([0u8, 0]); // extra
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend(name.bytes());
        out.extend(data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend([20u8, 0]); // made by
        common(&mut central);
        central.extend([0u8; 8]); // comment, disk, internal and external attributes (0)
        central.extend([0u8; 2]);
        central.extend(offset.to_le_bytes());
        central.extend(name.bytes());
    }
    let (start, length) = (out.len() as u32, central.len() as u32);
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((records.len() as u16).to_le_bytes());
    out.extend((records.len() as u16).to_le_bytes());
    out.extend(length.to_le_bytes());
    out.extend(start.to_le_bytes());
    out.extend([0u8; 2]);
    out
}

/// A small open-world visual model on the module at `path`, reading 16×16 frames.
fn model(path: &Path, training: EncoderTraining, prefixes: &[&str]) -> ModelConfig {
    ModelConfig {
        known_classes: vec!["a".into(), "b".into()],
        novel_clusters: NovelClusters::Fixed(2),
        visual_encoder: EncoderSource::TorchScript(path.to_path_buf()),
        encoder_training: training,
        fine_tune_prefix: prefixes.iter().map(|p| p.to_string()).collect(),
        visual_input: EncoderInput { size: vec![16, 16], mean: vec![0.5], std: vec![0.25], ..Default::default() },
        projection_dim: 8,
        ..Default::default()
    }
}

fn train_config() -> TrainConfig {
    TrainConfig { batch_size: 4, bank_size: 16, ..Default::default() }
}

/// Five steps on random 12×12 frames (resized to the module's 16×16); the learner's state
/// before and after, by name.
fn train(learner: &mut Learner) -> (State, State) {
    let opts = (Kind::Float, Device::Cpu);
    let frames = |n| Input { frames: Some(Tensor::rand([n, 2, 3, 12, 12], opts)), mel: None };
    let before = learner.state().2;
    for _ in 0..5 {
        learner.step(&frames(4), &Tensor::from_slice(&[0i64, 1, 0, 1]), &frames(4));
    }
    (before, learner.state().2)
}

/// A learner's state (what a checkpoint holds), by name.
type State = Vec<(String, Tensor)>;

fn moved(before: &[(String, Tensor)], after: &[(String, Tensor)], name: &str) -> bool {
    let find = |state: &[(String, Tensor)]| state.iter().find(|(n, _)| n == name).map(|(_, t)| t.copy());
    let (a, b) = (find(before).unwrap_or_else(|| panic!("{name} not in the state")), find(after).unwrap());
    a != b
}

/// A traced module serves frozen: `z` is as wide as its output, the heads train, and the
/// learner's state (what checkpoints hold) has nothing of the module; the checkpoint's
/// fingerprint holds the module file's.
#[test]
fn a_traced_module_serves_frozen_and_checkpoints_hold_no_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traced.pt");
    traced(&path, |z| z);
    let config = model(&path, EncoderTraining::Frozen, &[]);
    let mut learner = Learner::new(&config, &train_config(), Device::Cpu).unwrap();
    let (before, after) = train(&mut learner);
    assert!(moved(&before, &after, "online.known.weight") && moved(&before, &after, "online.proj_v.out.weight"));
    assert_eq!(learner.state().2.iter().find(|(n, _)| n == "online.novel.weight").unwrap().1.size(), [2, WIDTH]);
    let backbone: Vec<&String> = after.iter().map(|(n, _)| n).filter(|n| n.contains(".visual.")).collect();
    assert!(backbone.is_empty(), "{backbone:?}");
    let keys = fingerprint(&config, &train_config(), &Default::default());
    let file = keys.get("model.visual_encoder.file").expect("the module file is in the fingerprint");
    assert!(file.contains("crc32"), "{file}");
    // The built-in encoder's fingerprint has none of the TorchScript keys (older checkpoints
    // keep theirs).
    let builtin = fingerprint(&ModelConfig::default(), &train_config(), &Default::default());
    assert!(!builtin.keys().any(|k| k.contains("encoder") || k.contains("_input")), "{builtin:?}");
}

/// With parameters in the module, `last-block` trains those under the prefix and nothing else
/// of the module, `full` trains all; the momentum encoder averages them; the state holds what
/// trains, and a frozen load of the same module holds none of it.
#[test]
fn a_module_with_parameters_trains_what_encoder_training_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scripted.pt");
    scripted(&path);
    let block0 = "online.visual.script.block0_weight";
    let block1 = "online.visual.script.block1_weight";

    let mut last =
        Learner::new(&model(&path, EncoderTraining::LastBlock, &["block1"]), &train_config(), Device::Cpu).unwrap();
    let (before, after) = train(&mut last);
    assert!(moved(&before, &after, block1));
    assert!(!after.iter().any(|(n, _)| n == block0), "block0 is not trained, so not in the state");
    let online = after.iter().find(|(n, _)| n == block1).unwrap().1.copy();
    let ema = after.iter().find(|(n, _)| n == "ema.visual.script.block1_weight").unwrap().1.copy();
    assert!(online != ema, "the momentum encoder lags the online one");

    let mut full = Learner::new(&model(&path, EncoderTraining::Full, &[]), &train_config(), Device::Cpu).unwrap();
    let (before, after) = train(&mut full);
    assert!(moved(&before, &after, block0) && moved(&before, &after, block1));

    let mut frozen = Learner::new(&model(&path, EncoderTraining::Frozen, &[]), &train_config(), Device::Cpu).unwrap();
    let (_, after) = train(&mut frozen);
    assert!(!after.iter().any(|(n, _)| n.contains(".script.")));
}

/// A TorchScript audio encoder reads the log-mel spectrogram `[N, 1, 64, F]` resized to
/// `model.audio_input.size`, beside the built-in visual encoder: `z = [z_v; z_a]` is as wide as
/// both, and the audio projection trains on the module's features.
#[test]
fn a_module_serves_as_the_audio_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audio.pt");
    traced_module(&path, &[2, 1, 32, 32], 16, pooled, |z| z);
    let config = ModelConfig {
        modality: novelstream::config::Modality::Both,
        channels: vec![8],
        audio_encoder: EncoderSource::TorchScript(path.clone()),
        audio_input: EncoderInput { size: vec![32, 32], mean: vec![-4.0], std: vec![2.0], ..Default::default() },
        visual_encoder: EncoderSource::Builtin,
        ..model(&path, EncoderTraining::Frozen, &[])
    };
    let mut learner = Learner::new(&config, &train_config(), Device::Cpu).unwrap();
    let opts = (Kind::Float, Device::Cpu);
    let windows = |n| Input {
        frames: Some(Tensor::rand([n, 2, 3, 12, 12], opts)),
        mel: Some(Tensor::randn([n, 1, 64, 98], opts)),
    };
    let before = learner.state().2;
    for _ in 0..3 {
        learner.step(&windows(4), &Tensor::from_slice(&[0i64, 1, 0, 1]), &windows(4));
    }
    let after = learner.state().2;
    assert!(moved(&before, &after, "online.proj_a.out.weight") && moved(&before, &after, "online.visual.stem.weight"));
    let novel = after.iter().find(|(n, _)| n == "online.novel.weight").unwrap();
    assert_eq!(novel.1.size(), [2, 8 + WIDTH], "z = [z_v; z_a]");
    assert!(!after.iter().any(|(n, _)| n.starts_with("online.audio.")), "nothing of the frozen module");
}

/// A module trained on grayscale images reads one channel: with `grayscale` the frames become
/// their luminance; without it the module is refused at start.
#[test]
fn a_grayscale_module_reads_luminance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gray.pt");
    // The channel count is part of the traced graph: 3 channels fail the linear layer.
    traced_module(&path, &[2, 1, 16, 16], 16, pooled, |z| z);
    let rgb = model(&path, EncoderTraining::Frozen, &[]);
    let e = Learner::new(&rgb, &train_config(), Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("failed on a probe input of shape [2, 3, 16, 16]"), "{e}");
    let gray = ModelConfig { visual_input: EncoderInput { grayscale: true, ..rgb.visual_input.clone() }, ..rgb };
    let mut learner = Learner::new(&gray, &train_config(), Device::Cpu).unwrap();
    let (before, after) = train(&mut learner);
    assert!(moved(&before, &after, "online.known.weight"));
}

/// A video backbone reads a window's frames as one clip `[N, 3, T, H, W]`
/// (`model.visual_input.stack_frames = T`): the learner trains on it, and a frame-order
/// dependent module sees the frames in their order.
#[test]
fn a_module_of_stacked_frames_reads_clips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.pt");
    // Each of the two frames pooled on its own, side by side: order matters.
    traced_module(&path, &[2, 3, 2, 16, 16], 96, |x| x.adaptive_avg_pool3d([2, 4, 4]).flatten(1, -1), |z| z);
    let config = ModelConfig {
        visual_input: EncoderInput {
            size: vec![16, 16],
            mean: vec![0.5],
            std: vec![0.25],
            stack_frames: 2,
            ..Default::default()
        },
        ..model(&path, EncoderTraining::Frozen, &[])
    };
    let mut learner = Learner::new(&config, &train_config(), Device::Cpu).unwrap();
    let (before, after) = train(&mut learner);
    assert!(moved(&before, &after, "online.known.weight"));
    // Averaging frames instead gives the module [N, 3, H, W], which it refuses at start.
    let averaged =
        ModelConfig { visual_input: EncoderInput { stack_frames: 0, ..config.visual_input.clone() }, ..config.clone() };
    let e = Learner::new(&averaged, &train_config(), Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("failed on a probe input of shape [2, 3, 16, 16]"), "{e}");
}

/// Modules that cannot serve are refused when the model is built, with the reason.
#[test]
fn bad_modules_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let error = |path: &Path, training: EncoderTraining, prefixes: &[&str]| match Learner::new(
        &model(path, training, prefixes),
        &train_config(),
        Device::Cpu,
    ) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    };
    let missing = dir.path().join("missing.pt");
    assert!(error(&missing, EncoderTraining::Frozen, &[]).contains("no such file"));

    let garbage = dir.path().join("garbage.pt");
    std::fs::write(&garbage, b"not a zip archive at all").unwrap();
    let e = error(&garbage, EncoderTraining::Frozen, &[]);
    assert!(e.contains("model.visual_encoder") && e.contains("not a TorchScript module"), "{e}");

    let rank = dir.path().join("rank.pt");
    traced(&rank, |z| z.unsqueeze(-1));
    let e = error(&rank, EncoderTraining::Frozen, &[]);
    assert!(e.contains("returned shape [2, 12, 1]") && e.contains("[N, D]"), "{e}");

    let nan = dir.path().join("nan.pt");
    traced(&nan, |z| z * f64::NAN);
    assert!(error(&nan, EncoderTraining::Frozen, &[]).contains("NaN"));

    // A module that reads 8×8 only (its linear layer sees 3·8·8 values) given 16×16.
    let fixed = dir.path().join("fixed.pt");
    traced_module(&fixed, &[2, 3, 8, 8], 192, |x| x.flatten(1, -1), |z| z);
    let e = error(&fixed, EncoderTraining::Frozen, &[]);
    assert!(e.contains("failed on a probe input of shape [2, 3, 16, 16]"), "{e}");

    let traced_path = dir.path().join("traced.pt");
    traced(&traced_path, |z| z);
    let e = error(&traced_path, EncoderTraining::Full, &[]);
    assert!(e.contains("exposes no parameters"), "{e}");
    let scripted_path = dir.path().join("scripted.pt");
    scripted(&scripted_path);
    let e = error(&scripted_path, EncoderTraining::LastBlock, &["head."]);
    assert!(e.contains("no parameter") && e.contains("block0_weight"), "{e}");
}

/// `export-encoder` writes a checkpoint's visual encoder as TorchScript: loaded frozen, it
/// gives the trained encoder's features for every frame, at any batch size.
#[test]
fn an_exported_encoder_gives_the_trained_features() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig {
        known_classes: vec!["a".into(), "b".into()],
        novel_clusters: NovelClusters::Fixed(2),
        channels: vec![8, 16],
        projection_dim: 8,
        ..Default::default()
    };
    let train = train_config();
    let decode = novelstream::config::DecodeConfig { height: 16, width: 16, ..Default::default() };
    let mut learner = Learner::new(&config, &train, Device::Cpu).unwrap();
    let opts = (Kind::Float, Device::Cpu);
    let frames = |n| Input { frames: Some(Tensor::rand([n, 1, 3, 16, 16], opts)), mel: None };
    for _ in 0..3 {
        learner.step(&frames(4), &Tensor::from_slice(&[0i64, 1, 0, 1]), &frames(4));
    }
    let ckpt = dir.path().join("trained.ckpt");
    checkpoint::save_learner(&ckpt, 3, &learner, &fingerprint(&config, &train, &decode), &Default::default()).unwrap();
    let toml = dir.path().join("config.toml");
    std::fs::write(
        &toml,
        "[decode]\nheight = 16\nwidth = 16\n[model]\nknown_classes = [\"a\", \"b\"]\nnovel_clusters = 2\n\
         channels = [8, 16]\nprojection_dim = 8\n[train]\nbatch_size = 4\nbank_size = 16\n",
    )
    .unwrap();
    let out = dir.path().join("encoder.pt");
    let printed = novelstream(&[
        "export-encoder",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--config",
        toml.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(printed.contains("reads [N, 3, 16, 16]"), "{printed}");

    // The exported features are the trained model's: an assigner on its frozen copy, with the
    // trained heads, decides what the trained model decides, with the same confidence.
    let exported = CModule::load(&out).unwrap();
    let z = exported.forward_ts(&[Tensor::rand([5, 3, 16, 16], opts)]).unwrap();
    assert_eq!(z.size(), [5, 16], "any batch size");
    let frozen = ModelConfig {
        visual_encoder: EncoderSource::TorchScript(out.clone()),
        visual_input: EncoderInput { size: vec![16, 16], ..Default::default() },
        ..config.clone()
    };
    let decode = novelstream::config::DecodeConfig { frames: 2, ..decode };
    let snapshot = learner.snapshot(novelstream::train::Encoder::Online);
    let mut trained = Assigner::untrained(&config, &decode, Device::Cpu).unwrap();
    trained.apply(1, &snapshot, Default::default());
    let mut reloaded = Assigner::untrained(&frozen, &decode, Device::Cpu).unwrap();
    reloaded.apply(1, &snapshot, Default::default());
    let mut seed = 7u32;
    let windows: Vec<Window> = (0..6)
        .map(|i| Window {
            index: i,
            start_ms: 0,
            end_ms: 1000,
            frames: (0..2 * 16 * 16 * 3)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect(),
            audio: Vec::new(),
        })
        .collect();
    let (a, b) = (trained.assign(&windows, None), reloaded.assign(&windows, None));
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.cluster, b.cluster);
        assert!((a.confidence - b.confidence).abs() < 1e-4, "{a:?} {b:?}");
    }
}

/// The daemon serves and trains with a TorchScript encoder in each mode: every window of the
/// streamed clips is published, by a trained model version.
#[test]
fn the_daemon_runs_with_a_torchscript_encoder_in_each_mode() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let clips = dir.path().join("clips");
    std::fs::create_dir(&clips).unwrap();
    make_clip(&clips.join("a.ts"), "testsrc", 4.0, 10, false);
    let (traced_path, scripted_path) = (dir.path().join("traced.pt"), dir.path().join("scripted.pt"));
    assert_eq!(spans(4000, 1000, 500).len(), 7);
    traced(&traced_path, |z| z);
    scripted(&scripted_path);
    let modes = [
        ("frozen", &traced_path, "\"frozen\"", "[]"),
        ("last-block", &scripted_path, "\"last-block\"", "[\"block1\"]"),
        ("full", &scripted_path, "\"full\"", "[]"),
    ];
    for (mode, module, training, prefixes) in modes {
        let (input, output) = (format!("ts-{mode}.segments"), format!("ts-{mode}.assignments"));
        let kafka = broker.with_topics(1, &[&input, &output, "ts.dead", "ts.clusters"]);
        let toml = format!(
            "[kafka]\nbrokers = \"{brokers}\"\ninput_topic = \"{input}\"\noutput_topic = \"{output}\"\n\
             dead_letter_topic = \"ts.dead\"\nclusters_topic = \"ts.clusters\"\ngroup_id = \"ts-{mode}\"\n\
             topic_partitions = 1\ntopic_replication_factor = 1\n[source]\nfile_roots = [\"{roots}\"]\n\
             [decode]\nwindow = \"1s\"\nhop = \"500ms\"\nframes = 2\nheight = 32\nwidth = 32\n\
             [model]\nknown_classes = [\"pattern\"]\nnovel_clusters = 2\ndevice = \"cpu\"\nprojection_dim = 8\n\
             visual_encoder = \"torchscript:{module}\"\nencoder_training = {training}\nfine_tune_prefix = {prefixes}\n\
             [model.visual_input]\nsize = [16, 16]\nmean = [0.5]\nstd = [0.25]\n\
             [online]\nmin_unlabelled = 4\nsnapshot_every = 2\nreplay_size = 4\n[train]\nbatch_size = 4\nbank_size = 16\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n",
            brokers = broker.address,
            roots = clips.display(),
            module = module.display(),
        );
        let config = dir.path().join(format!("{mode}.toml"));
        std::fs::write(&config, toml).unwrap();
        let daemon = Daemon::start(&["run", "--config", config.to_str().unwrap()]);
        let clip = clips.join("a.ts");
        let produce = |stream: &str| {
            let args = ["produce", "--brokers", &broker.address, "--topic", &input, "--stream-id", stream];
            novelstream(&[&args[..], &[clip.to_str().unwrap()]].concat())
        };
        for stream in ["cam-1", "cam-2", "cam-3"] {
            produce(stream);
        }
        // 7 windows a clip. Then one more clip at a time until one is assigned by a trained
        // version (the trainer publishes every 2 steps once 4 unlabelled windows are buffered).
        let mut expect = 21;
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        let trained = loop {
            let records = read_topic(&kafka, &output, expect, Duration::from_secs(60)).unwrap();
            assert_eq!(records.len(), expect, "{mode}: every window published");
            let newest = records
                .iter()
                .map(|r| serde_json::from_slice::<Assignment>(&r.payload).unwrap().model_version)
                .max()
                .unwrap_or(0);
            if newest >= 1 || std::time::Instant::now() > deadline {
                break newest;
            }
            produce(&format!("more-{expect}"));
            expect += 7;
        };
        assert!(daemon.terminate(Duration::from_secs(30)).success(), "{mode}");
        assert!(trained >= 1, "{mode}: no trained version published");
    }
}
