//! Where a workload's process runs: in busyprobe's own mount namespace, in a mount namespace
//! of its own, or in a container-like root. The benchmark names the place on the loop child's
//! command line ([`Place::args`]); the child moves there before it starts timing
//! ([`Place::enter`]).

use std::{ffi::OsString, path::PathBuf};

use anyhow::{Context, Result};

use super::container;

/// Where a workload's process runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// busyprobe's own mount namespace (the benchmark's).
    Home,
    /// A mount namespace of its own, every mount private: a copy of each of busyprobe's
    /// mounts, each with a mount id of its own.
    ChildNamespace,
    /// A mount namespace of its own with an overlay root built from the layout in this
    /// directory (see [`container`]), chrooted into.
    Container(PathBuf),
}

/// `--place` of the loop child.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaceName {
    Home,
    ChildNamespace,
    Container,
}

/// The loop child's options that say where it runs.
#[derive(clap::Args, Debug)]
pub struct PlaceOptions {
    /// Where the workload runs.
    #[arg(long, value_enum, default_value = "home")]
    place: PlaceName,
    /// With `--place container`: the directory holding the container's layers.
    #[arg(long, value_name = "DIR", required_if_eq("place", "container"))]
    container: Option<PathBuf>,
}

impl Place {
    /// The loop child's arguments for this place.
    pub fn args(&self) -> Vec<OsString> {
        match self {
            Self::Home => vec![],
            Self::ChildNamespace => vec!["--place".into(), "child-namespace".into()],
            Self::Container(dir) => vec![
                "--place".into(),
                "container".into(),
                "--container".into(),
                dir.into(),
            ],
        }
    }

    /// The place the loop child's options name.
    pub fn from_options(opts: &PlaceOptions) -> Result<Self> {
        Ok(match opts.place {
            PlaceName::Home => Self::Home,
            PlaceName::ChildNamespace => Self::ChildNamespace,
            PlaceName::Container => {
                Self::Container(opts.container.clone().context("--container is needed")?)
            }
        })
    }

    /// Moves this process there; it must have one thread (`unshare(CLONE_NEWNS)` refuses a
    /// process whose threads share its filesystem context). What it mounts goes with its
    /// namespace when it exits.
    pub fn enter(&self) -> Result<()> {
        match self {
            Self::Home => Ok(()),
            Self::ChildNamespace => crate::bench::enter_private_mount_namespace(),
            Self::Container(dir) => {
                crate::bench::enter_private_mount_namespace()?;
                container::enter(dir)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        place: PlaceOptions,
    }

    fn parsed(args: Vec<OsString>) -> Result<Place, String> {
        let argv = std::iter::once(OsString::from("loop")).chain(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        Place::from_options(&cli.place).map_err(|e| e.to_string())
    }

    #[test]
    fn every_place_survives_the_command_line() {
        for place in [
            Place::Home,
            Place::ChildNamespace,
            Place::Container("/tmp/b.1/container".into()),
        ] {
            assert_eq!(parsed(place.args()).unwrap(), place);
        }
    }

    #[test]
    fn a_container_needs_its_directory() {
        let error = parsed(vec!["--place".into(), "container".into()]).unwrap_err();
        assert!(error.contains("--container"), "{error}");
    }
}
