//! Parsing and validation as a user meets them: whole files, unknown keys, bad values.

use std::time::Duration;

use super::*;

#[test]
fn empty_file_gives_defaults() {
    assert_eq!(Config::parse("").unwrap(), Config::default());
}

#[test]
fn shipped_config_parses() {
    let text = include_str!("../../config/novelstream.toml");
    let config = Config::parse(text).unwrap();
    // The shipped file documents the defaults: parsing it changes nothing.
    assert_eq!(config, Config::default());
}

/// The configs that pin earlier defaults for RESULTS.md's older rows keep parsing, and each
/// differs from today's defaults (else it would pin nothing).
#[test]
fn pinned_result_configs_parse_and_differ_from_the_defaults() {
    for (name, text) in [
        ("before-head-split", include_str!("../../results/configs/before-head-split.toml")),
        ("before-erase", include_str!("../../results/configs/before-erase.toml")),
        ("before-ambiguous-novel", include_str!("../../results/configs/before-ambiguous-novel.toml")),
    ] {
        let config = Config::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_ne!(config.train, Config::default().train, "{name}");
    }
}

/// Secret properties never show in Debug output (what logs would print); `env:` values come
/// from the environment, and a missing variable is a config error naming the key, not a value.
#[test]
fn secrets_are_redacted_and_read_from_the_environment() {
    let text = "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.password\" = \"hunter2\"\n\"sasl.oauthbearer.client.secret\" = \"env:NOVELSTREAM_TEST_SECRET\"\n";
    std::env::set_var("NOVELSTREAM_TEST_SECRET", "s3cr3t-value");
    let config = Config::parse(text).unwrap();
    config.validate().unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("hunter2") && printed.contains("<redacted>") && printed.contains("SASL_SSL"));
    let client = config.kafka.client_config();
    assert_eq!(client.get("sasl.oauthbearer.client.secret"), Some("s3cr3t-value"));
    assert_eq!(client.get("sasl.password"), Some("hunter2"));
    let err = Config::parse("[kafka.properties]\n\"sasl.password\" = \"env:NOVELSTREAM_TEST_UNSET\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("sasl.password") && err.contains("NOVELSTREAM_TEST_UNSET"), "{err}");
}

#[test]
fn unknown_key_names_key_and_line() {
    let err = Config::parse("[decode]\nframes = 4\nframez = 5\n").unwrap_err().to_string();
    assert!(err.contains("framez"), "{err}");
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn durations_are_human() {
    let config = Config::parse("[decode]\nwindow = \"1500ms\"\nhop = \"1s\"\n").unwrap();
    assert_eq!(config.decode.window, Duration::from_millis(1500));
    assert_eq!(config.decode.hop, Duration::from_secs(1));
}

#[test]
fn invalid_values_name_their_key() {
    let err = Config::parse("[decode]\nframes = 0\n").unwrap_err().to_string();
    assert!(err.contains("decode.frames"), "{err}");
    let err = Config::parse("[source]\nallowed_schemes = [\"http\"]\n").unwrap_err().to_string();
    assert!(err.contains("source.allowed_schemes"), "{err}");
    for formats in ["[]", "[\"mp4\", \"no-such-demuxer\"]"] {
        let err = Config::parse(&format!("[decode]\nformats = {formats}\n")).unwrap_err().to_string();
        assert!(err.contains("decode.formats"), "{formats}: {err}");
    }
    assert_eq!(Config::parse("[decode]\nformats = [\"webm\"]\n").unwrap().decode.formats, ["webm"]);
    let scaled = "[online]\nenabled = false\n[pipeline]\nrole = \"train\"\n";
    assert!(Config::parse(scaled).unwrap_err().to_string().contains("pipeline.role"));
    let err = Config::parse("[pipeline]\ntrainer_lease = \"100ms\"\n").unwrap_err().to_string();
    assert!(err.contains("pipeline.trainer_lease"), "{err}");
    let err = Config::parse("[kafka]\nmodels_chunk_bytes = 10\n").unwrap_err().to_string();
    assert!(err.contains("kafka.models_chunk_bytes"), "{err}");
    assert_eq!(Config::parse("[pipeline]\nrole = \"assign\"\n").unwrap().pipeline.role, Role::Assign);
    for (table, line, key) in [
        ("losses", "swap_epsilon = 0.0", "train.losses.swap_epsilon"),
        ("clusters", "every = 0", "train.clusters.every"),
        ("clusters", "min_share = 1.0", "train.clusters.min_share"),
        ("clusters", "head_min_share = -0.1", "train.clusters.head_min_share"),
        ("clusters", "estimate_window = 0", "train.clusters.estimate_window"),
        ("clusters", "estimate_tolerance = -0.01", "train.clusters.estimate_tolerance"),
        ("clusters", "estimate_tolerance = 1.0", "train.clusters.estimate_tolerance"),
        ("losses", "balance_weight = -1.0", "train.losses.swap_weight/balance_weight"),
        ("pseudo", "rank_k = 0", "train.pseudo.rank_k"),
        ("pseudo", "rank_k = 65", "train.pseudo.rank_k"),
        ("pseudo", "wta_window = 65", "train.pseudo.wta_window"),
    ] {
        let err = Config::parse(&format!("[train.{table}]\n{line}\n")).unwrap_err().to_string();
        assert!(err.contains(key), "{line}: {err}");
    }
    for value in ["1.0", "-0.5"] {
        let err = Config::parse(&format!("[train.augment]\nerase = {value}\n")).unwrap_err().to_string();
        assert!(err.contains("train.augment.erase"), "{value}: {err}");
    }
    for (text, key) in [
        ("[model]\nmodality = \"both\"\n[train]\nmodality_dropout = 1.0\n", "train.modality_dropout"),
        ("[train]\nmodality_dropout = 0.5\n", "train.modality_dropout"),
        ("[decode]\naudio_silence_dbfs = 3.0\n", "decode.audio_silence_dbfs"),
        ("[model]\nassign_with = \"audio\"\n", "model.assign_with"),
        ("[online]\nsteps_per_window = -1.0\n", "online.steps_per_window"),
        ("[model]\nknown_recall = 1.0\n", "model.known_recall"),
        ("[model]\nknown_recall = -0.1\n", "model.known_recall"),
        ("[online]\nsteps_per_window = 0.001\n[train]\nbatch_size = 64\n", "online.steps_per_window"),
    ] {
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
    let limited = Config::parse("[online]\nsteps_per_window = 0.01\n[train]\nbatch_size = 64\n").unwrap();
    assert_eq!(limited.online.steps_per_window, 0.01);
    assert_eq!(Config::parse("[model]\nknown_recall = 0.97\n").unwrap().model.known_recall, 0.97);
    let both = Config::parse("[model]\nmodality = \"both\"\n[train]\nmodality_dropout = 0.5\n").unwrap();
    assert_eq!(both.train.modality_dropout, 0.5);
    for (text, assign_with) in [("auto", AssignWith::Auto), ("visual", AssignWith::Visual), ("both", AssignWith::Both)]
    {
        let config = Config::parse(&format!("[model]\nmodality = \"visual\"\nassign_with = \"{text}\"\n")).unwrap();
        assert_eq!((config.model.assign_with, config.model.assigned_modality()), (assign_with, Some(Modality::Visual)));
    }
    let auto = Config::parse("[model]\nmodality = \"both\"\n").unwrap().model;
    assert_eq!(auto.assigned_modality(), None, "labelled windows choose");
    let err = Config::parse("[train.clusters]\npairs = \"sometimes\"\n").unwrap_err().to_string();
    assert!(err.contains("pairs"), "{err}");
    assert_eq!(Config::default().online.publish, PublishedWeights::Momentum);
    let online = Config::parse("[online]\npublish = \"online\"\n").unwrap();
    assert_eq!(online.online.publish, PublishedWeights::Online);
    let err = Config::parse("[online]\npublish = \"latest\"\n").unwrap_err().to_string();
    assert!(err.contains("publish") && err.contains("momentum"), "{err}");
}

/// A `[train]` key of the flat layout before its grouping is an error that names the key,
/// its line, and where it is now.
#[test]
fn moved_train_key_says_where_it_went() {
    let err = Config::parse("[train]\nbatch_size = 8\nwta_threshold = 0.5\n").unwrap_err().to_string();
    assert!(err.contains("unknown field `wta_threshold`") && err.contains("line 3"), "{err}");
    assert!(err.contains("now `wta_threshold` under `[train.pseudo]`"), "{err}");
    let err = Config::parse("[train]\ncluster_pairs = \"off\"\n").unwrap_err().to_string();
    assert!(err.contains("now `pairs` under `[train.clusters]`"), "{err}");
    let err = Config::parse("[train]\nframez = 1\n").unwrap_err().to_string();
    assert!(!err.contains("has moved"), "{err}");
}

/// A TorchScript encoder: `torchscript:PATH` parses, its input preparation is checked (the
/// size it reads is required), `last-block` needs a prefix, and the feature-width check of the
/// pseudo labels waits for the module (it is read from the module at start).
#[test]
fn torchscript_encoders_and_their_input() {
    let scripted = "[model]\nvisual_encoder = \"torchscript:/models/resnet18.pt\"\n";
    let config = Config::parse(&format!(
        "{scripted}encoder_training = \"last-block\"\nfine_tune_prefix = [\"layer4.\"]\n\
         [model.visual_input]\nsize = [224, 224]\nmean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n\
         [train.pseudo]\nwta_window = 200\n"
    ))
    .unwrap();
    assert_eq!(config.model.visual_encoder.torchscript(), Some(std::path::Path::new("/models/resnet18.pt")));
    assert_eq!(config.model.visual_encoder.to_string(), "torchscript:/models/resnet18.pt");
    assert_eq!(config.model.encoder_training, EncoderTraining::LastBlock);
    let clips = format!("[decode]\nframes = 4\n{scripted}[model.visual_input]\nsize = [4, 4]\nstack_frames = 4\n");
    assert_eq!(Config::parse(&clips).unwrap().model.visual_input.stack_frames, 4);
    for (text, key) in [
        (scripted.to_string(), "model.visual_input.size"),
        (format!("{scripted}[model.visual_input]\nsize = [0, 4]\n"), "model.visual_input.size"),
        (format!("{scripted}[model.visual_input]\nsize = [4, 4]\nmean = [0.1, 0.2]\n"), "model.visual_input.mean"),
        (format!("{scripted}[model.visual_input]\nsize = [4, 4]\nstd = [0.0]\n"), "model.visual_input.std"),
        (
            format!("{scripted}encoder_training = \"last-block\"\n[model.visual_input]\nsize = [4, 4]\n"),
            "model.fine_tune_prefix",
        ),
        ("[model]\nmodality = \"audio\"\naudio_encoder = \"torchscript:a.pt\"\n".into(), "model.audio_input.size"),
        (
            "[model]\nmodality = \"audio\"\naudio_encoder = \"torchscript:a.pt\"\n[model.audio_input]\nsize = [4, 4]\ngrayscale = true\n"
                .into(),
            "model.audio_input.grayscale",
        ),
        (
            format!("{scripted}[model.visual_input]\nsize = [4, 4]\ngrayscale = true\nmean = [0.1, 0.2, 0.3]\n"),
            "model.visual_input.mean",
        ),
        (
            format!("[decode]\nframes = 4\n{scripted}[model.visual_input]\nsize = [4, 4]\nstack_frames = 3\n"),
            "model.visual_input.stack_frames",
        ),
    ] {
        let err = Config::parse(&text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
    for bad in ["torchscript:", "resnet"] {
        let err = Config::parse(&format!("[model]\nvisual_encoder = \"{bad}\"\n")).unwrap_err().to_string();
        assert!(err.contains("torchscript:") && err.contains("line 2"), "{bad}: {err}");
    }
    // The built-in encoder keeps its width check.
    let err = Config::parse("[train.pseudo]\nwta_window = 200\n").unwrap_err().to_string();
    assert!(err.contains("train.pseudo.wta_window"), "{err}");
}
