//! `docker-compose.yml`, `Dockerfile` and `deploy/compose.toml` checked without a Docker engine:
//! the file parses, every service's command exists in the binaries' CLIs with those flags, and
//! brokers, topics and ports agree with the daemon's config.

mod common;

use std::path::Path;
use std::process::Command;

use common::merge_toml;
use novelstream::config::Config;
use serde_yaml::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().map(|s| s.iter().map(|v| v.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

/// `--help` of a binary (and subcommand), which must succeed.
fn help(binary: &Path, subcommand: Option<&str>) -> String {
    let mut cmd = Command::new(binary);
    cmd.args(subcommand).arg("--help");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{} {subcommand:?} --help failed", binary.display());
    String::from_utf8(out.stdout).unwrap()
}

/// The value following `flag` in a command.
fn flag<'a>(command: &'a [String], name: &str) -> &'a str {
    let i = command.iter().position(|a| a == name).unwrap_or_else(|| panic!("{name} missing in {command:?}"));
    &command[i + 1]
}

/// The config of TOML files merged in order, a later file's keys replacing an earlier one's (as
/// scripts/toml_merge.py does for the scripts).
fn merged(files: &[&str]) -> Config {
    let mut table = toml::Table::new();
    for file in files {
        merge_toml(&mut table, std::fs::read_to_string(root().join(file)).unwrap().parse().unwrap());
    }
    Config::parse(&toml::to_string(&table).unwrap()).unwrap()
}

#[test]
fn compose_file_agrees_with_the_cli_and_the_config() {
    let compose: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("docker-compose.yml")).unwrap()).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let config = Config::load(&root().join("deploy/compose.toml")).unwrap();
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let novelstream = Path::new(env!("CARGO_BIN_EXE_novelstream"));
    let consumer = novelstream.parent().unwrap().join("examples/consume_assignments");
    assert!(consumer.exists(), "{} missing: `cargo test` builds the examples", consumer.display());

    // Apache Kafka in KRaft mode, advertising the address the daemon's config uses.
    let kafka = &compose["services"]["kafka"];
    assert!(kafka["image"].as_str().unwrap().starts_with("apache/kafka:"));
    assert!(kafka["environment"]["KAFKA_PROCESS_ROLES"].as_str().unwrap().contains("controller"));
    let advertised = kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"].as_str().unwrap();
    assert_eq!(advertised.trim_start_matches("PLAINTEXT://"), config.kafka.brokers);

    // The daemon's image: a multi-stage build whose runtime gets the compose config.
    assert!(dockerfile.contains(" AS build") && dockerfile.contains(" AS runtime"));
    assert!(dockerfile.contains("COPY deploy/compose.toml /etc/novelstream/novelstream.toml"));
    let cache = dockerfile.lines().find_map(|l| l.trim().strip_prefix("ENV NOVELSTREAM_CACHE=")).unwrap();
    let cache = cache.split_whitespace().next().unwrap();

    let mut checked = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if name == "kafka" {
            continue;
        }
        let command = strings(&service["command"]);
        let entrypoint = strings(&service["entrypoint"]);
        // Every flag of the command is in the help of the binary (and subcommand) it runs.
        let text = match entrypoint.first().map(String::as_str) {
            Some("consume_assignments") => help(&consumer, None),
            None => help(novelstream, Some(&command[0])),
            Some(other) => panic!("{name}: unknown entrypoint {other}"),
        };
        for arg in command.iter().filter(|a| a.starts_with("--")) {
            assert!(text.contains(arg.as_str()), "{name}: `{arg}` is not a flag of its command");
        }
        match name {
            "novelstream-train" | "novelstream-train-gpu" | "novelstream-assign" => {
                assert_eq!(command[0], "run");
                let role = if name.starts_with("novelstream-train") { "train" } else { "assign" };
                assert_eq!(flag(&command, "--role"), role, "{name}");
                assert_eq!(flag(&command, "--config"), "/etc/novelstream/novelstream.toml");
                let port = config.metrics.listen.rsplit(':').next().unwrap();
                let ports = strings(&service["ports"]);
                assert!(ports.iter().all(|p| p.ends_with(&format!(":{port}"))), "{name}: {ports:?} vs {port}");
                // Assigners scale: a fixed host port would collide between replicas.
                assert_eq!(ports.is_empty(), role == "assign", "{name}: {ports:?}");
                let health = strings(&service["healthcheck"]["test"]).join(" ");
                assert!(health.contains(&format!(":{port}/readyz")), "{name}: {health}");
            }
            "producer" | "producer-test" => {
                assert_eq!(flag(&command, "--brokers"), config.kafka.brokers);
                assert_eq!(flag(&command, "--topic"), config.kafka.input_topic);
                assert_eq!(flag(&command, "--manifest"), format!("{cache}/data/av-digits/manifest.json"));
                // `make demo`'s open world: most known-class clips unlabelled; the training
                // clips' new classes in stages, then the test clips once they are all sent.
                let demo = std::fs::read_to_string(root().join("scripts/demo.sh")).unwrap();
                assert!(demo.contains("UNLABELLED_KNOWN:-0.7") && demo.contains("--novel-stages 5,6:7,8:9"));
                assert_eq!(flag(&command, "--unlabelled-known-fraction"), "0.7", "{name}");
                if name == "producer" {
                    assert_eq!(flag(&command, "--split"), "train");
                    assert_eq!(flag(&command, "--novel-stages"), "5,6:7,8:9");
                } else {
                    assert_eq!(flag(&command, "--split"), "test");
                    let after = service["depends_on"]["producer"]["condition"].as_str();
                    assert_eq!(after, Some("service_completed_successfully"));
                }
            }
            "consumer" => {
                assert_eq!(flag(&command, "--brokers"), config.kafka.brokers);
                assert_eq!(flag(&command, "--topic"), config.kafka.output_topic);
            }
            other => panic!("unexpected service {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 6);

    // The daemons run `make demo`'s model configuration (config/av-digits.toml with
    // config/demo.toml over it), so that they accept the starting model the Dockerfile trains
    // with scripts/demo-model.sh.
    let demo = merged(&["config/av-digits.toml", "config/demo.toml"]);
    let fingerprint = |c: &Config| novelstream::train::fingerprint::fingerprint(&c.model, &c.train, &c.decode);
    assert_eq!(fingerprint(&config), fingerprint(&demo));
    let (ours, theirs) = (&config.train.clusters, &demo.train.clusters);
    let estimate =
        |c: &novelstream::config::ClustersConfig| (c.estimate_every, c.estimate_window, c.estimate_tolerance);
    assert_eq!(estimate(ours), estimate(theirs));
    let start = config.checkpoint.start.to_string_lossy().into_owned();
    assert!(start.starts_with(cache) && start.ends_with(".ckpt"), "{start}");
    let trained = dockerfile.lines().find(|l| l.contains("scripts/demo-model.sh --path")).unwrap();
    assert!(trained.contains(&start), "the Dockerfile copies the demo's model to {start}: {trained}");

    // The GPU profile's trainer reserves one NVIDIA device and builds with the CUDA libraries.
    let gpu = &compose["services"]["novelstream-train-gpu"];
    assert_eq!(strings(&gpu["profiles"]), ["gpu"]);
    assert_eq!(gpu["build"]["args"]["TORCH"].as_str(), Some("cuda"));
    let device = &gpu["deploy"]["resources"]["reservations"]["devices"][0];
    assert_eq!(device["driver"].as_str(), Some("nvidia"));
    assert_eq!(strings(&device["capabilities"]), ["gpu"]);
    for name in ["novelstream-train", "novelstream-assign"] {
        assert!(compose["services"][name]["profiles"].is_null(), "{name} runs with plain `up`");
    }
    // The models topic has one partition; the input topic as many as assigners may share it.
    assert!(config.kafka.topic_partitions >= 3, "`--scale novelstream-assign=3` needs 3 input partitions");
}
