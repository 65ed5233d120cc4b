//! The contenders' command lines that several case families share: the copy line-up (Ember
//! and the peers that copy a raw source today), the qemu-img and `sync` building blocks, and
//! the fio device reference. A family picks its source and destination and calls these, so a
//! peer's command line is written once.

use std::ffi::OsString;
use std::path::Path;

use super::{arg, os, Ctx, Role, Tool};
use crate::units::MIB;

/// `qemu-img convert -f FROM -O TO OPTS... SRC DST`: every qemu-img peer and derived image.
pub fn qemu_img_convert(
    from: &str,
    to: &str,
    opts: &[&str],
    src: &Path,
    dst: &Path,
) -> Vec<OsString> {
    let mut argv: Vec<OsString> = ["qemu-img", "convert", "-f", from, "-O", to]
        .into_iter()
        .chain(opts.iter().copied())
        .map(arg)
        .collect();
    argv.extend([os(src), os(dst)]);
    argv
}

/// `sync PATH`: an fsync of the file or device a peer wrote (for peers that do not flush), so
/// they pay what Ember's fdatasync of its destination costs, no more (`sync -f` would flush the
/// whole file system, other processes' dirty data included) and no less (a loop device's own
/// page cache is flushed too, which a sync of its backing file's file system skips).
pub fn sync_file(path: &Path) -> Vec<OsString> {
    vec![arg("sync"), os(path)]
}

/// What a copy family puts in front of the common line-up.
pub struct CopyLineup<'a> {
    pub src: &'a Path,
    /// Where the tools write (a new file or a device), and what peers that do not flush fsync.
    pub dst: &'a Path,
    /// Logical size of the source (dd's byte count).
    pub logical: u64,
    /// Ember runs beside its defaults: (tool name, flag); each is skipped with a reason while
    /// `ember copy --help` does not list its flag.
    pub ember_variants: &'a [(&'a str, &'a str)],
    /// Why dd is left out of this case, when it is (it reads every logical byte).
    pub dd_skip: Option<String>,
    /// The device reference's (source, destination, bytes): see [`fio_reference`].
    pub reference: (&'a Path, &'a Path, u64),
    /// A fragmented source's layout, (extent, stride): the device reference then moves the
    /// same extents at the same offsets ([`fio_strided_reference`]) instead of a sequential
    /// stream of as many bytes.
    pub strided: Option<(u64, u64)>,
}

/// Ember (defaults, then its variants), the peers that copy a raw source today (Cinder's dd
/// line, cp, qemu-img with and without O_DIRECT, nbdcopy) and the device reference. See
/// bench/README.md.
pub fn copy_tools(ctx: &Ctx, l: &CopyLineup) -> Vec<Tool> {
    let (s, d) = (l.src, l.dst);
    let mut tools = vec![ctx.ember.tool("ember", &["copy"], vec![os(s), os(d)])];
    for (name, flag) in l.ember_variants {
        tools.push(if ctx.ember.has_flag(&["copy"], flag) {
            ctx.ember
                .tool(name, &["copy"], vec![os(s), os(d), arg(*flag)])
        } else {
            Tool::skipped(
                name,
                Role::Ember,
                format!("`ember copy {flag}` does not exist yet"),
            )
        });
    }
    tools.push(match &l.dd_skip {
        Some(why) => Tool::skipped("dd (cinder)", Role::Peer, why.clone()),
        None => Tool::new(
            "dd (cinder)",
            Role::Peer,
            vec![
                vec![
                    arg("dd"),
                    arg(format!("if={}", s.display())),
                    arg(format!("of={}", d.display())),
                    arg("bs=1M"),
                    arg(format!("count={}", l.logical)),
                    arg("iflag=count_bytes,direct"),
                    arg("oflag=direct"),
                    arg("conv=sparse"),
                ],
                sync_file(d),
            ],
        ),
    });
    tools.extend([
        Tool::new(
            "cp --sparse",
            Role::Peer,
            vec![
                vec![arg("cp"), arg("--sparse=always"), os(s), os(d)],
                sync_file(d),
            ],
        ),
        Tool::new(
            "qemu-img -t none",
            Role::Peer,
            vec![qemu_img_convert("raw", "raw", &["-t", "none", "-W"], s, d)],
        ),
        Tool::new(
            "qemu-img buffered",
            Role::Peer,
            vec![qemu_img_convert("raw", "raw", &["-W"], s, d), sync_file(d)],
        ),
        Tool::new(
            "nbdcopy",
            Role::Peer,
            vec![vec![arg("nbdcopy"), os(s), os(d)], sync_file(d)],
        ),
    ]);
    let (read, write, bytes) = l.reference;
    tools.extend(match l.strided {
        Some((extent, stride)) => fio_strided_reference(l.src, write, l.logical, extent, stride),
        None => fio_reference(&[(read, bytes)], &[(write, bytes)]),
    });
    tools
}

/// One fio configuration of the device reference.
struct FioConfig {
    name: &'static str,
    direct: bool,
    ioengine: &'static str,
    bs: u64,
    iodepth: u32,
    /// Buffers in reserved 2 MiB huge pages (`--iomem=shmhuge`), as Ember's sit in transparent
    /// huge pages: a request's buffer in 4 KiB pages has more pieces than a virtio disk takes in
    /// one request (254 segments; a loop device 128), so a 4 MiB request reaches the disk split.
    huge: bool,
}

/// The huge page size fio is told to use (`--hugepage-size`), x86-64's.
const HUGE_PAGE: u64 = 2 * MIB;

/// The configurations whose best is the device reference: O_DIRECT and buffered, a deep queue
/// of 1 MiB, a shallower one of 4 MiB blocks, the plain synchronous loop cp and dd run, and
/// O_DIRECT from huge-page buffers with 64 MiB in flight in 4 MiB (disks) and 1 MiB (loop
/// devices) requests, which the devices then take whole.
const FIO_CONFIGS: [FioConfig; 6] = [
    FioConfig {
        name: "fio direct 1M qd32",
        direct: true,
        ioengine: "io_uring",
        bs: MIB,
        iodepth: 32,
        huge: false,
    },
    FioConfig {
        name: "fio direct 4M qd8",
        direct: true,
        ioengine: "io_uring",
        bs: 4 * MIB,
        iodepth: 8,
        huge: false,
    },
    FioConfig {
        name: "fio buffered 1M qd32",
        direct: false,
        ioengine: "io_uring",
        bs: MIB,
        iodepth: 32,
        huge: false,
    },
    FioConfig {
        name: "fio buffered 1M sync",
        direct: false,
        ioengine: "psync",
        bs: MIB,
        iodepth: 1,
        huge: false,
    },
    FioConfig {
        name: "fio direct 4M qd16 huge pages",
        direct: true,
        ioengine: "io_uring",
        bs: 4 * MIB,
        iodepth: 16,
        huge: true,
    },
    FioConfig {
        name: "fio direct 1M qd64 huge pages",
        direct: true,
        ioengine: "io_uring",
        bs: MIB,
        iodepth: 64,
        huge: true,
    },
];

/// fio's command line up to its jobs: one configuration moving blocks of `bs` bytes.
fn fio_head(c: &FioConfig, bs: u64) -> Vec<OsString> {
    let mut argv = vec![
        arg("fio"),
        arg("--output-format=json"),
        arg(format!("--bs={bs}")),
        arg(format!("--iodepth={}", c.iodepth)),
        arg(format!("--ioengine={}", c.ioengine)),
        arg(format!("--direct={}", u8::from(c.direct))),
    ];
    if c.huge {
        argv.push(arg("--iomem=shmhuge"));
        argv.push(arg(format!("--hugepage-size={HUGE_PAGE}")));
    }
    argv
}

/// The reserved huge pages (bytes) `jobs` fio jobs of configuration `c` need: each job's
/// buffers (`iodepth` blocks) in whole huge pages, and two more for fio's alignment (measured
/// with fio 3.33: a job of 16 x 4 MiB fails with 33 pages and runs with 34).
fn fio_huge_bytes(c: &FioConfig, jobs: usize) -> u64 {
    if !c.huge {
        return 0;
    }
    let per_job = (u64::from(c.iodepth) * c.bs).div_ceil(HUGE_PAGE) * HUGE_PAGE + 2 * HUGE_PAGE;
    per_job * jobs as u64
}

/// A writer job's ending: a new file is first sized with ftruncate, as ember and qemu-img do
/// (without it every write extends the file, which ext4 runs synchronously, one at a time: a
/// slower pattern than any copy tool's), and its data made durable at the end.
fn fio_writer_extras(argv: &mut Vec<OsString>) {
    argv.push(arg("--fallocate=truncate"));
    argv.push(arg("--end_fsync=1"));
}

/// The device reference: what fio moves in the same bytes, in each of [`FIO_CONFIGS`] (one
/// tool each; the report takes the fastest). Every `(file, bytes)` of `reads` gets a reader
/// job and every one of `writes` a writer job, all started together; writers size a new file
/// with ftruncate first and fsync at their end, as every timed tool makes its data durable.
/// Sizes are rounded up to the configuration's block size.
pub fn fio_reference(reads: &[(&Path, u64)], writes: &[(&Path, u64)]) -> Vec<Tool> {
    FIO_CONFIGS
        .iter()
        .map(|c| {
            let size = |n: u64| n.div_ceil(c.bs).max(1) * c.bs;
            let mut argv = fio_head(c, c.bs);
            let mut job = |kind: &str, i: usize, n: usize, (path, bytes): (&Path, u64)| {
                let name = if n == 1 {
                    kind.to_string()
                } else {
                    format!("{kind}{}", i + 1)
                };
                argv.push(arg(format!("--name={name}")));
                argv.push(arg(format!("--filename={}", path.display())));
                argv.push(arg(format!("--rw={kind}")));
                argv.push(arg(format!("--size={}", size(bytes))));
                if kind == "write" {
                    fio_writer_extras(&mut argv);
                }
            };
            for (i, r) in reads.iter().enumerate() {
                job("read", i, reads.len(), *r);
            }
            for (i, w) in writes.iter().enumerate() {
                job("write", i, writes.len(), *w);
            }
            Tool {
                huge_pages: fio_huge_bytes(c, reads.len() + writes.len()),
                ..Tool::new(c.name, Role::Reference, vec![argv])
            }
        })
        .collect()
}

/// The configurations of the strided device reference: O_DIRECT at the default and at a deep
/// queue, buffered on io_uring and the plain synchronous loop. Their blocks are the source's
/// extents, so `bs` is not used.
const FIO_STRIDED_CONFIGS: [FioConfig; 4] = [
    FioConfig {
        name: "fio direct strided qd32",
        direct: true,
        ioengine: "io_uring",
        bs: 0,
        iodepth: 32,
        huge: false,
    },
    FioConfig {
        name: "fio direct strided qd128",
        direct: true,
        ioengine: "io_uring",
        bs: 0,
        iodepth: 128,
        huge: false,
    },
    FioConfig {
        name: "fio buffered strided qd32",
        direct: false,
        ioengine: "io_uring",
        bs: 0,
        iodepth: 32,
        huge: false,
    },
    FioConfig {
        name: "fio buffered strided sync",
        direct: false,
        ioengine: "psync",
        bs: 0,
        iodepth: 1,
        huge: false,
    },
];

/// The device reference of a fragmented copy: fio reads the source's own extents (`extent`
/// bytes at the start of every `stride` of `logical`) and writes as many at the same offsets of
/// a new file (`--rw=read:GAP` / `--rw=write:GAP`, `--io_size` = the data), a reader and a
/// writer job started together, the writer sizing its file with ftruncate and fsyncing at its
/// end: the I/O a copy of that layout cannot avoid, without discovering it.
pub fn fio_strided_reference(
    src: &Path,
    dst: &Path,
    logical: u64,
    extent: u64,
    stride: u64,
) -> Vec<Tool> {
    let gap = stride - extent;
    let data = logical / stride * extent;
    FIO_STRIDED_CONFIGS
        .iter()
        .map(|c| {
            let mut argv = fio_head(c, extent);
            for (kind, path) in [("read", src), ("write", dst)] {
                argv.push(arg(format!("--name={kind}")));
                argv.push(arg(format!("--filename={}", path.display())));
                argv.push(arg(format!("--rw={kind}:{gap}")));
                argv.push(arg(format!("--size={logical}")));
                argv.push(arg(format!("--io_size={data}")));
                if kind == "write" {
                    fio_writer_extras(&mut argv);
                }
            }
            Tool::new(c.name, Role::Reference, vec![argv])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::GIB;

    #[test]
    fn strided_reference_moves_the_extents_at_their_offsets() {
        let tools = fio_strided_reference(Path::new("/s"), Path::new("/d"), 1 << 32, 4096, 65536);
        assert_eq!(tools.len(), 4);
        let argv: Vec<String> = tools[1].jobs[0][0]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "--bs=4096",
            "--iodepth=128",
            "--direct=1",
            "--rw=read:61440",
            "--rw=write:61440",
            "--size=4294967296",
            "--io_size=268435456",
            "--filename=/s",
            "--filename=/d",
            "--fallocate=truncate",
        ] {
            assert!(
                argv.iter().any(|a| a == want),
                "{want} missing from {argv:?}"
            );
        }
    }

    #[test]
    fn qemu_img_convert_argv() {
        let argv = qemu_img_convert(
            "qcow2",
            "raw",
            &["-t", "none", "-W"],
            Path::new("/a/src.qcow2"),
            Path::new("/dev/loop7"),
        );
        let want = [
            "qemu-img",
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "-t",
            "none",
            "-W",
            "/a/src.qcow2",
            "/dev/loop7",
        ];
        assert_eq!(argv, want.map(OsString::from));
        let plain = qemu_img_convert("raw", "qcow2", &[], Path::new("/s"), Path::new("/d"));
        assert_eq!(
            plain,
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "/s", "/d"].map(OsString::from)
        );
    }

    #[test]
    fn reference_configurations_move_the_same_bytes() {
        let tools = fio_reference(
            &[(Path::new("/r"), 3 * MIB + 1)],
            &[(Path::new("/w"), 3 * MIB + 1)],
        );
        assert_eq!(tools.len(), FIO_CONFIGS.len());
        assert!(tools.iter().all(|t| t.role == Role::Reference));
        let line = tools[0].command_line();
        assert!(line.contains("--direct=1") && line.contains("--name=read --filename=/r"));
        assert!(line.contains(&format!("--size={}", 4 * MIB)), "{line}");
        // 4 MiB blocks: rounded up to one block.
        assert!(tools[1]
            .command_line()
            .contains(&format!("--size={}", 4 * MIB)));
        assert!(tools[2].command_line().contains("--direct=0"));
        // Several pairs: numbered jobs, all in one fio run (started together).
        let many = fio_reference(
            &[(Path::new("/r1"), MIB), (Path::new("/r2"), MIB)],
            &[(Path::new("/w1"), MIB), (Path::new("/w2"), MIB)],
        );
        let line = many[0].command_line();
        for job in ["read1", "read2", "write1", "write2"] {
            assert!(line.contains(&format!("--name={job} ")), "{line}");
        }
        // A wipe: writers only.
        let wipe = fio_reference(&[], &[(Path::new("/dev/loop3"), MIB)]);
        assert!(!wipe[0].command_line().contains("--rw=read"));
    }

    #[test]
    fn huge_page_configurations_ask_fio_for_them_and_the_harness_for_enough() {
        let tools = fio_reference(&[(Path::new("/r"), GIB)], &[(Path::new("/w"), GIB)]);
        let huge: Vec<_> = tools.iter().filter(|t| t.huge_pages > 0).collect();
        assert_eq!(huge.len(), 2);
        for t in &tools {
            let line = t.command_line();
            assert_eq!(
                line.contains("--iomem=shmhuge --hugepage-size=2097152"),
                t.huge_pages > 0,
                "{line}"
            );
        }
        // Two jobs of 16 x 4 MiB: 64 MiB each, plus two pages for fio's alignment.
        assert_eq!(huge[0].huge_pages, 2 * (64 + 4) * MIB);
        assert!(huge[0].command_line().contains("--bs=4194304 --iodepth=16"));
        assert!(huge[1].command_line().contains("--bs=1048576 --iodepth=64"));
        // The concurrency case: 8 jobs in one fio.
        let r: Vec<(&Path, u64)> = vec![(Path::new("/r"), GIB); 4];
        let w: Vec<(&Path, u64)> = vec![(Path::new("/w"), GIB); 4];
        let many = fio_reference(&r, &w);
        assert_eq!(many[4].huge_pages, 8 * (64 + 4) * MIB);
    }
}
