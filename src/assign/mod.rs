//! Inference: window → known class or novel cluster, with the model version that decided it.

use std::collections::VecDeque;

use tch::{nn, Device, Kind, Tensor};

use crate::config::{DecodeConfig, Modality, ModelConfig};
use crate::decode::Window;
use crate::model::{window_input, EncoderError, JointModel, LogMel, Outputs};
use crate::sink::Kind as AssignmentKind;
use crate::train::checkpoint::RestoreError;
use crate::train::ClusterIds;

/// The verdict on one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub kind: AssignmentKind,
    /// A known class name, or `novel-<k>`.
    pub cluster: String,
    /// The head's softmax probability of that class or cluster.
    pub confidence: f64,
}

/// Holds the current model and assigns windows with it.
pub struct Assigner {
    vars: nn::VarStore,
    model: JointModel,
    device: Device,
    known_classes: Vec<String>,
    decode: DecodeConfig,
    /// What the heads read ([`ModelConfig::assigned_modality`]): the encoder of a modality
    /// left out does not run. With `assign_with = "auto"`, the modality `choice` holds.
    modality: Modality,
    /// `model.assign_with = "auto"` on a model of both modalities: labelled windows choose
    /// between both modalities and the picture alone.
    choice: Option<ModalityChoice>,
    mel: LogMel,
    max_batch: usize,
    version: u64,
    /// Unlabelled windows go to a known class or a novel cluster by the joint head
    /// (`model.open_world`), else always to a novel cluster.
    open_world: bool,
    /// The published id of each novel output (`novel-<id>`), carried across versions by the
    /// trainer so that an id keeps its category when the head's outputs permute.
    ids: ClusterIds,
    /// Open world: how far towards the known classes decisions lean (`model.known_recall`).
    calibration: KnownCalibration,
}

/// Labelled windows whose leads set the margin (`model.known_recall`): at the av-digits
/// stream's pace (a labelled window every 4 s) about the last 8 minutes.
pub const KNOWN_RECALL_WINDOWS: usize = 128;
/// Labelled windows measured before a margin is set.
const KNOWN_RECALL_MIN: usize = 20;

/// The margin of `model.known_recall`: each labelled window's lead of the joint head's best
/// novel cluster over its best known class (a difference of logits) measured as it arrives, and the margin the current version's decisions use, set when a version is applied.
#[derive(Debug, Default)]
struct KnownCalibration {
    recall: f64,
    leads: VecDeque<f32>,
    margin: f32,
}

impl KnownCalibration {
    fn observe(&mut self, lead: f32) {
        if self.recall > 0.0 && !lead.is_nan() {
            self.leads.push_back(lead);
            if self.leads.len() > KNOWN_RECALL_WINDOWS {
                self.leads.pop_front();
            }
        }
    }

    /// The smallest margin (never below 0) under which `recall` of the measured leads fall.
    fn recalibrate(&mut self) {
        if self.leads.len() < KNOWN_RECALL_MIN {
            self.margin = 0.0;
            return;
        }
        let mut leads: Vec<f32> = self.leads.iter().copied().collect();
        leads.sort_by(f32::total_cmp);
        let index = ((self.recall * leads.len() as f64).ceil() as usize).clamp(1, leads.len()) - 1;
        self.margin = leads[index].max(0.0);
    }
}

/// Labelled windows whose decisions choose what decides (`model.assign_with = "auto"`): with
/// one measured in every [`MODALITY_CHOICE_EVERY`], at the av-digits stream's pace (a labelled
/// window every 4 s) about the last 34 minutes.
pub const MODALITY_CHOICE_WINDOWS: usize = 128;
/// Labelled windows measured before the choice leaves both modalities.
const MODALITY_CHOICE_MIN: usize = 20;
/// One labelled window in this many is measured: each costs a second forward pass, from the
/// other choice.
const MODALITY_CHOICE_EVERY: u64 = 4;
/// Once made, the choice changes only when the other choice's lead, over the measured windows
/// exactly one of the two named, is at least this many standard deviations of that count (a
/// sign test): a lead of chance does not flip it back and forth.
const MODALITY_CHOICE_SWITCH_SIGMAS: f64 = 2.0;

/// `model.assign_with = "auto"`: whether each measured labelled window's class was named by
/// the model deciding from both modalities, and by it deciding from the picture alone, as it
/// would have decided the window without its label; and the choice, made again as measured
/// windows arrive (a fixed model's too). Both decide until enough windows are measured; then
/// the picture alone decides unless both named more of them, and from there on the choice
/// changes only when the other one leads by more than chance would
/// ([`MODALITY_CHOICE_SWITCH_SIGMAS`]). Where the audio is unlike
/// the training audio (other languages, another room), it pulls known windows away from their
/// class, and the picture alone decides; where it is like it, both do.
#[derive(Debug)]
struct ModalityChoice {
    /// (both right, picture alone right) per measured window, the newest last.
    measured: VecDeque<(bool, bool)>,
    /// Labelled windows seen, measured or not.
    seen: u64,
    chosen: Modality,
    /// Whether the first choice after [`MODALITY_CHOICE_MIN`] windows has been made.
    settled: bool,
}

impl Default for ModalityChoice {
    fn default() -> Self {
        Self { measured: VecDeque::new(), seen: 0, chosen: Modality::Both, settled: false }
    }
}

impl ModalityChoice {
    /// Whether the next labelled window is one to measure.
    fn measures_next(&mut self) -> bool {
        self.seen += 1;
        (self.seen - 1) % MODALITY_CHOICE_EVERY == 0
    }

    fn observe(&mut self, both_right: bool, picture_right: bool) {
        self.measured.push_back((both_right, picture_right));
        if self.measured.len() > MODALITY_CHOICE_WINDOWS {
            self.measured.pop_front();
        }
    }

    fn rechoose(&mut self) {
        if self.measured.len() < MODALITY_CHOICE_MIN {
            self.chosen = Modality::Both;
            return;
        }
        // Windows both named and the picture did not, and the other way round; those both or
        // neither named say nothing about which is better.
        let both = self.measured.iter().filter(|m| m.0 && !m.1).count() as f64;
        let picture = self.measured.iter().filter(|m| !m.0 && m.1).count() as f64;
        if !self.settled {
            self.settled = true;
            self.chosen = if both > picture { Modality::Both } else { Modality::Visual };
            return;
        }
        let lead = if self.chosen == Modality::Both { picture - both } else { both - picture };
        if lead >= (MODALITY_CHOICE_SWITCH_SIGMAS * (both + picture).sqrt()).max(1.0) {
            self.chosen = self.other();
        }
    }

    /// The other choice, whose decisions a measured window also needs.
    fn other(&self) -> Modality {
        if self.chosen == Modality::Both {
            Modality::Visual
        } else {
            Modality::Both
        }
    }
}

/// How far the best novel logit of the joint head's `row` (its columns from `known` on) leads
/// its best known one: the difference of their log-probabilities. `None` without columns of
/// either kind.
fn novel_lead(row: &[f32], known: usize) -> Option<f32> {
    let best = |cols: &[f32]| cols.iter().copied().reduce(f32::max);
    Some(best(row.get(known..)?)? - best(row.get(..known)?)?)
}

impl Assigner {
    /// A freshly initialised (untrained) model: model version 0; a TorchScript encoder that
    /// cannot serve is an error.
    pub fn untrained(model: &ModelConfig, decode: &DecodeConfig, device: Device) -> Result<Self, EncoderError> {
        tch::manual_seed(model.seed);
        let vars = nn::VarStore::new(device);
        let joint = JointModel::new(&vars.root(), model)?;
        Ok(Self {
            vars,
            model: joint,
            device,
            known_classes: model.known_classes.clone(),
            decode: decode.clone(),
            modality: model.assigned_modality().unwrap_or(Modality::Both),
            choice: model.assigned_modality().is_none().then(ModalityChoice::default),
            mel: LogMel::new(decode.sample_rate),
            max_batch: model.max_batch,
            version: 0,
            open_world: model.open_world && !model.known_classes.is_empty(),
            ids: ClusterIds::default(),
            calibration: KnownCalibration { recall: model.known_recall, ..Default::default() },
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The novel cluster ids the model can give now (`novel-<id>`).
    pub fn novel_clusters(&self) -> Vec<String> {
        self.model.active_outputs().into_iter().map(|k| format!("novel-{}", self.ids.published(k))).collect()
    }

    /// Index of a known class by name.
    pub fn known_index(&self, label: &str) -> Option<i64> {
        self.known_classes.iter().position(|c| c == label).map(|i| i as i64)
    }

    /// Switches to the trainer's weights `snapshot` as model version `version`, publishing its
    /// novel outputs under `ids`. Every variable of the assigner's model must be in the
    /// snapshot (same config, same names).
    pub fn apply(&mut self, version: u64, weights: &[(String, Tensor)], ids: ClusterIds) {
        let _guard = tch::no_grad_guard();
        let mut mine = self.vars.variables();
        for (name, value) in weights {
            if let Some(target) = mine.get_mut(name) {
                target.copy_(&value.to(self.device));
            }
        }
        self.version = version;
        self.ids = ids;
        self.calibration.recalibrate();
    }

    /// What the heads read to decide unlabelled windows: both modalities, or one alone
    /// (`model.assign_with`; with `auto`, what the labelled windows measured so far chose).
    pub fn assigned_modality(&self) -> Modality {
        self.modality
    }

    /// The margin by which a novel cluster must lead the best known class for an unlabelled
    /// window to be called novel (`model.known_recall`; 0 when off or not yet measured).
    pub fn known_margin(&self) -> f32 {
        self.calibration.margin
    }

    /// [`Assigner::apply`] for weights from outside this process (the models topic): every
    /// variable of the model must be among `weights` with its shape, else nothing is applied
    /// and the first that does not fit is named.
    pub fn try_apply(
        &mut self,
        version: u64,
        weights: &[(String, Tensor)],
        ids: ClusterIds,
    ) -> Result<(), RestoreError> {
        let found: std::collections::HashMap<&str, &Tensor> = weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (name, mine) in self.vars.variables() {
            let theirs = found.get(name.as_str()).ok_or_else(|| RestoreError::Missing { name: name.clone() })?;
            RestoreError::check_shape(&name, &mine, theirs)?;
        }
        self.apply(version, weights, ids);
        Ok(())
    }

    /// Assigns every window of one segment. Windows of a labelled segment are `known` as that
    /// class, with the labelled head's probability for it. In the open world, the others go to
    /// the joint head's most likely known class or novel cluster, with its probability; in the
    /// task-aware setting, to the unlabelled head's most likely novel cluster.
    pub fn assign(&mut self, windows: &[Window], label: Option<&str>) -> Vec<Decision> {
        self.assign_segments(&[(windows, label)]).pop().unwrap_or_default()
    }

    /// [`Assigner::assign`] for several segments at once, each with its label: their windows go
    /// through the model together, `model.max_batch` at a time, so that a backlog of short
    /// segments fills the batches a GPU needs. The decisions, one list per segment, are the
    /// ones each segment would get alone. In the open world with `model.known_recall`, each
    /// labelled window's lead is measured for the next version's margin.
    pub fn assign_segments(&mut self, segments: &[(&[Window], Option<&str>)]) -> Vec<Vec<Decision>> {
        let _guard = tch::no_grad_guard();
        let windows: Vec<(&Window, Option<usize>)> = segments
            .iter()
            .flat_map(|&(windows, label)| {
                let class = label.and_then(|l| self.known_classes.iter().position(|c| c == l));
                windows.iter().map(move |w| (w, class))
            })
            .collect();
        let mut decisions = Vec::with_capacity(windows.len());
        for chunk in windows.chunks(self.max_batch) {
            let refs: Vec<&Window> = chunk.iter().map(|&(w, _)| w).collect();
            let input = window_input(&refs, &self.decode, self.modality, &self.mel).to(self.device);
            let out = self.model.forward_t(&input, false);
            self.measure_choice(chunk, &out);
            let labelled =
                out.known_logits.as_ref().filter(|_| chunk.iter().any(|(_, c)| c.is_some())).map(probabilities);
            let calibrating = self.open_world && self.calibration.recall > 0.0 && labelled.is_some();
            // The joint (or novel) head's probabilities, where some window has no labelled
            // decision or labelled windows are measured.
            let open = (calibrating || chunk.iter().any(|&(_, c)| c.is_none() || labelled.is_none())).then(|| {
                let logits = if self.open_world { out.joint_logits() } else { out.novel_logits.shallow_clone() };
                host_rows(&logits)
            });
            for (i, &(_, class)) in chunk.iter().enumerate() {
                if let (true, Some(_), Some(open)) = (calibrating, class, &open) {
                    if let Some(lead) = novel_lead(&open[i], self.known_classes.len()) {
                        self.calibration.observe(lead);
                    }
                }
                decisions.push(match (class, &labelled) {
                    (Some(class), Some(p)) => Decision {
                        kind: AssignmentKind::Known,
                        cluster: self.known_classes[class].clone(),
                        confidence: f64::from(p[i][class]),
                    },
                    _ => self.decide(&open.as_ref().expect("computed for windows without a label")[i], &out.novel_ids),
                });
            }
        }
        let mut decisions = decisions.into_iter();
        segments.iter().map(|(windows, _)| decisions.by_ref().take(windows.len()).collect()).collect()
    }

    /// `model.assign_with = "auto"`: decides some of the chunk's labelled windows
    /// ([`MODALITY_CHOICE_EVERY`]) as if they had no label, from both modalities and from the
    /// picture alone (`out` holds the current choice's outputs; the other choice runs here), and
    /// records which named the window's class. In the task-aware setting, where unlabelled
    /// windows are never known, the labelled head's most likely class is what is checked.
    fn measure_choice(&mut self, chunk: &[(&Window, Option<usize>)], out: &Outputs) {
        let Some(choice) = &mut self.choice else { return };
        let measured: Vec<(usize, usize)> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, &(_, class))| class.and_then(|c| choice.measures_next().then_some((i, c))))
            .collect();
        let other = choice.other();
        if measured.is_empty() || out.known_logits.is_none() {
            return;
        }
        let refs: Vec<&Window> = measured.iter().map(|&(i, _)| chunk[i].0).collect();
        let theirs = self.model.forward_t(&window_input(&refs, &self.decode, other, &self.mel).to(self.device), false);
        let (mine_rows, their_rows) = (self.deciding_rows(out), self.deciding_rows(&theirs));
        let right = |row: &[f32], novel_ids: &[i64], class: usize| {
            if self.open_world {
                let decision = self.decide(row, novel_ids);
                decision.kind == AssignmentKind::Known && decision.cluster == self.known_classes[class]
            } else {
                argmax(row).0 == class
            }
        };
        let results: Vec<(bool, bool)> = measured
            .iter()
            .enumerate()
            .map(|(j, &(i, class))| {
                let mine = right(&mine_rows[i], &out.novel_ids, class);
                let theirs = right(&their_rows[j], &theirs.novel_ids, class);
                if self.modality == Modality::Both {
                    (mine, theirs)
                } else {
                    (theirs, mine)
                }
            })
            .collect();
        let choice = self.choice.as_mut().expect("checked above");
        for (both, picture) in results {
            choice.observe(both, picture);
        }
        choice.rechoose();
        self.modality = choice.chosen;
    }

    /// The logits that decide an unlabelled window, by row: the joint head's in the open world,
    /// else the labelled head's (for [`Assigner::measure_choice`]; a model with known classes).
    fn deciding_rows(&self, out: &Outputs) -> Vec<Vec<f32>> {
        match (&out.known_logits, self.open_world) {
            (Some(_), true) => host_rows(&out.joint_logits()),
            (Some(known), false) => host_rows(known),
            (None, _) => Vec::new(),
        }
    }

    /// The decision for an unlabelled window from its row of logits: in the open world the
    /// known classes' columns come first, then the novel outputs in use (`novel_ids`); a novel
    /// cluster that leads the best known class by no more than the margin
    /// (`model.known_recall`) gives way to that class. The confidence is the softmax
    /// probability of the column decided.
    fn decide(&self, row: &[f32], novel_ids: &[i64]) -> Decision {
        let known = if self.open_world { self.known_classes.len() } else { 0 };
        let mut k = argmax(row).0;
        let margin = self.calibration.margin;
        if k >= known && known > 0 && margin > 0.0 && novel_lead(row, known).is_some_and(|lead| lead <= margin) {
            k = argmax(&row[..known]).0;
        }
        let total: f64 = row.iter().map(|&l| f64::from(l - row[k]).exp()).sum();
        let confidence = 1.0 / total;
        match k.checked_sub(known) {
            None => Decision { kind: AssignmentKind::Known, cluster: self.known_classes[k].clone(), confidence },
            Some(column) => Decision {
                kind: AssignmentKind::Novel,
                cluster: format!("novel-{}", self.ids.published(novel_ids[column])),
                confidence,
            },
        }
    }
}

/// Softmax rows of `[B, C]` logits, on the CPU.
fn probabilities(logits: &Tensor) -> Vec<Vec<f32>> {
    host_rows(&logits.softmax(-1, Kind::Float))
}

/// The rows of a `[B, C]` float tensor, on the CPU.
fn host_rows(x: &Tensor) -> Vec<Vec<f32>> {
    let cols = x.size()[1] as usize;
    let flat: Vec<f32> = Vec::try_from(x.to_kind(Kind::Float).to(Device::Cpu).flatten(0, -1)).expect("rows are f32");
    flat.chunks(cols).map(<[f32]>::to_vec).collect()
}

fn argmax(row: &[f32]) -> (usize, f32) {
    row.iter().copied().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, p)| if p > best.1 { (i, p) } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NovelClusters;

    fn window(decode: &DecodeConfig, fill: u8) -> Window {
        let bytes = decode.frames * (decode.height * decode.width * 3) as usize;
        Window { index: 0, start_ms: 0, end_ms: 1000, frames: vec![fill; bytes], audio: vec![] }
    }

    /// Applies the assigner's own weights with entry `row` of `name` set to `bias`, as the next
    /// model version.
    fn with_bias(assigner: &mut Assigner, name: &str, row: i64, bias: f64) {
        let mut weights: Vec<(String, Tensor)> =
            assigner.vars.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
        for (n, t) in &mut weights {
            if n == name {
                let _ = t.get(row).fill_(bias);
            }
        }
        assigner.apply(assigner.version() + 1, &weights, ClusterIds::default());
    }

    #[test]
    fn untrained_model_assigns_every_window_deterministically() {
        let _rng = crate::rng_lock();
        let decode = DecodeConfig { height: 16, width: 16, frames: 2, ..Default::default() };
        let model = ModelConfig {
            known_classes: vec!["a".into()],
            novel_clusters: NovelClusters::Fixed(3),
            max_batch: 2,
            open_world: false,
            ..Default::default()
        };
        let windows: Vec<Window> = (0..5).map(|i| window(&decode, i * 50)).collect();
        let mut a = Assigner::untrained(&model, &decode, Device::Cpu).unwrap();
        let novel = a.assign(&windows, None);
        assert_eq!(novel.len(), 5);
        for d in &novel {
            assert_eq!(d.kind, AssignmentKind::Novel);
            let k: usize = d.cluster.strip_prefix("novel-").unwrap().parse().unwrap();
            assert!(k < 3);
            assert!(d.confidence >= 1.0 / 3.0 - 1e-6 && d.confidence <= 1.0);
        }
        assert_eq!(
            Assigner::untrained(&model, &decode, Device::Cpu).unwrap().assign(&windows, None),
            novel,
            "same seed, same answers"
        );
        let known = a.assign(&windows, Some("a"));
        assert!(known.iter().all(|d| d.kind == AssignmentKind::Known && d.cluster == "a"));
        assert_eq!(a.version(), 0);
    }

    /// A stream without audio (a camera without a microphone: the decoder's zeros), or with
    /// audio below `decode.audio_silence_dbfs`, is assigned from its picture alone: the same
    /// decisions and confidences whatever the silence, and other ones where audio is heard.
    #[test]
    fn silent_audio_is_assigned_from_the_picture_alone() {
        let _rng = crate::rng_lock();
        let decode = DecodeConfig { height: 16, width: 16, frames: 2, ..Default::default() };
        let model = ModelConfig {
            known_classes: vec!["a".into(), "b".into()],
            novel_clusters: NovelClusters::Fixed(3),
            modality: crate::config::Modality::Both,
            ..Default::default()
        };
        let mut assigner = Assigner::untrained(&model, &decode, Device::Cpu).unwrap();
        let samples = decode.window_samples();
        let noise = |amplitude: f32, seed: u64| -> Vec<f32> {
            let mut rng = crate::rng::SplitMix64::new(seed);
            (0..samples).map(|_| amplitude * rng.uniform(-1.0, 1.0) as f32).collect()
        };
        let with_audio = |audio: &dyn Fn(u8) -> Vec<f32>| -> Vec<Window> {
            (0..4).map(|i| Window { audio: audio(i), ..window(&decode, 40 + i * 50) }).collect()
        };
        let silent = assigner.assign(&with_audio(&|_| vec![0.0; samples]), None);
        let hiss = assigner.assign(&with_audio(&|i| noise(1e-4, u64::from(i))), None);
        let heard = assigner.assign(&with_audio(&|i| noise(0.3, u64::from(i))), None);
        assert_eq!(hiss, silent, "-85 dBFS of hiss is silence");
        assert!(
            heard.iter().zip(&silent).any(|(h, s)| (h.confidence - s.confidence).abs() > 1e-6),
            "{heard:?} {silent:?}"
        );
        // `assign_with = "visual"`: the same weights decide heard windows from the picture
        // alone, as they decide silent ones.
        let picture = ModelConfig { assign_with: crate::config::AssignWith::Visual, ..model };
        let mut picture = Assigner::untrained(&picture, &decode, Device::Cpu).unwrap();
        assert_eq!(picture.assign(&with_audio(&|i| noise(0.3, u64::from(i))), None), silent);
    }

    /// `assign_with = "auto"` (the default): labelled windows, decided as if unlabelled by both
    /// modalities and by the picture alone, choose what decides unlabelled ones. Both decide
    /// until enough are measured; then the picture alone where it named at least as many of
    /// their classes (audio unlike the training audio), both where both named more.
    #[test]
    fn labelled_windows_choose_between_both_modalities_and_the_picture_alone() {
        use crate::config::AssignWith;
        let _rng = crate::rng_lock();
        let decode = DecodeConfig { height: 16, width: 16, frames: 2, ..Default::default() };
        let model = |assign_with| ModelConfig {
            known_classes: vec!["a".into(), "b".into()],
            novel_clusters: NovelClusters::Fixed(3),
            modality: crate::config::Modality::Both,
            assign_with,
            ..Default::default()
        };
        assert_eq!(ModelConfig::default().assign_with, AssignWith::Auto);
        let samples = decode.window_samples();
        let windows: Vec<Window> = (0..(MODALITY_CHOICE_MIN as u64 * MODALITY_CHOICE_EVERY + 8))
            .map(|i| {
                let mut rng = crate::rng::SplitMix64::new(i);
                let frames = (0..decode.frames * 16 * 16 * 3).map(|_| rng.uniform(0.0, 255.0) as u8).collect();
                let audio = (0..samples).map(|_| 0.3 * rng.uniform(-1.0, 1.0) as f32).collect();
                Window { frames, audio, ..window(&decode, 0) }
            })
            .collect();
        // Every window goes to a known class, a or b, by the known head's weights.
        let assigner = |assign_with| {
            let mut assigner = Assigner::untrained(&model(assign_with), &decode, Device::Cpu).unwrap();
            with_bias(&mut assigner, "known.bias", 0, 50.0);
            with_bias(&mut assigner, "known.bias", 1, 50.0);
            assigner
        };
        let names = |decisions: Vec<Decision>| decisions.into_iter().map(|d| d.cluster).collect::<Vec<_>>();
        let by_both = names(assigner(AssignWith::Both).assign(&windows, None));
        let by_picture = names(assigner(AssignWith::Visual).assign(&windows, None));
        assert_ne!(by_both, by_picture, "the audio changes some decisions");
        assert!(by_both.iter().chain(&by_picture).all(|c| c == "a" || c == "b"), "{by_both:?}");

        for (truth, chosen) in [(&by_picture, Modality::Visual), (&by_both, Modality::Both)] {
            let mut auto = assigner(AssignWith::Auto);
            let labelled = |from: usize, to: usize| -> Vec<(&[Window], Option<&str>)> {
                (from..to).map(|i| (&windows[i..=i], Some(truth[i].as_str()))).collect()
            };
            let few = (MODALITY_CHOICE_MIN - 1) * MODALITY_CHOICE_EVERY as usize;
            auto.assign_segments(&labelled(0, few));
            assert_eq!(auto.assigned_modality(), Modality::Both, "too few labelled windows measured");
            assert_eq!(names(auto.assign(&windows, None)), by_both);
            auto.assign_segments(&labelled(few, windows.len()));
            assert_eq!(auto.assigned_modality(), chosen);
            assert_eq!(&names(auto.assign(&windows, None)), truth);
        }
    }

    /// Once made, the choice stays through a lead of chance for the other one and changes on a
    /// clear lead (the sign test over the windows exactly one of the two named).
    #[test]
    fn the_choice_of_modalities_changes_on_a_clear_lead_only() {
        let mut choice = ModalityChoice::default();
        // Measures `n` windows, each named by both (or not) and by the picture (or not).
        let mut measure = |n: usize, both: bool, picture: bool| {
            for _ in 0..n {
                choice.observe(both, picture);
                choice.rechoose();
            }
            choice.chosen
        };
        // 20 windows: the picture named 6 that both missed, both 2 that the picture missed.
        measure(2, true, false);
        measure(6, false, true);
        let first = measure(MODALITY_CHOICE_MIN - 8, true, true);
        assert_eq!(first, Modality::Visual, "the picture led when the choice was first made");
        // Both now name 10 more that the picture missed: a lead of 6 in the 18 windows only one
        // of them named, under 2 × √18 ≈ 8.5, so the picture stays.
        assert_eq!(measure(10, true, false), Modality::Visual, "a lead of 6 in 18 is chance");
        // 3 more: 9 in 21, under 2 × √21 ≈ 9.2; one more: 10 in 22, over 2 × √22 ≈ 9.4.
        assert_eq!(measure(3, true, false), Modality::Visual);
        assert_eq!(measure(1, true, false), Modality::Both, "a clear lead for both");
        // Windows both and neither named move nothing.
        assert_eq!(measure(40, true, true), Modality::Both);
        assert_eq!(measure(40, false, false), Modality::Both);
    }

    /// Segments assigned together (a backlog's batch, batches straddling segments) get the
    /// decisions each would get alone: a label decides its own segment's windows only.
    #[test]
    fn segments_assigned_together_are_decided_as_alone() {
        let _rng = crate::rng_lock();
        let decode = DecodeConfig { height: 16, width: 16, frames: 2, ..Default::default() };
        let model = ModelConfig {
            known_classes: vec!["a".into(), "b".into()],
            novel_clusters: NovelClusters::Fixed(3),
            max_batch: 3,
            ..Default::default()
        };
        let mut assigner = Assigner::untrained(&model, &decode, Device::Cpu).unwrap();
        let windows: Vec<Window> = (0..10).map(|i| window(&decode, i * 25)).collect();
        let segments: Vec<(&[Window], Option<&str>)> = vec![
            (&windows[0..3], None),
            (&windows[3..5], Some("b")),
            (&windows[5..6], Some("z")),
            (&windows[6..10], None),
        ];
        let together = assigner.assign_segments(&segments);
        assert_eq!(together.iter().map(Vec::len).collect::<Vec<_>>(), [3, 2, 1, 4]);
        for ((windows, label), together) in segments.iter().zip(&together) {
            let alone = assigner.assign(windows, *label);
            for (t, a) in together.iter().zip(&alone) {
                assert_eq!((&t.kind, &t.cluster), (&a.kind, &a.cluster));
                assert!((t.confidence - a.confidence).abs() < 1e-5, "{t:?} {a:?}");
            }
        }
        assert!(together[1].iter().all(|d| d.kind == AssignmentKind::Known && d.cluster == "b"));
        let unlabelled = together[0].iter().chain(&together[2]).chain(&together[3]);
        assert!(unlabelled.clone().any(|d| d.cluster != "b"), "the label of one segment decides no other");
        assert_eq!(assigner.assign_segments(&[]), Vec::<Vec<Decision>>::new());
    }

    /// In the open world an unlabelled window goes wherever the joint head puts it: a known
    /// class by name, or a novel output in use, never one that is not.
    #[test]
    fn open_world_decides_between_known_classes_and_novel_clusters() {
        let _rng = crate::rng_lock();
        let decode = DecodeConfig { height: 16, width: 16, frames: 2, ..Default::default() };
        let windows: Vec<Window> = (0..3).map(|i| window(&decode, i * 80)).collect();
        let model = |novel_clusters| ModelConfig {
            known_classes: vec!["a".into(), "b".into()],
            novel_clusters,
            max_novel_clusters: 8,
            ..Default::default()
        };
        let mut assigner = Assigner::untrained(&model(NovelClusters::Fixed(3)), &decode, Device::Cpu).unwrap();
        with_bias(&mut assigner, "known.bias", 1, 100.0);
        let decided = assigner.assign(&windows, None);
        assert!(decided.iter().all(|d| d.kind == AssignmentKind::Known && d.cluster == "b"), "{decided:?}");
        with_bias(&mut assigner, "novel.bias", 2, 200.0);
        assert!(assigner
            .assign(&windows, None)
            .iter()
            .all(|d| d.kind == AssignmentKind::Novel && d.cluster == "novel-2"));
        assert!(assigner.assign(&windows, Some("a")).iter().all(|d| d.cluster == "a"), "a label still decides");

        // The trainer found output 2 holding the windows published as novel-0 before: the same
        // weights now publish them as novel-0, and output 0's new content as a fresh id.
        let mut ids = ClusterIds::default();
        ids.cover(&[0, 1, 2]);
        ids.carry(&[Some(0); 4], &[Some(2); 4], &[0, 1, 2]);
        let weights: Vec<(String, Tensor)> =
            assigner.vars.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
        assigner.apply(2, &weights, ids);
        assert!(assigner.assign(&windows, None).iter().all(|d| d.cluster == "novel-0"));
        assert_eq!(assigner.novel_clusters(), ["novel-3", "novel-1", "novel-0"], "in output order");

        // `auto` starts with one output in use: output 5 is not, whatever its weights.
        let mut auto = Assigner::untrained(&model(NovelClusters::Auto), &decode, Device::Cpu).unwrap();
        with_bias(&mut auto, "novel.bias", 5, 100.0);
        let decided = auto.assign(&windows, None);
        assert!(decided.iter().all(|d| d.cluster != "novel-5"), "{decided:?}");
        with_bias(&mut auto, "novel.bias", 0, 100.0);
        assert!(auto.assign(&windows, None).iter().all(|d| d.cluster == "novel-0"));
    }

    /// `model.known_recall`: labelled windows measure how far the best novel cluster leads the
    /// best known class where the truth is known; from the next version on, an unlabelled
    /// window whose novel cluster leads by no more than that goes to its best known class, and
    /// one that leads by far more stays novel. Off (0), or before enough labelled windows, the
    /// joint head's argmax decides.
    #[test]
    fn known_recall_leans_towards_the_known_classes_by_what_labelled_windows_showed() {
        let _rng = crate::rng_lock();
        let decode = DecodeConfig { height: 16, width: 16, frames: 2, ..Default::default() };
        let windows: Vec<Window> = (0..30).map(|i| window(&decode, i * 8)).collect();
        let unlabelled = &windows[..5];
        let model = |known_recall| ModelConfig {
            known_classes: vec!["a".into(), "b".into()],
            novel_clusters: NovelClusters::Fixed(3),
            known_recall,
            ..Default::default()
        };
        let kinds = |decisions: Vec<Decision>| decisions.into_iter().map(|d| d.cluster).collect::<Vec<_>>();
        for recall in [0.0, 0.9] {
            let mut assigner = Assigner::untrained(&model(recall), &decode, Device::Cpu).unwrap();
            // Novel output 2 leads known class b by about 2 (a difference of logits) everywhere.
            with_bias(&mut assigner, "known.bias", 1, 100.0);
            with_bias(&mut assigner, "novel.bias", 2, 102.0);
            assert_eq!(kinds(assigner.assign(unlabelled, None)), ["novel-2"; 5]);
            assigner.assign(&windows[..KNOWN_RECALL_MIN - 1], Some("a"));
            with_bias(&mut assigner, "novel.bias", 2, 102.0);
            assert_eq!(assigner.known_margin(), 0.0, "too few labelled windows measured");
            assigner.assign(&windows[KNOWN_RECALL_MIN - 1..], Some("a"));
            // Measured, but the margin waits for the next version.
            assert_eq!(kinds(assigner.assign(unlabelled, None)), ["novel-2"; 5]);
            with_bias(&mut assigner, "novel.bias", 2, 102.0);
            if recall == 0.0 {
                assert_eq!(assigner.known_margin(), 0.0);
                assert_eq!(kinds(assigner.assign(unlabelled, None)), ["novel-2"; 5]);
                continue;
            }
            let margin = assigner.known_margin();
            assert!((1.5..2.5).contains(&margin), "{margin}");
            let decided = assigner.assign(unlabelled, None);
            assert!(decided.iter().all(|d| d.kind == AssignmentKind::Known), "{decided:?}");
            assert_eq!(kinds(decided), ["b"; 5]);
            // A novel cluster far ahead of what labelled windows showed stays novel.
            with_bias(&mut assigner, "novel.bias", 2, 110.0);
            assert_eq!(kinds(assigner.assign(unlabelled, None)), ["novel-2"; 5]);
        }
    }
}
