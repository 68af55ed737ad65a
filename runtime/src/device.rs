//! Where a subcommand computes: `--device auto|cpu|cuda[:N]` (and `device:` in the serve config).
//!
//! `auto` means the first CUDA device when this binary was built with the `cuda` feature and the
//! driver shows one, otherwise the CPU. An explicit `cuda` that cannot be honoured is an error at
//! start, never a silent CPU fallback: a pod that asked for a GPU and runs on the CPU would look
//! healthy while serving at a fraction of the speed it pays for.

use candle_core::Device;

pub use hybrid_contract::device::DeviceChoice;

/// Why a device choice cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error(
        "{flag} {choice}: this hybrid-runtime was built without CUDA support (the `cuda` \
         feature); run the -cuda image, or use {flag} cpu"
    )]
    NotBuiltWithCuda { flag: &'static str, choice: String },
    #[error("{flag} {choice}: no CUDA device ({detail}); use {flag} cpu or auto")]
    NoCudaDevice {
        flag: &'static str,
        choice: String,
        detail: String,
    },
}

/// The device a subcommand computes on, with the name it is reported under.
#[derive(Debug, Clone)]
pub struct Placement {
    pub device: Device,
    /// `cpu` or `cuda:N`: the log line at start, the `device` metric label, the serving pod's
    /// loaded-revisions report.
    pub label: String,
}

impl Placement {
    pub fn cpu() -> Self {
        Placement {
            device: Device::Cpu,
            label: "cpu".into(),
        }
    }

    pub fn is_cuda(&self) -> bool {
        self.device.is_cuda()
    }
}

/// Whether this binary was compiled with CUDA support.
pub const fn built_with_cuda() -> bool {
    cfg!(feature = "cuda")
}

/// Resolves a choice to a device. `flag` names where the choice came from (`--device`, `device`
/// in the serve config) so the error points at it.
pub fn select(choice: DeviceChoice, flag: &'static str) -> Result<Placement, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Placement::cpu()),
        DeviceChoice::Auto => Ok(match cuda(0) {
            Ok(p) => p,
            Err(reason) => {
                tracing::debug!("device auto: CPU ({reason})");
                Placement::cpu()
            }
        }),
        DeviceChoice::Cuda(n) => cuda(n).map_err(|detail| match built_with_cuda() {
            false => DeviceError::NotBuiltWithCuda {
                flag,
                choice: choice.to_string(),
            },
            true => DeviceError::NoCudaDevice {
                flag,
                choice: choice.to_string(),
                detail,
            },
        }),
    }
}

/// CUDA device `n`, or why there is none.
fn cuda(n: usize) -> Result<Placement, String> {
    if !built_with_cuda() {
        return Err("built without the `cuda` feature".into());
    }
    Device::new_cuda(n)
        .map(|device| Placement {
            device,
            label: format!("cuda:{n}"),
        })
        // candle appends a backtrace when RUST_BACKTRACE is set; the driver's reason is the
        // first line.
        .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_owned())
}

/// Logs the placement once at start, in the form operators grep for.
pub fn log_placement(subcommand: &str, choice: DeviceChoice, placement: &Placement) {
    tracing::info!(
        "{subcommand}: computing on {} (--device {choice}; this binary {} CUDA)",
        placement.label,
        match built_with_cuda() {
            true => "has",
            false => "lacks",
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print_the_same() {
        for (text, choice) in [
            ("auto", DeviceChoice::Auto),
            ("cpu", DeviceChoice::Cpu),
            ("cuda:0", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>(), Ok(choice));
            assert_eq!(choice.to_string(), text);
        }
        assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
    }

    #[test]
    fn a_wrong_device_is_named_in_the_error() {
        let err = "gpu".parse::<DeviceChoice>().expect_err("an error");
        assert!(err.contains("`gpu`") && err.contains("cuda:N"), "{err}");
        let err = "cuda:x".parse::<DeviceChoice>().expect_err("an error");
        assert!(err.contains("`x` is not a device number"), "{err}");
        let err = serde_json::from_str::<DeviceChoice>("\"metal\"").expect_err("an error");
        assert!(err.to_string().contains("`metal`"), "{err}");
    }

    #[test]
    fn cpu_is_always_available() {
        let p = select(DeviceChoice::Cpu, "--device").expect("a device");
        assert_eq!(p.label, "cpu");
        assert!(!p.is_cuda());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_cuda_feature_auto_is_the_cpu_and_cuda_is_an_error() {
        assert_eq!(
            select(DeviceChoice::Auto, "--device")
                .expect("a device")
                .label,
            "cpu"
        );
        let err = select(DeviceChoice::Cuda(0), "--device").expect_err("an error");
        assert_eq!(
            err,
            DeviceError::NotBuiltWithCuda {
                flag: "--device",
                choice: "cuda:0".into()
            }
        );
        let text = err.to_string();
        assert!(
            text.starts_with("--device cuda:0: this hybrid-runtime was built without CUDA"),
            "{text}"
        );
    }

    /// Runs on a machine with a GPU; elsewhere it says why it checked nothing.
    #[cfg(feature = "cuda")]
    #[test]
    fn with_the_cuda_feature_auto_finds_a_visible_gpu() {
        match candle_core::Device::new_cuda(0) {
            Ok(_) => {
                let p = select(DeviceChoice::Auto, "--device").expect("a device");
                assert_eq!(p.label, "cuda:0");
                assert!(p.is_cuda());
            }
            Err(e) => {
                eprintln!("SKIPPED: no CUDA device visible ({e})");
                let err = select(DeviceChoice::Cuda(0), "--device").expect_err("an error");
                assert!(matches!(err, DeviceError::NoCudaDevice { .. }), "{err}");
                assert_eq!(
                    select(DeviceChoice::Auto, "--device")
                        .expect("a device")
                        .label,
                    "cpu"
                );
            }
        }
    }
}
