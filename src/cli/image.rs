//! `ember image inspect|to-volume|from-volume`: safe image inspection and conversion.

use std::path::PathBuf;

use ember_engine::format::convert::{
    image_to_volume, volume_to_image, FromVolumeOptions, ToVolumeOptions,
};
use ember_engine::format::{self, FileSource, Format, InspectOptions, DEFAULT_MAX_VIRTUAL_SIZE};

use super::common::{cancel_flag, human, parse_size, progress_bar, IoArgs};
use super::CliResult;

/// Inspect images and move them to and from volumes, refusing unsafe images.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

impl ImageArgs {
    /// True when the subcommand was asked for JSON.
    pub fn json(&self) -> bool {
        match &self.command {
            ImageCommand::Inspect(a) => a.json,
            ImageCommand::ToVolume(a) => a.io.json,
            ImageCommand::FromVolume(a) => a.io.json,
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Detect an image's format from its content, report sizes and the safety verdict.
    Inspect(InspectArgs),
    /// Write an image's disk contents to a volume (file or block device).
    ToVolume(ToVolumeArgs),
    /// Write a volume (always read as raw) as a raw or qcow2 image.
    FromVolume(FromVolumeArgs),
}

/// A declared image format; `None` = auto-detect.
#[derive(Debug, Clone, Copy)]
pub struct Declared(pub Option<Format>);

/// `auto` or a format name.
fn parse_declared(s: &str) -> Result<Declared, String> {
    Ok(Declared(parse_declared_inner(s)?))
}

fn parse_declared_inner(s: &str) -> Result<Option<Format>, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    let f: Format = s.parse()?;
    match f {
        Format::Raw | Format::Qcow2 | Format::Vmdk | Format::Vhd | Format::Vhdx | Format::Vdi => {
            Ok(Some(f))
        }
        _ => Err(format!(
            "format {f} cannot be declared: use auto, raw, qcow2, vmdk, vhd, vhdx or vdi"
        )),
    }
}

fn parse_out_format(s: &str) -> Result<Format, String> {
    match s.parse::<Format>()? {
        f @ (Format::Raw | Format::Qcow2) => Ok(f),
        f => Err(format!("cannot write {f} images: use raw or qcow2")),
    }
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Image file (or block device) to inspect.
    pub file: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The format the image is declared to be; the content must confirm it.
    #[arg(long = "format", value_parser = parse_declared, default_value = "auto")]
    pub declared: Declared,
    /// Largest virtual size accepted (default 1 PiB).
    #[arg(long, value_parser = parse_size)]
    pub max_virtual_size: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct ToVolumeArgs {
    /// Image file.
    pub image: PathBuf,
    /// Destination file (created if missing) or block device.
    pub dest: PathBuf,
    /// The image's declared format (auto = detect from content; the content must agree).
    #[arg(long = "format", value_parser = parse_declared, default_value = "auto")]
    pub declared: Declared,
    /// Largest virtual size accepted (default 1 PiB).
    #[arg(long, value_parser = parse_size)]
    pub max_virtual_size: Option<u64>,
    #[command(flatten)]
    pub io: IoArgs,
    /// The destination already reads as zeros: do not zero holes.
    #[arg(long)]
    pub dest_zeroed: bool,
    /// Overwrite an existing non-empty regular file.
    #[arg(long)]
    pub force: bool,
    /// Do not fdatasync the destination at the end.
    #[arg(long)]
    pub no_sync: bool,
}

#[derive(clap::Args, Debug)]
pub struct FromVolumeArgs {
    /// Source volume (file or block device), always read as raw.
    pub src: PathBuf,
    /// Output image file (written unnamed, put in place only when complete and flushed).
    pub out: PathBuf,
    /// Output format.
    #[arg(long = "format", value_parser = parse_out_format)]
    pub format: Format,
    /// Deflate-compress clusters (qcow2 only).
    #[arg(long)]
    pub compress: bool,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub io: IoArgs,
}

pub fn run(args: ImageArgs) -> CliResult {
    match args.command {
        ImageCommand::Inspect(a) => inspect(a),
        ImageCommand::ToVolume(a) => to_volume(a),
        ImageCommand::FromVolume(a) => from_volume(a),
    }
}

fn inspect_options(declared: Option<Format>, max: Option<u64>) -> InspectOptions {
    InspectOptions {
        declared,
        max_virtual_size: max.unwrap_or(DEFAULT_MAX_VIRTUAL_SIZE),
    }
}

fn inspect(a: InspectArgs) -> CliResult {
    let src =
        FileSource::open(&a.file).map_err(|e| ember_engine::Error::open("open", &a.file, e))?;
    let r = format::inspect(&src, &inspect_options(a.declared.0, a.max_virtual_size))
        .map_err(|e| e.into_engine(&a.file))?;
    if a.json {
        super::json::print(&r)?;
    } else {
        println!("file:         {}", a.file.display());
        println!("format:       {}", r.format);
        if let Some(s) = &r.subformat {
            println!("subformat:    {s}");
        }
        println!(
            "virtual size: {} ({} bytes)",
            human(r.virtual_size),
            r.virtual_size
        );
        println!(
            "file size:    {} ({} bytes)",
            human(r.file_size),
            r.file_size
        );
        println!(
            "actual size:  {} ({} bytes)",
            human(r.actual_size),
            r.actual_size
        );
        if let Some(c) = r.cluster_size {
            println!("cluster size: {c}");
        }
        if let Some(d) = r.data_size {
            println!("data:         {} ({} bytes)", human(d), d);
        }
        println!("safe:         {}", if r.safe { "yes" } else { "NO" });
    }
    if r.safe {
        Ok(())
    } else {
        Err(ember_engine::Error::BadImage {
            path: a.file,
            reason: format!("unsafe image: {}", r.reasons.join("; ")),
        }
        .into())
    }
}

fn to_volume(a: ToVolumeArgs) -> CliResult {
    let mut copy = a.io.options()?;
    copy.dest_zeroed = a.dest_zeroed;
    copy.force = a.force;
    copy.sync = !a.no_sync;
    copy.cancel = Some(cancel_flag());
    let bar = progress_bar("to-volume", a.io.json);
    copy.progress = bar.as_ref().map(|(_, f)| f.clone());
    let opts = ToVolumeOptions {
        inspect: inspect_options(a.declared.0, a.max_virtual_size),
        copy,
        threads: 0,
    };
    let res = image_to_volume(&a.image, &a.dest, &opts);
    if let Some((b, _)) = bar {
        b.finish_and_clear();
    }
    let s = res?;
    if a.io.json {
        super::json::print(&s)?;
    } else {
        let detail = s
            .copy
            .as_ref()
            .map(|c| {
                format!(
                    ", {} data written, {:.0} MB/s",
                    human(c.bytes_written),
                    c.mb_per_s
                )
            })
            .unwrap_or_default();
        println!(
            "wrote {} image ({} virtual) to {} via {} in {:.3} s{detail}",
            s.format,
            human(s.virtual_size),
            a.dest.display(),
            s.via,
            s.seconds
        );
    }
    Ok(())
}

fn from_volume(a: FromVolumeArgs) -> CliResult {
    let mut copy = a.io.options()?;
    copy.force = a.force;
    copy.cancel = Some(cancel_flag());
    let bar = progress_bar("from-volume", a.io.json);
    copy.progress = bar.as_ref().map(|(_, f)| f.clone());
    let opts = FromVolumeOptions {
        format: Some(a.format),
        compress: a.compress,
        threads: 0,
        copy,
    };
    let res = volume_to_image(&a.src, &a.out, &opts);
    if let Some((b, _)) = bar {
        b.finish_and_clear();
    }
    let s = res?;
    if a.io.json {
        super::json::print(&s)?;
    } else {
        println!(
            "wrote {} ({} image, {} virtual, {} file) in {:.3} s",
            a.out.display(),
            s.format,
            human(s.virtual_size),
            human(s.file_size),
            s.seconds
        );
    }
    Ok(())
}
