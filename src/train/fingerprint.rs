//! The configuration a learner's saved state depends on, key by key, so that a checkpoint made
//! under another configuration is refused by name instead of half-applied.

use std::collections::BTreeMap;

use crate::config::{DecodeConfig, ModelConfig, TrainConfig};

/// Dotted config key → its value as JSON.
pub type Fingerprint = BTreeMap<String, String>;

/// Model keys a checkpoint does not depend on: where it runs, how it batches, the seed of the
/// initial weights it replaces, which modalities it assigns with.
const NOT_STATE: [&str; 4] = ["device", "max_batch", "seed", "assign_with"];

/// Model keys of TorchScript encoders: part of the state only when an encoder is one (so that
/// checkpoints from before these keys, and of built-in encoders, keep their fingerprint).
const SCRIPT_ONLY: [&str; 6] =
    ["visual_encoder", "audio_encoder", "encoder_training", "fine_tune_prefix", "visual_input", "audio_input"];

/// Every `[model]` key but [`NOT_STATE`] (and [`SCRIPT_ONLY`] without a TorchScript encoder), the decode geometry (what windows a model sees), the
/// memory bank's size, and the length and checksum of a TorchScript encoder's file.
pub fn fingerprint(model_config: &ModelConfig, train: &TrainConfig, decode: &DecodeConfig) -> Fingerprint {
    let mut keys = Fingerprint::new();
    let model = serde_json::to_value(model_config).expect("the model config serializes");
    let scripted =
        [&model_config.visual_encoder, &model_config.audio_encoder].iter().any(|s| s.torchscript().is_some());
    for (key, value) in model.as_object().expect("the model config is a table") {
        if !NOT_STATE.contains(&key.as_str()) && (scripted || !SCRIPT_ONLY.contains(&key.as_str())) {
            keys.insert(format!("model.{key}"), value.to_string());
        }
    }
    let decode = serde_json::to_value(decode).expect("the decode config serializes");
    for key in ["window", "hop", "frames", "height", "width", "sample_rate"] {
        keys.insert(format!("decode.{key}"), decode[key].to_string());
    }
    keys.insert("train.bank_size".into(), train.bank_size.to_string());
    // A TorchScript encoder's file: the heads trained on one backbone mean nothing on another.
    for (key, source) in
        [("model.visual_encoder", &model_config.visual_encoder), ("model.audio_encoder", &model_config.audio_encoder)]
    {
        if let Some(path) = source.torchscript() {
            keys.insert(format!("{key}.file"), crate::model::file_fingerprint(path));
        }
    }
    keys
}

/// The keys whose values differ, as `key: saved → now` (a key only one side has counts).
pub fn changed(saved: &Fingerprint, now: &Fingerprint) -> Vec<String> {
    let absent = "(absent)".to_owned();
    let mut keys: Vec<&String> = saved.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (was, is) = (saved.get(key).unwrap_or(&absent), now.get(key).unwrap_or(&absent));
            (was != is).then(|| format!("{key}: {was} → {is}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_keys_that_changed_and_ignores_where_the_model_runs() {
        let (model, train, decode) = (ModelConfig::default(), TrainConfig::default(), DecodeConfig::default());
        let base = fingerprint(&model, &train, &decode);
        assert!(base.contains_key("model.known_classes") && base.contains_key("decode.height"));
        let elsewhere = ModelConfig { seed: 7, max_batch: 3, ..model.clone() };
        assert!(changed(&base, &fingerprint(&elsewhere, &train, &decode)).is_empty());
        let other = fingerprint(
            &ModelConfig { known_classes: vec!["cat".into()], ..model },
            &TrainConfig { bank_size: 7, ..train },
            &DecodeConfig { height: 32, ..decode },
        );
        let keys = changed(&base, &other);
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(keys.iter().any(|k| k.starts_with("model.known_classes: [] → [\"cat\"]")), "{keys:?}");
        assert!(
            keys.iter().any(|k| k.starts_with("train.bank_size"))
                && keys.iter().any(|k| k.starts_with("decode.height"))
        );
    }
}
