//! `novelstream dataset`: data sets built from the real data `make setup` fetched.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use novelstream::eval::av_digits::{build_av_digits, AvDigitsOptions};

/// The data sets `dataset` builds.
#[derive(Subcommand)]
pub enum DatasetCommand {
    /// Audio-visual digit clips: MNIST digits drifting across the frame while a person says the
    /// digit (Tux Paint recordings), MP4 (H.264 + AAC) plus manifest.json. Test clips use MNIST
    /// test images and speakers (languages) never heard in training.
    AvDigits(AvDigitsArgs),
}

/// Arguments of `dataset av-digits`.
#[derive(Args)]
pub struct AvDigitsArgs {
    /// Folder of MNIST IDX files.
    #[arg(long, default_value = "data/mnist")]
    mnist: PathBuf,
    /// Folder of spoken digits, `<digit>[_<language>].ogg`.
    #[arg(long, default_value = "data/spoken-digits")]
    speech: PathBuf,
    /// Output folder (clips under train/ and test/, plus manifest.json).
    #[arg(long, default_value = "data/av-digits")]
    out: PathBuf,
    /// Seed of every random choice: same seed, same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training clips per digit.
    #[arg(long, default_value_t = 300)]
    train_per_class: usize,
    /// Test clips per digit.
    #[arg(long, default_value_t = 100)]
    test_per_class: usize,
    /// Languages (one speaker each) held out for the test split.
    #[arg(long, default_value_t = 6)]
    test_languages: usize,
    /// Test clips in the training languages instead (new images and draws, the same training
    /// clips): the seen-language test split, for `eval --also-test`.
    #[arg(long)]
    seen_languages: bool,
    /// Side of the square frames, in pixels (even).
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Frames per second of the clips.
    #[arg(long, default_value_t = 10)]
    fps: u32,
    /// Clip length, e.g. `1s` or `1500ms`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    clip: Duration,
}

/// Builds the data set and prints how many clips went where.
pub fn handle(command: DatasetCommand) -> anyhow::Result<()> {
    let DatasetCommand::AvDigits(args) = command;
    let started = Instant::now();
    let options = AvDigitsOptions {
        mnist: args.mnist,
        speech: args.speech,
        out: args.out,
        seed: args.seed,
        train_per_class: args.train_per_class,
        test_per_class: args.test_per_class,
        test_languages: args.test_languages,
        seen_languages: args.seen_languages,
        size: args.size,
        fps: args.fps,
        clip_ms: args.clip.as_millis() as u64,
        progress: super::progress(),
        ..Default::default()
    };
    let manifest = build_av_digits(&options)?;
    let count = |split: &str| manifest.clips.iter().filter(|c| c.split == split).count();
    println!(
        "wrote {} train and {} test clips to {} in {}; test speakers: {}",
        count("train"),
        count("test"),
        options.out.join("manifest.json").display(),
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())),
        manifest.test_languages.join(", ")
    );
    Ok(())
}
