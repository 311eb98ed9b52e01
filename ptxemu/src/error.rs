//! What a failed parse or launch reports: the kernel, the source line (from `.loc`), the block
//! and thread, and what went wrong.

use std::fmt;

pub type Result<T> = std::result::Result<T, EmuError>;

/// Where in a launch a finding happened. `line` is the CUDA source line of the instruction
/// (`.loc`), `ptx_line` its line in the PTX text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Site {
    pub kernel: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub ptx_line: Option<u32>,
    pub block: Option<(u32, u32, u32)>,
    pub thread: Option<(u32, u32, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmuError {
    /// The PTX text could not be parsed (or uses a form the emulator does not know):
    /// `kernel` may be empty when outside any kernel.
    Parse { kernel: String, ptx_line: u32, message: String },
    /// A launch failed: a checker finding, a fault, or a bad launch configuration.
    Launch { site: Site, message: String },
    /// Misuse of the API outside a launch (bad allocation address, copy out of bounds, …).
    Api(String),
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kernel)?;
        match (&self.file, self.line) {
            // NVRTC writes the program's name made absolute against its working directory, a
            // path that need not exist: the file name is what identifies the source.
            (Some(file), Some(line)) => {
                let name = file.rsplit('/').next().unwrap_or(file);
                write!(f, " at {name}:{line}")?
            }
            (None, Some(line)) => write!(f, " at line {line}")?,
            _ => {}
        }
        if let Some(p) = self.ptx_line {
            write!(f, " (ptx line {p})")?;
        }
        if let Some(b) = self.block {
            write!(f, ", block ({}, {}, {})", b.0, b.1, b.2)?;
        }
        if let Some(t) = self.thread {
            write!(f, ", thread ({}, {}, {})", t.0, t.1, t.2)?;
        }
        Ok(())
    }
}

impl fmt::Display for EmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmuError::Parse { kernel, ptx_line, message } if kernel.is_empty() => {
                write!(f, "ptx line {ptx_line}: {message}")
            }
            EmuError::Parse { kernel, ptx_line, message } => write!(f, "{kernel}, ptx line {ptx_line}: {message}"),
            EmuError::Launch { site, message } => write!(f, "{site}: {message}"),
            EmuError::Api(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EmuError {}
