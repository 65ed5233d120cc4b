//! Where a written qcow2's guest clusters went: the output's cluster size and the placement
//! records the body passes (plain on the ring, compressed on worker threads) append and the
//! metadata pass reads back.

/// log2 of [`CLUSTER`] (the header stores it).
pub(super) const CLUSTER_BITS: u32 = 16;
/// Bytes per cluster of the images Ember writes (64 KiB, qemu-img's default).
pub(super) const CLUSTER: u64 = 1 << CLUSTER_BITS;

/// Where a guest cluster's data went.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stored {
    /// Byte offset of the (first) host cluster.
    Plain(u64),
    /// Byte offset and length of the compressed data.
    Compressed(u64, u64),
}

/// `n` consecutive guest clusters from `guest` whose data went to `at`: plain runs are
/// consecutive host clusters too (one entry per run, so memory follows the number of runs,
/// not of clusters); a compressed cluster is an entry of its own.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placed {
    pub guest: u64,
    pub n: u64,
    pub at: Stored,
}

/// Records `n` guest clusters from `guest` stored plainly from host offset `host`, extending
/// the last run when both continue it.
pub(super) fn place_plain(stored: &mut Vec<Placed>, guest: u64, host: u64, n: u64) {
    if let Some(Placed {
        guest: g,
        n: m,
        at: Stored::Plain(h),
    }) = stored.last_mut()
    {
        if *g + *m == guest && *h + *m * CLUSTER == host {
            *m += n;
            return;
        }
    }
    stored.push(Placed {
        guest,
        n,
        at: Stored::Plain(host),
    });
}

/// Every stored guest cluster, ascending, with where its data is.
pub(super) fn each_cluster(stored: &[Placed]) -> impl Iterator<Item = (u64, Stored)> + '_ {
    stored.iter().flat_map(|p| {
        (0..p.n).map(move |i| {
            let at = match p.at {
                Stored::Plain(h) => Stored::Plain(h + i * CLUSTER),
                c => c,
            };
            (p.guest + i, at)
        })
    })
}
