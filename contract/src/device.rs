//! Where the runtime computes, as the operator asks for it (`device` in the serve config,
//! `--device` on Jobs): `auto`, `cpu`, `cuda` or `cuda:N`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// CUDA device 0 when there is one (and the binary can use it), else the CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA device N (`cuda` alone is `cuda:0`).
    Cuda(usize),
}

impl DeviceChoice {
    /// The accepted spellings, for error messages and `--help`.
    pub const SPELLINGS: &'static str = "auto, cpu, cuda or cuda:N";
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ordinal = |n: &str| {
            n.parse::<usize>().map_err(|_| {
                format!(
                    "device `{s}`: `{n}` is not a device number (expected {})",
                    Self::SPELLINGS
                )
            })
        };
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => ordinal(n).map(DeviceChoice::Cuda),
                None => Err(format!(
                    "device `{s}`: unknown device (expected {})",
                    Self::SPELLINGS
                )),
            },
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}
