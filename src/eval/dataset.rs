//! Labelled image data sets for `eval`: IDX files (MNIST layout) or image folders. An image is
//! a window of one frame, so the model and trainer are the daemon's own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use super::idx::read_idx;
use super::EvalError;
use crate::config::DecodeConfig;
use crate::decode::decode_segment;

/// Images of one split: `[N, 1, C, H, W]` bytes (C = 1 for grey, 3 for RGB) and class indices.
#[derive(Debug)]
pub struct Split {
    pub frames: Tensor,
    pub labels: Vec<usize>,
}

impl Split {
    /// The rows `index` as the model's input: `[B, 1, 3, H, W]` floats in [0, 1] on `device`.
    pub fn batch(&self, index: &Tensor, device: Device) -> Tensor {
        let x = self.frames.index_select(0, &index.to(Device::Cpu)).to(device).to_kind(Kind::Float) / 255.0;
        let size = x.size();
        if size[2] == 1 {
            x.expand([size[0], size[1], 3, size[3], size[4]], false)
        } else {
            x
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Indices of the samples whose class is in `classes`.
    pub fn indices_of(&self, classes: &[usize]) -> Vec<i64> {
        (0..self.len()).filter(|&i| classes.contains(&self.labels[i])).map(|i| i as i64).collect()
    }
}

#[derive(Debug)]
pub struct Dataset {
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    pub train: Split,
    pub test: Split,
}

/// Loads `dir`: IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-…`, plain
/// or `.gz`), or folders `train/<class>/*` and `test/<class>/*` of images, scaled to `size`.
pub fn load(dir: &Path, size: u32) -> Result<Dataset, EvalError> {
    let idx = dir.join("train-images-idx3-ubyte");
    if idx.exists() || idx.with_extension("gz").exists() || dir.join("train-images-idx3-ubyte.gz").exists() {
        load_idx(dir)
    } else if dir.join("train").is_dir() && dir.join("test").is_dir() {
        load_folders(dir, size)
    } else {
        Err(EvalError::Dataset(format!(
            "{} holds neither IDX files (train-images-idx3-ubyte, …) nor train/ and test/ image folders",
            dir.display()
        )))
    }
}

fn load_idx(dir: &Path) -> Result<Dataset, EvalError> {
    let split = |images: &str, labels: &str| -> Result<Split, EvalError> {
        let images = read_idx(&dir.join(images))?;
        let labels = read_idx(&dir.join(labels))?;
        if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
            return Err(EvalError::Dataset(format!(
                "IDX shapes {:?} (images) and {:?} (labels) do not fit together",
                images.dims, labels.dims
            )));
        }
        let (n, h, w) = (images.dims[0] as i64, images.dims[1] as i64, images.dims[2] as i64);
        Ok(Split {
            frames: Tensor::from_slice(&images.data).view([n, 1, 1, h, w]),
            labels: labels.data.iter().map(|&l| l as usize).collect(),
        })
    };
    let train = split("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let test = split("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    let classes = 1 + train.labels.iter().chain(&test.labels).copied().max().unwrap_or(0);
    Ok(Dataset { classes: (0..classes).map(|c| c.to_string()).collect(), train, test })
}

fn load_folders(dir: &Path, size: u32) -> Result<Dataset, EvalError> {
    let mut classes: Vec<String> = std::fs::read_dir(dir.join("train"))
        .map_err(|e| EvalError::Dataset(format!("{}: {e}", dir.join("train").display())))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(EvalError::Dataset(format!("{} has no class folders", dir.join("train").display())));
    }
    let decode = DecodeConfig {
        frames: 1,
        height: size,
        width: size,
        window: Duration::from_secs(1),
        hop: Duration::from_secs(1),
        ..Default::default()
    };
    let split = |name: &str| -> Result<Split, EvalError> {
        let mut bytes = Vec::new();
        let mut labels = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let folder = dir.join(name).join(class);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
                .map_err(|e| EvalError::Dataset(format!("{}: {e}", folder.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for file in files {
                let data = std::fs::read(&file).map_err(|e| EvalError::Dataset(format!("{}: {e}", file.display())))?;
                let windows = decode_segment(data, &decode)
                    .map_err(|e| EvalError::Dataset(format!("{}: {e}", file.display())))?;
                let first = windows
                    .into_iter()
                    .next()
                    .ok_or_else(|| EvalError::Dataset(format!("{}: no image", file.display())))?;
                // Window frames are H×W×3 (interleaved); the model reads planes.
                let image = Tensor::from_slice(&first.frames).view([size as i64, size as i64, 3]).permute([2, 0, 1]);
                bytes.push(image);
                labels.push(label);
            }
        }
        if bytes.is_empty() {
            return Err(EvalError::Dataset(format!("{} has no images", dir.join(name).display())));
        }
        Ok(Split { frames: Tensor::stack(&bytes, 0).unsqueeze(1), labels })
    };
    Ok(Dataset { train: split("train")?, test: split("test")?, classes: classes.clone() })
}
