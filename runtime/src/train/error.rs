use std::path::PathBuf;

/// Why a training run failed. Each variant has a stable short label (`reason`) that the
/// operator copies into the Adapter's conditions and Events.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot load base model {path}: {detail}")]
    BaseModelUnreadable { path: PathBuf, detail: String },
    #[error("cannot read dataset {path}: {detail}")]
    DatasetUnreadable { path: PathBuf, detail: String },
    #[error("{path}:{line}: malformed example: {detail}")]
    MalformedExample {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error(
        "{path}:{line}: example is {tokens} tokens, longer than max sequence length {max} (pass --skip-overlong to drop such examples)"
    )]
    ExampleTooLong {
        path: PathBuf,
        line: usize,
        tokens: usize,
        max: usize,
    },
    #[error("dataset is empty: {0}")]
    EmptyDataset(String),
    #[error("training diverged: loss is {loss} at step {step}")]
    NonFiniteLoss { step: usize, loss: f64 },
    #[error("training failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("cannot write output {path}: {detail}")]
    Output { path: PathBuf, detail: String },
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// `verify-adapter`: what a trainer image left in its output is not an adapter serving loads.
    #[error("the trainer's output is not a LoRA adapter that serving can load: {0}")]
    InvalidAdapterOutput(String),
    /// `verify-adapter`: the trainer image's optional result file is unreadable.
    #[error("the trainer's result {path} is unreadable: {detail}")]
    InvalidTrainerResult { path: PathBuf, detail: String },
    /// `verify-adapter`: the trainer image wrote a `TrainError` result (and exited 0).
    #[error("the trainer reported {reason}: {message}")]
    TrainerFailed { reason: String, message: String },
}

impl TrainError {
    pub fn reason(&self) -> &'static str {
        match self {
            TrainError::InvalidConfig(_) => "InvalidConfig",
            TrainError::BaseModelUnreadable { .. } => "BaseModelUnreadable",
            TrainError::DatasetUnreadable { .. } => "DatasetUnreadable",
            TrainError::MalformedExample { .. } => "MalformedExample",
            TrainError::ExampleTooLong { .. } => "ExampleTooLong",
            TrainError::EmptyDataset(_) => "EmptyDataset",
            TrainError::NonFiniteLoss { .. } => "NonFiniteLoss",
            TrainError::Compute(_) => "ComputeFailed",
            TrainError::Output { .. } => "OutputFailed",
            TrainError::Device(_) => "DeviceUnavailable",
            TrainError::InvalidAdapterOutput(_) => "InvalidAdapterOutput",
            TrainError::InvalidTrainerResult { .. } => "InvalidTrainerResult",
            TrainError::TrainerFailed { .. } => "TrainerFailed",
        }
    }

    pub fn output(path: impl Into<PathBuf>, detail: impl ToString) -> Self {
        TrainError::Output {
            path: path.into(),
            detail: detail.to_string(),
        }
    }
}
