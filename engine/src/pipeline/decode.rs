//! Decode workers: compressed units are read, decoded into the slot's buffer, then written like
//! any data block.
//!
//! A decode run ([`run_at`]) is a run of `Decode` ops read with one read and written with one
//! write. Its compressed input is read into the slot's aux buffer; then [`Run::decode_read`]
//! decodes it on the pipeline thread when the job has no decoder threads, else copies the input
//! into a [`DecodeTask`] (the aux buffer goes back to the pool at once) for the threads that
//! [`with_decoders`] starts, at most `cap` tasks at a time (the rest wait in `waiting`, in
//! order). While a slot is at [`Stage::Decode`] no I/O of it is in flight. The main loop
//! collects results with [`Run::wait_decoded`]; a result is copied into the slot's buffer and
//! the slot goes on to [`Run::data_ready`] like a read block. The threads end when the pipeline
//! drops its task sender.

use super::slot::{Item, Stage};
use super::{Job, Run};
use crate::codec;
use crate::error::Error;
use crate::plan::{Codec, Op, Plan};
use std::collections::VecDeque;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// How long the pipeline waits on the ring before looking for finished decodes, while both are
/// pending (a cluster decodes in ~0.1-0.5 ms).
pub(super) const DECODE_POLL: Duration = Duration::from_micros(200);

/// The decode run that starts at `plan.ops[first]` (a `Decode` op): it and the following units
/// that continue the output without a gap, read forward in the source, and keep input and
/// output within one block (the output also within one block-aligned destination block).
/// Err: the run is larger than a block (the reason).
pub(super) fn run_at(plan: &Plan, first: usize, bs: u64) -> Result<Item, String> {
    let Op::Decode {
        src, src_len, dst, ..
    } = plan.ops[first]
    else {
        unreachable!("a decode run starts at a Decode op")
    };
    let (mut span_end, mut dst_end, mut n) = (src, dst, 0);
    let block_end = dst - dst % bs + bs;
    for op in &plan.ops[first..] {
        let Op::Decode {
            src: s,
            src_len: sl,
            dst: d,
            len: l,
            ..
        } = *op
        else {
            break;
        };
        let fits = d == dst_end && s >= span_end && s + sl - src <= bs && d + l <= block_end;
        if n > 0 && !fits {
            break;
        }
        span_end = s + sl;
        dst_end = d + l;
        n += 1;
    }
    let (len, span) = (dst_end - dst, span_end - src);
    if len > bs || span > bs {
        return Err(format!(
            "compressed cluster at {src} ({src_len} bytes -> {len}) is larger than the {bs}-byte block size"
        ));
    }
    Ok(Item::Decode {
        src,
        src_len: span,
        dst,
        len,
        first,
        n,
    })
}

/// One compressed unit of a decode run: its codec, where its input lies in the run's input
/// and where its output goes in the run's output.
#[derive(Debug, Clone, Copy)]
struct Unit {
    codec: Codec,
    src: u64,
    in_off: usize,
    in_len: usize,
    out_off: usize,
    out_len: usize,
    /// The most the stream may decode to ([`Plan::unit`]; 0: the general cap).
    limit: u64,
}

/// The units of a decode run.
fn run_units(plan: &Plan, item: Item) -> Vec<Unit> {
    let Item::Decode {
        src, dst, first, n, ..
    } = item
    else {
        return Vec::new();
    };
    plan.ops[first..first + n]
        .iter()
        .filter_map(|op| match *op {
            Op::Decode {
                src: s,
                src_len,
                dst: d,
                len,
                codec,
            } => Some(Unit {
                codec,
                src: s,
                in_off: (s - src) as usize,
                in_len: src_len as usize,
                out_off: (d - dst) as usize,
                out_len: len as usize,
                limit: plan.unit,
            }),
            _ => None,
        })
        .collect()
}

/// Decodes every unit of a run from `input` into `out`; on failure, the source offset of the
/// unit and the reason.
fn decode_units(
    units: &[Unit],
    input: &[u8],
    out: &mut [u8],
) -> std::result::Result<(), (u64, String)> {
    for u in units {
        codec::decode(
            u.codec,
            &input[u.in_off..u.in_off + u.in_len],
            &mut out[u.out_off..u.out_off + u.out_len],
            u.limit,
        )
        .map_err(|reason| (u.src, reason))?;
    }
    Ok(())
}

/// A compressed unit for a decoder thread. The vectors travel back and forth and are reused.
struct DecodeTask {
    slot: usize,
    units: Vec<Unit>,
    input: Vec<u8>,
    out: Vec<u8>,
}

/// A decoded unit coming back (`out` holds the unit when `res` is Ok).
struct DecodeDone {
    slot: usize,
    input: Vec<u8>,
    out: Vec<u8>,
    res: std::result::Result<(), (u64, String)>,
}

/// The pipeline's side of the decoder threads.
pub(super) struct Decoders {
    tasks: mpsc::Sender<DecodeTask>,
    done: mpsc::Receiver<DecodeDone>,
    /// Tasks sent whose results have not come back.
    pending: usize,
    /// At most this many tasks are out at once (their vectors are memory beside the pool).
    cap: usize,
    /// Slots whose input is read (in their aux buffer), waiting for a task to be sent.
    waiting: VecDeque<usize>,
    /// Vectors to reuse.
    spare: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A decoder thread: decodes tasks until the pipeline hangs up.
fn decoder(tasks: &Mutex<mpsc::Receiver<DecodeTask>>, done: mpsc::Sender<DecodeDone>) {
    loop {
        let next = tasks.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(DecodeTask {
            slot,
            units,
            input,
            mut out,
        }) = next
        else {
            return;
        };
        let res = decode_units(&units, &input, &mut out);
        if done
            .send(DecodeDone {
                slot,
                input,
                out,
                res,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Calls `body` with the job's decoder threads running, or with `None` when the plan has
/// nothing to decode or the job decodes on the pipeline thread.
pub(super) fn with_decoders<R>(job: &Job<'_>, body: impl FnOnce(Option<Decoders>) -> R) -> R {
    let decodes = job.plan.ops.iter().any(|o| matches!(o, Op::Decode { .. }));
    if !decodes || job.decode_threads <= 1 {
        return body(None);
    }
    let (task_tx, task_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let task_rx = Mutex::new(task_rx);
    std::thread::scope(|s| {
        for _ in 0..job.decode_threads {
            let done_tx = done_tx.clone();
            let task_rx = &task_rx;
            s.spawn(move || decoder(task_rx, done_tx));
        }
        drop(done_tx);
        // Returning drops the task sender: the decoder threads end and the scope joins them.
        body(Some(Decoders {
            tasks: task_tx,
            done: done_rx,
            pending: 0,
            // Two runs per thread keep every decoder busy; more would only be memory.
            cap: 2 * job.decode_threads,
            waiting: VecDeque::new(),
            spare: Vec::new(),
        }))
    })
}

impl Run<'_, '_> {
    /// Decode runs handed to the threads whose results have not been taken.
    pub(super) fn decoding(&self) -> usize {
        self.decoders.as_ref().map_or(0, |d| d.pending)
    }

    /// The input of the decode run in `slot` is read: decodes it (on a decoder thread when the
    /// job has them, the ring going on meanwhile) and goes on to write it.
    pub(super) fn decode_read(&mut self, slot: usize) {
        let a = self.slots[slot].as_mut().expect("active slot");
        let item = a.item;
        let Item::Decode { dst, len, .. } = item else {
            unreachable!("only decode runs are decoded")
        };
        if self.decoders.is_some() {
            a.stage = Stage::Decode;
            self.send_decode(slot);
            return;
        }
        let aux = a.aux.take().expect("decode has an aux buffer");
        let units = run_units(self.job.plan, item);
        let (input, out) = self.backend.pool_mut().pair(aux, slot);
        let res = decode_units(&units, input, out);
        self.free.push(aux);
        if let Err(e) = res {
            self.release(slot);
            self.fail_decode(e);
            return;
        }
        self.data_ready(slot, dst, len);
    }

    /// Takes the decodes that finished (waiting up to `block` for the first one when given).
    /// Returns whether any did.
    pub(super) fn wait_decoded(&mut self, block: Option<Duration>) -> bool {
        let Some(dec) = self.decoders.as_mut() else {
            return false;
        };
        let mut got = Vec::new();
        if let Some(t) = block {
            match dec.done.recv_timeout(t) {
                Ok(d) => got.push(d),
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Decoder threads gone with work pending: only a panic does that.
                    dec.pending = 0;
                    self.fail(Error::BadImage {
                        path: self.src_path().to_path_buf(),
                        reason: "the decoder threads stopped".into(),
                    });
                    return false;
                }
            }
        }
        got.extend(dec.done.try_iter());
        let any = !got.is_empty();
        for d in got {
            self.decoded(d);
        }
        any
    }

    /// A decoder thread finished the unit of `d.slot`: write it (or fail).
    fn decoded(&mut self, d: DecodeDone) {
        let DecodeDone {
            slot,
            input,
            out,
            res,
        } = d;
        let (dst, len) = match self.slots[slot].as_ref().map(|a| a.item) {
            Some(Item::Decode { dst, len, .. }) => (dst, len),
            _ => unreachable!("decode result for a slot that is not decoding"),
        };
        if let Some(dec) = self.decoders.as_mut() {
            dec.pending -= 1;
        }
        let res = match res {
            Ok(()) if self.error.is_none() => {
                self.backend.pool_mut().get_mut(slot)[..len as usize].copy_from_slice(&out);
                Ok(())
            }
            other => other,
        };
        if let Some(dec) = self.decoders.as_mut() {
            dec.spare.push((input, out));
        }
        if self.error.is_some() {
            self.release(slot);
            return;
        }
        if let Err(e) = res {
            self.release(slot);
            self.fail_decode(e);
            return;
        }
        self.data_ready(slot, dst, len);
        // A task came back: send the next waiting run.
        if let Some(next) = self.decoders.as_mut().and_then(|d| d.waiting.pop_front()) {
            self.send_decode(next);
        }
    }

    /// Hands the run of `slot` (its input read into the aux buffer) to a decoder thread, or
    /// queues it while `cap` tasks are out.
    fn send_decode(&mut self, slot: usize) {
        let Some(dec) = self.decoders.as_mut() else {
            return;
        };
        if dec.pending >= dec.cap || self.error.is_some() {
            dec.waiting.push_back(slot);
            return;
        }
        let a = self.slots[slot].as_mut().expect("active slot");
        let Item::Decode { src_len, len, .. } = a.item else {
            unreachable!("only decode runs are sent to decoders")
        };
        let units = run_units(self.job.plan, a.item);
        let aux = a.aux.take().expect("decode has an aux buffer");
        let (mut input, mut out) = dec.spare.pop().unwrap_or_default();
        input.clear();
        input.extend_from_slice(&self.backend.pool().get(aux)[..src_len as usize]);
        out.resize(len as usize, 0);
        self.free.push(aux);
        let task = DecodeTask {
            slot,
            units,
            input,
            out,
        };
        if dec.tasks.send(task).is_ok() {
            dec.pending += 1;
        } else {
            self.release(slot);
            self.fail(Error::BadImage {
                path: self.src_path().to_path_buf(),
                reason: "the decoder threads stopped".into(),
            });
        }
    }

    fn fail_decode(&mut self, (src, reason): (u64, String)) {
        self.fail(Error::BadImage {
            path: self.src_path().to_path_buf(),
            reason: format!("compressed cluster at offset {src}: {reason}"),
        });
    }
}
